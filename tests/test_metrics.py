"""Metrics and distances: pure functions, checked against known values."""
from __future__ import annotations

import numpy as np
import pytest

from geomodel.geo import distance, euclidean, haversine
from geomodel.metrics import angular_error, coord_metrics, per_region_median_error, region_metrics

# (lat1, lon1, lat2, lon2, great-circle km) — published reference distances.
CITY_PAIRS = [
    ((51.5074, -0.1278), (48.8566, 2.3522), 343.5),  # London - Paris
    ((40.7128, -74.0060), (34.0522, -118.2437), 3935.7),  # New York - Los Angeles
    ((-33.8688, 151.2093), (-37.8136, 144.9631), 713.4),  # Sydney - Melbourne
]


@pytest.mark.parametrize("a,b,km", CITY_PAIRS)
def test_haversine_known_city_pairs(a, b, km) -> None:
    assert haversine(*a, *b) / 1000 == pytest.approx(km, rel=0.005)


def test_haversine_is_vectorised_symmetric_and_zero_on_identity() -> None:
    lat1, lon1 = np.array([p[0][0] for p in CITY_PAIRS]), np.array([p[0][1] for p in CITY_PAIRS])
    lat2, lon2 = np.array([p[1][0] for p in CITY_PAIRS]), np.array([p[1][1] for p in CITY_PAIRS])
    d = haversine(lat1, lon1, lat2, lon2)
    assert d.shape == (3,)
    assert np.allclose(d, haversine(lat2, lon2, lat1, lon1))
    assert np.allclose(haversine(lat1, lon1, lat1, lon1), 0)
    # a quarter of the meridian: pole to equator
    assert haversine(0, 0, 90, 0) == pytest.approx(np.pi / 2 * 6_371_008.8)


def test_planar_distance_and_frames() -> None:
    assert euclidean(0, 0, 3, 4) == pytest.approx(5)
    assert distance("planar", 218000, 140000, 218300, 140400) == pytest.approx(500)
    with pytest.raises(ValueError, match="wgs84, planar"):
        distance("mercator", 0, 0, 1, 1)


def test_coord_mse_is_the_original_definition() -> None:
    true = np.array([[0.0, 0.0], [10.0, 10.0]])
    pred = np.array([[3.0, 4.0], [10.0, 6.0]])
    m = coord_metrics(true, pred, "planar", thresholds=(5.0,))
    mse_lat, mse_lon = (9 + 0) / 2, (16 + 16) / 2
    assert m["coord_mse"] == pytest.approx(0.5 * (mse_lat + mse_lon))
    assert m["mean_error"] == pytest.approx(4.5) and m["median_error"] == pytest.approx(4.5)
    assert m["within_5"] == 1.0 and m["error_unit"] == "units"


def test_region_metrics_accuracy_per_region_and_confusion() -> None:
    m = region_metrics([0, 0, 1, 1, 1], [0, 1, 1, 1, 0], num_regions=3)
    assert m["region_accuracy"] == pytest.approx(3 / 5)
    assert m["per_region_accuracy"] == [0.5, pytest.approx(2 / 3), None]
    assert m["confusion"] == [[1, 1, 0], [1, 2, 0], [0, 0, 0]]


def test_per_region_median_and_angles() -> None:
    assert per_region_median_error([1, 3, 10], [0, 0, 1], 3) == [2.0, 10.0, None]
    assert angular_error([350, 10, 0], [10, 350, 180]).tolist() == [20, 20, 180]
