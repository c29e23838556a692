"""Distances in the two coordinate frames."""
from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

EARTH_RADIUS_M = 6_371_008.8  # mean Earth radius (IUGG)


def haversine(lat1: ArrayLike, lon1: ArrayLike, lat2: ArrayLike, lon2: ArrayLike) -> np.ndarray:
    """Great-circle distance in metres between points given in degrees (vectorised)."""
    lat1, lon1, lat2, lon2 = (np.radians(np.asarray(a, dtype=np.float64)) for a in (lat1, lon1, lat2, lon2))
    a = np.sin((lat2 - lat1) / 2) ** 2 + np.cos(lat1) * np.cos(lat2) * np.sin((lon2 - lon1) / 2) ** 2
    return 2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))


def euclidean(lat1: ArrayLike, lon1: ArrayLike, lat2: ArrayLike, lon2: ArrayLike) -> np.ndarray:
    """Planar distance in the coordinates' own unit (vectorised)."""
    dlat = np.asarray(lat2, dtype=np.float64) - np.asarray(lat1, dtype=np.float64)
    dlon = np.asarray(lon2, dtype=np.float64) - np.asarray(lon1, dtype=np.float64)
    return np.hypot(dlat, dlon)


def distance(frame: str, lat1: ArrayLike, lon1: ArrayLike, lat2: ArrayLike, lon2: ArrayLike) -> np.ndarray:
    """Distance in the frame's unit: metres for "wgs84", the data's own unit for "planar"."""
    if frame == "wgs84":
        return haversine(lat1, lon1, lat2, lon2)
    if frame == "planar":
        return euclidean(lat1, lon1, lat2, lon2)
    raise ValueError(f"unknown coordinate frame {frame!r}; choose one of: wgs84, planar")
