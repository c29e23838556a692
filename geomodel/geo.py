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


def bearing(lat1: ArrayLike, lon1: ArrayLike, lat2: ArrayLike, lon2: ArrayLike) -> np.ndarray:
    """Initial great-circle bearing from point 1 to point 2, degrees clockwise from north in [0, 360)."""
    lat1, lon1, lat2, lon2 = (np.radians(np.asarray(a, dtype=np.float64)) for a in (lat1, lon1, lat2, lon2))
    y = np.sin(lon2 - lon1) * np.cos(lat2)
    x = np.cos(lat1) * np.sin(lat2) - np.sin(lat1) * np.cos(lat2) * np.cos(lon2 - lon1)
    return np.degrees(np.arctan2(y, x)) % 360.0


# A fixed place for synthetic collections (the campus of the real photos, IIIT Hyderabad).
DEFAULT_ORIGIN = (17.4455, 78.3489)


def planar_to_wgs84(y: ArrayLike, x: ArrayLike, *, origin: tuple[float, float] = DEFAULT_ORIGIN,
                    planar_origin: tuple[float, float] = (0.0, 0.0),
                    metres_per_unit: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Planar ``(y, x)`` (latitude-like north, longitude-like east) to WGS84 ``(lat, lon)`` degrees.

    A local tangent plane: ``planar_origin`` lands on ``origin``, one planar unit is
    ``metres_per_unit`` metres, north stays north. Exact enough (well under a metre) for a few
    kilometres around the origin, which is what a campus is. `wgs84_to_planar` inverts it.
    """
    north = (np.asarray(y, dtype=np.float64) - planar_origin[0]) * metres_per_unit
    east = (np.asarray(x, dtype=np.float64) - planar_origin[1]) * metres_per_unit
    lat = origin[0] + np.degrees(north / EARTH_RADIUS_M)
    lon = origin[1] + np.degrees(east / (EARTH_RADIUS_M * np.cos(np.radians(origin[0]))))
    return lat, lon


def wgs84_to_planar(lat: ArrayLike, lon: ArrayLike, *, origin: tuple[float, float] = DEFAULT_ORIGIN,
                    planar_origin: tuple[float, float] = (0.0, 0.0),
                    metres_per_unit: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """The inverse of `planar_to_wgs84`: WGS84 degrees to planar ``(y, x)``."""
    north = np.radians(np.asarray(lat, dtype=np.float64) - origin[0]) * EARTH_RADIUS_M
    east = np.radians(np.asarray(lon, dtype=np.float64) - origin[1]) * EARTH_RADIUS_M * np.cos(np.radians(origin[0]))
    return planar_origin[0] + north / metres_per_unit, planar_origin[1] + east / metres_per_unit
