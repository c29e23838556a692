"""Tests for the synthetic campus: geometry, rendering, determinism and region signal."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from geomodel.synthetic import (
    CampusPlan,
    make_campus,
    make_dataset,
    plan_image,
    render_view,
    sample_open_points,
)


@pytest.fixture(scope="module")
def plan() -> CampusPlan:
    return make_campus(n_regions=6, seed=0)


def _read(csv_path: Path) -> list[dict[str, str]]:
    with csv_path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def _pixels(out: Path, rows: list[dict[str, str]]) -> list[np.ndarray]:
    return [np.asarray(Image.open(out / "images" / r["filename"])) for r in rows]


@pytest.mark.parametrize("n", [1, 2, 5, 6, 7, 12])
def test_regions_cover_world_and_centroids_map_home(n: int) -> None:
    p = make_campus(n_regions=n, seed=3)
    assert p.n_regions == n and len(p.region_names) == n and len(set(p.region_names)) == n
    assert p.bounds == ((0.0, 0.0), (1000.0, 1000.0))
    for i, (lat, lon) in enumerate(p.region_centroids):
        assert p.region_of(lat, lon) == i
    grid = np.linspace(0.5, 999.5, 60)
    lat, lon = np.meshgrid(grid, grid)
    assert set(np.unique(p.regions_of(lat, lon))) == set(range(n))
    assert set(np.unique(p.building_region)) == set(range(n))
    assert p.landmark.sum() == n


def test_region_numbering_starts_north_west(plan: CampusPlan) -> None:
    assert plan.region_of(990.0, 10.0) == 0
    assert plan.region_of(10.0, 990.0) == plan.n_regions - 1


def test_buildings_inside_their_region(plan: CampusPlan) -> None:
    b = plan.buildings
    assert np.all(b[:, 0] < b[:, 2]) and np.all(b[:, 1] < b[:, 3])
    centre_lat, centre_lon = (b[:, 1] + b[:, 3]) / 2, (b[:, 0] + b[:, 2]) / 2
    assert np.array_equal(plan.regions_of(centre_lat, centre_lon), plan.building_region)
    assert plan.in_building(centre_lat, centre_lon).all()


def test_campus_seed_changes_layout() -> None:
    a, b = make_campus(seed=0), make_campus(seed=0)
    assert np.array_equal(a.buildings, b.buildings)
    assert not np.array_equal(a.buildings, make_campus(seed=1).buildings)


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError):
        make_campus(n_regions=0)
    with pytest.raises(ValueError):
        make_campus(size=-1.0)


def test_render_view_mode_size_and_heading(plan: CampusPlan) -> None:
    lat, lon = sample_open_points(plan, 1, np.random.default_rng(0))[0]
    img = render_view(plan, lat, lon, 30.0, size=48)
    assert img.mode == "RGB" and img.size == (48, 48)
    same = render_view(plan, lat, lon, 30.0, size=48)
    assert np.array_equal(np.asarray(img), np.asarray(same))
    turned = render_view(plan, lat, lon, 210.0, size=48)
    assert not np.array_equal(np.asarray(img), np.asarray(turned))


def test_render_200_views(plan: CampusPlan) -> None:
    rng = np.random.default_rng(5)
    points = sample_open_points(plan, 200, rng)
    views = [np.asarray(render_view(plan, la, lo, h)) for (la, lo), h in
             zip(points, rng.uniform(0, 360, 200))]
    assert all(v.shape == (64, 64, 3) and v.dtype == np.uint8 for v in views)
    assert len({v.tobytes() for v in views}) == 200


def test_sampled_points_are_open(plan: CampusPlan) -> None:
    points = sample_open_points(plan, 500, np.random.default_rng(1))
    assert points.shape == (500, 2)
    assert not plan.in_building(points[:, 0], points[:, 1]).any()
    assert points.min() > 0 and points.max() < plan.size


def test_plan_image_extent(plan: CampusPlan) -> None:
    px = 256
    img = plan_image(plan, px=px)
    assert img.mode == "RGB" and img.size == (px, px)
    arr = np.asarray(img).astype(int)
    labels = np.array(plan.region_centroids) / plan.size * px
    for k in np.flatnonzero(~plan.landmark):
        x0, y0, x1, y1 = plan.buildings[k]
        lat, lon = (y0 + y1) / 2, (x0 + x1) / 2
        col, row = int(lon / plan.size * px), int((1 - lat / plan.size) * px)  # north at top
        if np.min(np.hypot(labels[:, 0] - lat / plan.size * px,
                           labels[:, 1] - lon / plan.size * px)) < 12:
            continue  # a region number may be drawn here
        want = np.round(plan.wall_colour[plan.building_region[k]] * 0.85 * 255)
        assert np.abs(arr[row, col] - want).max() <= 1


def test_make_dataset_files_and_labels(plan: CampusPlan, tmp_path: Path) -> None:
    csv_path = make_dataset(plan, tmp_path, n_images=12, image_size=32, seed=4)
    assert csv_path == tmp_path / "labels.csv"
    assert csv_path.read_text().splitlines()[0] == "filename,latitude,longitude,angle,Region_ID"
    rows = _read(csv_path)
    assert len(rows) == 12
    for r in rows:
        lat, lon, ang, rid = float(r["latitude"]), float(r["longitude"]), float(r["angle"]), \
            int(r["Region_ID"])
        assert 1 <= rid <= plan.n_regions and rid == plan.region_of(lat, lon) + 1
        assert 0.0 <= ang < 360.0
        assert not plan.in_building(lat, lon)
        with Image.open(tmp_path / "images" / r["filename"]) as im:
            assert im.mode == "RGB" and im.size == (32, 32)
    meta = json.loads((tmp_path / "plan.json").read_text())
    assert meta["bounds"] == [[0.0, 0.0], [1000.0, 1000.0]]
    assert meta["region_names"] == plan.region_names and meta["frame"] == "planar"
    assert Image.open(tmp_path / "plan.png").size == (512, 512)


def test_make_dataset_deterministic(plan: CampusPlan, tmp_path: Path) -> None:
    a = make_dataset(plan, tmp_path / "a", n_images=6, image_size=32, seed=7)
    b = make_dataset(plan, tmp_path / "b", n_images=6, image_size=32, seed=7)
    c = make_dataset(plan, tmp_path / "c", n_images=6, image_size=32, seed=8)
    assert a.read_bytes() == b.read_bytes() and a.read_bytes() != c.read_bytes()
    pa, pb = _pixels(a.parent, _read(a)), _pixels(b.parent, _read(b))
    assert all(np.array_equal(x, y) for x, y in zip(pa, pb))
    pc = _pixels(c.parent, _read(c))
    assert not all(np.array_equal(x, y) for x, y in zip(pa, pc))


def test_make_dataset_jpeg(plan: CampusPlan, tmp_path: Path) -> None:
    rows = _read(make_dataset(plan, tmp_path, 2, image_size=32, image_format="jpg"))
    assert all(r["filename"].endswith(".jpg") for r in rows)
    with pytest.raises(ValueError):
        make_dataset(plan, tmp_path, 1, image_format="gif")


def test_views_carry_region_signal() -> None:
    """Mean colours of views differ more between regions than within one."""
    p = make_campus(n_regions=4, seed=0)
    rng = np.random.default_rng(0)
    points = sample_open_points(p, 300, rng)
    regions = p.regions_of(points[:, 0], points[:, 1])
    means, labels = [], []
    for r in range(p.n_regions):
        for lat, lon in points[regions == r][:10]:
            view = render_view(p, lat, lon, rng.uniform(0, 360), size=32)
            means.append(np.asarray(view, dtype=float).mean(axis=(0, 1)))
            labels.append(r)
    m, lab = np.array(means), np.array(labels)
    dist = np.linalg.norm(m[:, None] - m[None], axis=-1)
    same = lab[:, None] == lab[None]
    within = dist[same & ~np.eye(len(lab), dtype=bool)].mean()
    between = dist[~same].mean()
    assert between > 1.2 * within


def test_views_change_with_position(plan: CampusPlan) -> None:
    """Stepping 15 units with the same heading changes the view (position signal)."""
    lat, lon = sample_open_points(plan, 1, np.random.default_rng(2), clearance=20.0)[0]
    here = np.asarray(render_view(plan, lat, lon, 90.0), dtype=float)
    moved = np.asarray(render_view(plan, lat, lon + 15.0, 90.0), dtype=float)
    assert np.abs(here - moved).mean() > 2.0
