"""Evaluation metrics: pure functions of arrays, returning plain dicts."""
from __future__ import annotations

from typing import Sequence

import numpy as np
from numpy.typing import ArrayLike

from geomodel.geo import distance

DEFAULT_THRESHOLDS = {"wgs84": (25.0, 50.0, 100.0, 250.0), "planar": (100.0, 250.0, 500.0, 1000.0)}


def region_metrics(true: ArrayLike, pred: ArrayLike, num_regions: int) -> dict:
    """Accuracy, per-region accuracy (None for regions absent from `true`) and confusion matrix.

    Regions are 0-based; confusion[i][j] counts photos of region i predicted as j.
    """
    true = np.asarray(true, dtype=np.int64)
    pred = np.asarray(pred, dtype=np.int64)
    confusion = np.zeros((num_regions, num_regions), dtype=np.int64)
    np.add.at(confusion, (true, pred), 1)
    support = confusion.sum(axis=1)
    per_region = [float(confusion[i, i] / support[i]) if support[i] else None for i in range(num_regions)]
    return {
        "n": int(true.size),
        "region_accuracy": float((true == pred).mean()) if true.size else float("nan"),
        "per_region_accuracy": per_region,
        "confusion": confusion.tolist(),
    }


def coord_metrics(true_latlon: ArrayLike, pred_latlon: ArrayLike, frame: str,
                  thresholds: Sequence[float] | None = None) -> dict:
    """Coordinate errors in dataset units.

    `coord_mse` is the original work's definition: 0.5 * (MSE_lat + MSE_lon) on
    denormalised coordinates. Distances are haversine metres (wgs84) or Euclidean
    data units (planar).
    """
    t = np.asarray(true_latlon, dtype=np.float64).reshape(-1, 2)
    p = np.asarray(pred_latlon, dtype=np.float64).reshape(-1, 2)
    if t.shape != p.shape:
        raise ValueError(f"true and predicted coordinates differ in shape: {t.shape} vs {p.shape}")
    err = distance(frame, t[:, 0], t[:, 1], p[:, 0], p[:, 1])
    thresholds = DEFAULT_THRESHOLDS[frame] if thresholds is None else thresholds
    mse_lat = float(np.mean((p[:, 0] - t[:, 0]) ** 2)) if len(t) else float("nan")
    mse_lon = float(np.mean((p[:, 1] - t[:, 1]) ** 2)) if len(t) else float("nan")
    out = {
        "coord_mse": 0.5 * (mse_lat + mse_lon),
        "mse_lat": mse_lat,
        "mse_lon": mse_lon,
        "mean_error": float(err.mean()) if len(err) else float("nan"),
        "median_error": float(np.median(err)) if len(err) else float("nan"),
        "error_unit": "m" if frame == "wgs84" else "units",
    }
    for th in thresholds:
        out[f"within_{th:g}"] = float((err <= th).mean()) if len(err) else float("nan")
    return out


def per_region_median_error(errors: ArrayLike, regions: ArrayLike, num_regions: int) -> list[float | None]:
    """Median distance error per true region (0-based), None where a region has no photos."""
    errors = np.asarray(errors, dtype=np.float64)
    regions = np.asarray(regions, dtype=np.int64)
    return [float(np.median(errors[regions == r])) if np.any(regions == r) else None
            for r in range(num_regions)]


def angular_error(true_deg: ArrayLike, pred_deg: ArrayLike) -> np.ndarray:
    """Absolute circular difference in degrees, in [0, 180]."""
    d = np.abs(np.asarray(pred_deg, dtype=np.float64) - np.asarray(true_deg, dtype=np.float64)) % 360.0
    return np.minimum(d, 360.0 - d)
