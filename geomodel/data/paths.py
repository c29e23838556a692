"""Image paths named by a labels CSV stay inside the image folder the user gave.

A CSV is data, often from someone else: a row `../../home/me/.ssh/id_rsa` or `/etc/hostname`
must not make training, evaluation or the app's validation set open files elsewhere. Paths
are compared after resolving symlinks, so a link inside the folder that points out of it is
outside too. Users whose folder is deliberately made of links to files elsewhere opt out
(`--allow-outside-images`).

One layout of links is recognised as inside: a folder in a Hugging Face cache snapshot
(`.../datasets--owner--name/snapshots/<commit>/...`, what `hf://` settings resolve to), whose
files are links into the same repository's `blobs/`. There a name must still lie inside the
folder as written (no `..`, not absolute), and its link must end in that repository's `blobs/`.
"""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from geomodel.data.labels import list_rows
from geomodel.errors import DataError

OPT_OUT_FLAG = "--allow-outside-images"


def image_paths(df: pd.DataFrame, images_dir: str | Path, csv: str | Path = "labels CSV", *,
                allow_outside: bool = False) -> list[Path]:
    """`images_dir / filename` for every row, in order, after checking that each one resolves
    (symlinks followed) inside `images_dir`; a DataError names the CSV lines that do not.

    `df` is `read_labels` output (its `row` column gives the CSV line); `allow_outside`
    skips the check.
    """
    images_dir = Path(images_dir)
    paths = [images_dir / str(name) for name in df["filename"]]
    if allow_outside:
        return paths
    root = Path(os.path.realpath(images_dir))
    blobs = _hub_blobs(images_dir)
    written = Path(os.path.abspath(images_dir))

    def inside(path: Path) -> bool:
        real = Path(os.path.realpath(path))
        if real.is_relative_to(root):
            return True
        return blobs is not None and Path(os.path.abspath(path)).is_relative_to(written) and real.is_relative_to(blobs)

    rows = df["row"] if "row" in df else pd.Series(range(len(df)))
    outside = [(int(row), str(name)) for row, name, path in zip(rows, df["filename"], paths) if not inside(path)]
    if outside:
        what = f"image path outside the image folder {images_dir} (e.g. {outside[0][1]!r}, after following links)"
        raise DataError(f"{list_rows(csv, [row for row, _ in outside], what)}; "
                        f"a CSV may only name files inside the folder ({OPT_OUT_FLAG} reads them anyway)")
    return paths


def _hub_blobs(images_dir: Path) -> Path | None:
    """The `blobs/` folder of the Hugging Face cache repository `images_dir` is a snapshot folder of, or None."""
    for parent in Path(os.path.abspath(images_dir)).parents:
        if parent.name == "snapshots":
            blobs = parent.parent / "blobs"
            return Path(os.path.realpath(blobs)) if blobs.is_dir() else None
    return None
