"""The app's model work, without Gradio: photos in, result rows (see `demo.results`) out.

Everything goes through `geomodel`: images are opened by `load_image` (its errors become the
row's `error`), predictions come from the one `Predictor` the app loaded.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence

from demo.maps import thumbnail_data_uri
from geomodel.collect.exif import exif_gps
from geomodel.data.images import load_image
from geomodel.errors import GeomodelError
from geomodel.geo import distance
from geomodel.predictor import Predictor

CHUNK = 8  # photos decoded at a time: bounds memory for batches of large photos

Progress = Callable[[int, int], None]  # (photos done, photos in all)


class TooManyPhotos(ValueError):
    """More photos in one request than the app accepts."""


def predict_photos(predictor: Predictor, paths: Sequence[str | os.PathLike], *, top_k: int = 3,
                   max_files: int = 32, max_bytes: int | None = None, thumbnails: bool = True,
                   progress: Progress | None = None) -> list[dict]:
    """Predict every photo; one row per path, in order. A bad photo never costs the others.

    Raises `TooManyPhotos` past `max_files`. Files over `max_bytes` are refused unread.
    """
    paths = [Path(p) for p in paths]
    if len(paths) > max_files:
        raise TooManyPhotos(f"{len(paths)} photos were sent; the limit is {max_files} per request. "
                            "Send them in smaller batches.")
    rows: list[dict] = []
    for start in range(0, len(paths), CHUNK):
        rows += _predict_chunk(predictor, paths[start:start + CHUNK], top_k=top_k, max_bytes=max_bytes,
                               thumbnails=thumbnails)
        if progress is not None:
            progress(len(rows), len(paths))
    return rows


def _predict_chunk(predictor: Predictor, paths: list[Path], *, top_k: int, max_bytes: int | None,
                   thumbnails: bool) -> list[dict]:
    rows: list[dict | None] = [None] * len(paths)
    images, where = [], []
    for i, path in enumerate(paths):
        try:
            size = path.stat().st_size
            if max_bytes is not None and size > max_bytes:
                raise GeomodelError(f"the file is {size / 2**20:.1f} MB; this app accepts photos up to "
                                    f"{max_bytes / 2**20:.0f} MB")
            images.append(load_image(path))
            where.append(i)
        except (GeomodelError, OSError) as exc:
            rows[i] = _failed(path, _strip_path(str(exc), path))
    # Every region's probability (the map shades the regions by them); the table keeps the top k.
    preds = predictor.predict(images, top_k=predictor.num_regions) if images else []
    for i, image, pred in zip(where, images, preds):
        probs = [0.0] * predictor.num_regions
        for t in pred["top_k"]:
            probs[t["region_id"] - 1] = t["prob"]
        row = {**pred, "top_k": pred["top_k"][:top_k], "probs": probs, "file": paths[i].name, "gps_latitude": None,
               "gps_longitude": None, "gps_error": None, "thumbnail": thumbnail_data_uri(image) if thumbnails else None}
        gps = exif_gps(paths[i]) if predictor.frame == "wgs84" else None
        if gps is not None:
            row["gps_latitude"], row["gps_longitude"] = gps
            row["gps_error"] = float(distance(predictor.frame, gps[0], gps[1], row["latitude"], row["longitude"]))
        rows[i] = row
    return rows  # type: ignore[return-value]


def _failed(path: Path, reason: str) -> dict:
    """The Predictor's failure row (one shape for both), plus the app's own columns."""
    return {**Predictor._failed(path.name, reason), "probs": None, "gps_latitude": None, "gps_longitude": None,
            "gps_error": None, "thumbnail": None}


def _strip_path(message: str, path: Path) -> str:
    """Messages name the server-side path (an upload folder); the user knows the photo by its name."""
    return message.replace(f"{path}: ", "").replace(str(path), path.name)
