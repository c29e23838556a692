"""Torch datasets over a labels frame and an image folder."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from geomodel.data.images import load_image, verify_image
from geomodel.data.labels import CoordStats
from geomodel.errors import DataError, ImageError


def image_problems(df: pd.DataFrame, images_dir: str | Path) -> dict[int, str]:
    """{position in `df`: "line N: what is wrong"} for every row whose image is missing or unusable.

    Each image is decoded once (`verify_image`), so truncated or corrupt files are found.
    """
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise DataError(f"image folder not found: {images_dir}")
    problems = {}
    for i, (row, name) in enumerate(tqdm(zip(df["row"], df["filename"]), total=len(df), desc="checking images",
                                         leave=False, disable=None)):
        try:
            verify_image(images_dir / name)
        except ImageError as exc:
            problems[i] = f"line {int(row) + 2}: {exc}"
    return problems


def check_images(df: pd.DataFrame, images_dir: str | Path, csv: str | Path = "labels CSV") -> None:
    """Fail before training starts, listing every row whose image is missing or unusable
    (found here rather than hours into training)."""
    problems = list(image_problems(df, images_dir).values())
    if problems:
        shown = "\n  ".join(problems[:10])
        more = f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else ""
        raise DataError(f"{csv}: {len(problems)} image(s) cannot be used (fix or remove them, or list them in "
                        f"--exclude):\n  {shown}{more}")


class GeoDataset(Dataset):
    """Rows of a labels frame as dicts of tensors.

    Item keys: `image` (3, S, S), `region` (0-based true region), `region_in`
    (the region fed to the coordinate model: `pred_Region_ID - 1` when present,
    else the true region), `coords` (normalised lat/lon, when stats are given)
    and `index` (position in the frame).
    """

    def __init__(self, df: pd.DataFrame, images_dir: str | Path, transform: Callable,
                 coord_stats: CoordStats | None = None, region_input: str = "predicted") -> None:
        self.df = df.reset_index(drop=True)
        self.images_dir = Path(images_dir)
        self.transform = transform
        self.regions = torch.tensor(self.df["region"].to_numpy(np.int64)) if "region" in self.df else None
        use_pred = region_input == "predicted" and "pred_Region_ID" in self.df
        self.region_in = (torch.tensor(self.df["pred_Region_ID"].to_numpy(np.int64) - 1) if use_pred
                          else self.regions)
        self.heading = None
        if "angle" in self.df and self.df["angle"].notna().any():
            from geomodel.models.coords import heading_targets

            self.heading = heading_targets(self.df["angle"].to_numpy(np.float64))
        self.coords = None
        if coord_stats is not None:
            z = coord_stats.normalize(self.df[["latitude", "longitude"]].to_numpy(np.float64))
            self.coords = torch.as_tensor(z, dtype=torch.float32)

    def __len__(self) -> int:
        return len(self.df)

    def path(self, i: int) -> Path:
        return self.images_dir / self.df.at[i, "filename"]

    def __getitem__(self, i: int) -> dict:
        item = {"image": self.transform(load_image(self.path(i))), "index": i}
        if self.regions is not None:
            item["region"] = self.regions[i]
            item["region_in"] = self.region_in[i]
        if self.coords is not None:
            item["coords"] = self.coords[i]
        if self.heading is not None:
            item["heading"] = self.heading[i]
        return item
