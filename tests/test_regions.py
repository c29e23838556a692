"""Region polygons: validation of regions.geojson, round trips, point-in-polygon, the bundle's file."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import shapely
from shapely.geometry import MultiPolygon, box

from geomodel import regions as R
from geomodel.errors import GeomodelError, RegionsError
from geomodel.regions import Regions, read_regions

ROOT = Path(__file__).resolve().parents[1]
BUNDLED_MODEL = ROOT / "assets" / "model"


def square(x0: float, y0: float, side: float = 1.0) -> list:
    return [[[x0, y0], [x0 + side, y0], [x0 + side, y0 + side], [x0, y0 + side], [x0, y0]]]


def feature(rid, name="A", coords=None, kind="Polygon", **props) -> dict:
    coords = square(0, 0) if coords is None else coords
    return {"type": "Feature", "properties": {"region_id": rid, "name": name, **props},
            "geometry": {"type": kind, "coordinates": coords}}


def collection(*features: dict, **members) -> dict:
    return {"type": "FeatureCollection", **members, "features": list(features)}


def three() -> Regions:
    """Three planar regions: two unit squares side by side and a 2 x 1 strip above them."""
    return Regions("planar", ["West", "East", "North <b>"],
                   [box(0, 0, 1, 1), box(1, 0, 2, 1), MultiPolygon([box(0, 1, 1, 2), box(1, 1, 2, 2)]).buffer(0)])


# ----------------------------------------------------------------------------- round trip and writing


def test_round_trip_through_dict_and_file(tmp_path):
    regions = three()
    again = read_regions(regions.to_geojson(), frame="planar")
    assert again.names == regions.names and again.frame == "planar"
    assert all(shapely.equals(a, b) for a, b in zip(again.geometries, regions.geometries))
    path = regions.write(tmp_path / "sub" / "regions.geojson")
    from_file = read_regions(path)  # frame taken from the file's "frame" member
    assert from_file.frame == "planar" and from_file.names == regions.names
    assert from_file.to_geojson() == regions.to_geojson()
    assert [p.name for p in path.parent.iterdir()] == ["regions.geojson"]  # no temporary file left


def test_written_file_is_the_agreed_format(tmp_path):
    doc = json.loads(three().write(tmp_path / "r.geojson").read_text())
    assert doc["type"] == "FeatureCollection"
    assert [f["properties"] for f in doc["features"]] == [
        {"region_id": 1, "name": "West"}, {"region_id": 2, "name": "East"}, {"region_id": 3, "name": "North <b>"}]
    assert [f["geometry"]["type"] for f in doc["features"]] == ["Polygon", "Polygon", "Polygon"]
    ring = np.asarray(doc["features"][0]["geometry"]["coordinates"][0])
    assert shapely.is_ccw(shapely.linearrings(ring))  # RFC 7946: exterior rings counter-clockwise


def test_features_in_any_order_other_properties_and_default_names():
    doc = collection(feature(2, colour="red", coords=square(1, 0)), {**feature(1), "properties": {"region_id": 1}})
    regions = read_regions(doc, frame="planar")
    assert regions.names == ["Region 1", "A"]
    assert regions.region_bounds().tolist() == [[0, 0, 1, 1], [0, 1, 1, 2]]  # south, west, north, east


def test_names_stay_plain_text():
    name = "<img src=x onerror=alert(1)> & =HYPERLINK()"
    regions = read_regions(collection(feature(1, name=name)), frame="planar")
    assert regions.names == [name]


def test_wgs84_is_the_default_frame_and_a_mismatch_is_refused(tmp_path):
    doc = collection(feature(1, coords=square(78.3, 17.4, 0.01)))
    assert read_regions(doc).frame == "wgs84"
    path = Regions("planar", ["a"], [box(0, 0, 1, 1)]).write(tmp_path / "r.geojson")
    with pytest.raises(RegionsError, match="'planar' but 'wgs84'"):
        read_regions(path, frame="wgs84")


def test_a_write_that_fails_keeps_the_old_file(tmp_path):
    path = three().write(tmp_path / "r.geojson")
    before = path.read_bytes()
    (tmp_path / "blocker").write_text("a file, not a folder")
    with pytest.raises(RegionsError, match="could not write"):
        three().write(tmp_path / "blocker" / "r.geojson")
    assert path.read_bytes() == before


# ----------------------------------------------------------------------------- every validation error

BOWTIE = [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]]
BAD = {
    "not a feature collection": ({"type": "Feature", "geometry": None}, "expected a GeoJSON FeatureCollection"),
    "no features": (collection(), "no features"),
    "a point": (collection(feature(1, coords=[0, 0], kind="Point")), r"feature #1 \(region_id 1, 'A'\): has a Point"),
    "a line": (collection(feature(1), feature(2, coords=[[0, 0], [1, 1]], kind="LineString")),
               "feature #2 .*LineString geometry; a region must be a Polygon or MultiPolygon"),
    "no geometry": (collection({**feature(1), "geometry": None}), "has no geometry"),
    "empty polygon": (collection(feature(1, coords=[])), "polygon is empty"),
    "empty multipolygon": (collection(feature(1, coords=[], kind="MultiPolygon")), "polygon is empty"),
    "too few points": (collection(feature(1, coords=[[[0, 0], [1, 0], [0, 0]]])), "Too few points"),
    "two points": (collection(feature(1, coords=[[[0, 0], [1, 0]]])), "malformed Polygon coordinates|Too few"),
    "flat numbers": (collection(feature(1, coords=[0, 1, 2])), "malformed Polygon coordinates"),
    "text coordinates": (collection(feature(1, coords=[[["a", "b"], [1, 0], [1, 1], ["a", "b"]]])), "malformed"),
    "self-intersecting": (collection(feature(1, coords=BOWTIE)), r"invalid polygon: Self-intersection\[0.5 0.5\]"),
    "zero area": (collection(feature(1, coords=[[[0, 0], [1, 0], [2, 0], [0, 0]]])), "invalid polygon|zero area"),
    "missing region_id": (collection({**feature(1), "properties": {"name": "x"}}), 'feature #1: no "region_id"'),
    "no properties": (collection({**feature(1), "properties": None}), 'no "region_id"'),
    "fractional region_id": (collection(feature(1.5)), "region_id 1.5 is not an integer"),
    "text region_id": (collection(feature("1")), "region_id '1' is not an integer"),
    "boolean region_id": (collection(feature(True)), "region_id True is not an integer"),
    "duplicate region_id": (collection(feature(1), feature(2, coords=square(2, 0)),
                                       feature(2, name="B", coords=square(5, 5))),
                            r"feature #3 \(region_id 2, 'B'\): region_id 2 is used twice \(also by feature #2"),
    "ids not 1..N": (collection(feature(1), feature(3, coords=square(2, 0))),
                     r"exactly 1..2 .*missing 2, unexpected 3"),
    "ids from 0": (collection(feature(0, coords=square(5, 5)), feature(1)), "missing 2, unexpected 0"),
    "overlap": (collection(feature(1, name="Lib"), feature(2, name="Lab", coords=square(0.5, 0))),
                r"\(region_id 1, 'Lib'\) and feature #2 \(region_id 2, 'Lab'\) overlap"),
    "inside another": (collection(feature(1, coords=square(0, 0, 10)), feature(2, coords=square(2, 2))),
                       "overlap .*100.0% of the smaller"),
    "non-string name": (collection(feature(1, name=5)), "name must be text .*int 5"),
    "list name": (collection(feature(1, name=["a"])), "name must be text"),
    "very long name": (collection(feature(1, name="x" * 201)), "201 characters"),
    "unknown frame member": (collection(feature(1), frame="utm"), "unknown \"frame\" 'utm'"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_regions_are_clear_errors(case):
    doc, message = BAD[case]
    with pytest.raises(RegionsError, match=message) as info:
        read_regions(doc, frame="planar")
    assert str(info.value).startswith("regions GeoJSON") and "\n" not in str(info.value)
    assert isinstance(info.value, GeomodelError)


@pytest.mark.parametrize("corner", [[200.0, 10.0], [10.0, 95.0], [-181.0, 0.0]])
def test_wgs84_coordinates_out_of_range(corner):
    ring = [[[0.5, 0.5], [1, 0.5], corner, [0.5, 0.5]]]
    with pytest.raises(RegionsError, match=f"feature #1 .*\\[{corner[0]:g}, {corner[1]:g}\\] is not a WGS84"):
        read_regions(collection(feature(1, coords=ring)), frame="wgs84")
    read_regions(collection(feature(1, coords=ring)), frame="planar")  # fine as planar units


def test_shared_borders_and_float_slivers_are_not_overlaps():
    sliver = [[[1 - 1e-12, 0], [2, 0], [2, 1], [1 - 1e-12, 1], [1 - 1e-12, 0]]]
    read_regions(collection(feature(1), feature(2, coords=sliver)), frame="planar")  # 1e-12 of shared area


@pytest.mark.parametrize("content, message", [
    (b"", "the file is empty"),
    (b"{not json", r"not valid JSON \(line 1, column 2"),
    (b"\xff\xfe\x00garbage", "not UTF-8"),
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply|not valid JSON"),
])
def test_unreadable_files_name_the_file(tmp_path, content, message):
    path = tmp_path / "mine.geojson"
    path.write_bytes(content)
    with pytest.raises(RegionsError, match=message) as info:
        read_regions(path)
    assert str(info.value).startswith(str(path)) and "\n" not in str(info.value)


@pytest.mark.parametrize("case", ["no features", "a point", "empty polygon", "self-intersecting", "overlap",
                                  "duplicate region_id", "ids not 1..N", "missing region_id"])
def test_bad_regions_files_are_one_line_naming_the_file(tmp_path, case):
    doc, message = BAD[case]
    path = tmp_path / "drawn.geojson"
    path.write_text(json.dumps(doc))
    with pytest.raises(RegionsError, match=message) as info:
        read_regions(path, frame="planar")
    assert str(info.value).startswith(f"{path}: ") and "\n" not in str(info.value)


def test_missing_and_huge_files(tmp_path, monkeypatch):
    with pytest.raises(RegionsError, match="regions file not found: .*nope.geojson"):
        read_regions(tmp_path / "nope.geojson")
    path = three().write(tmp_path / "big.geojson")
    monkeypatch.setattr(R, "MAX_FILE_BYTES", path.stat().st_size - 1)
    monkeypatch.setattr(R.json, "loads", lambda *a, **k: pytest.fail("a file over the cap must not be parsed"))
    with pytest.raises(RegionsError, match=r"big.geojson: .* MB is too large for a regions file") as info:
        read_regions(path)
    assert str(info.value).startswith(str(path)) and "\n" not in str(info.value)
    monkeypatch.undo()
    huge = tmp_path / "huge.geojson"
    with huge.open("wb") as f:  # the real cap: 20 MB, whatever the content
        f.truncate(R.MAX_FILE_BYTES + 1)
    with pytest.raises(RegionsError, match=r"huge.geojson: 20.0 MB is too large .*at most 20 MB"):
        read_regions(huge)


def test_constructor_validates_too():
    with pytest.raises(RegionsError, match=r"region_id 2, 'b'\) overlap"):
        Regions("planar", ["a", "b"], [box(0, 0, 2, 2), box(1, 1, 3, 3)])
    with pytest.raises(RegionsError, match="Self-intersection"):
        Regions("planar", ["a"], [shapely.Polygon(BOWTIE[0])])
    with pytest.raises(RegionsError, match="unknown coordinate frame"):
        Regions("utm", ["a"], [box(0, 0, 1, 1)])
    with pytest.raises(RegionsError, match="name must be text"):
        Regions("planar", [None], [box(0, 0, 1, 1)])


# ----------------------------------------------------------------------------- point in polygon


def test_assign_inside_outside_and_on_borders():
    regions = three()
    lat = np.array([0.5, 0.5, 1.5, 1.5, 5.0, 0.5, 0.0, 1.0, 2.0, np.nan, -0.0001])
    lon = np.array([0.5, 1.5, 0.5, 1.5, 5.0, 1.0, 0.5, 0.5, 2.0, 0.5, 0.5])
    assert regions.assign(lat, lon).tolist() == [
        1, 2, 3, 3,  # inside each region; the L-shaped one on both of its halves
        0,  # outside every region
        1, 1, 1,  # on a shared border: the lower id; on the outer border: the region itself
        3, 0, 0]  # the outermost corner; NaN; just outside
    assert regions.assign(lat, lon, nearest=True).tolist() == [1, 2, 3, 3, 3, 1, 1, 1, 3, 0, 1]
    assert regions.assign(0.5, 1.5).tolist() == 2  # scalars too
    assert regions.assign(np.zeros((2, 3)) + 0.5, 0.5).shape == (2, 3)


def test_assign_multipolygon_with_a_hole():
    ring = box(0, 0, 10, 10).difference(box(4, 4, 6, 6))
    island = box(4.5, 4.5, 5.5, 5.5)
    regions = Regions("planar", ["ring", "island"], [MultiPolygon([ring, box(20, 20, 21, 21)]), island])
    assert regions.assign([1, 5, 4.2, 20.5], [1, 5, 4.2, 20.5]).tolist() == [1, 2, 0, 1]


def test_centroids_label_points_and_bounds():
    regions = three()
    assert np.allclose(regions.centroids[:2], [[0.5, 0.5], [0.5, 1.5]])
    assert (regions.assign(regions.label_points[:, 0], regions.label_points[:, 1]) == [1, 2, 3]).all()
    assert regions.bounds == ((0.0, 0.0), (2.0, 2.0))


# ----------------------------------------------------------------------------- the synthetic campus and the bundle


def test_campus_rectangles_tile_the_world_like_regions_of():
    from geomodel.synthetic import make_campus

    plan = make_campus(n_regions=7, seed=3, size=500.0)
    regions = Regions.from_boxes("planar", plan.region_names, plan.region_rectangles())
    assert np.isclose(sum(g.area for g in regions.geometries), 500.0 ** 2)
    pts = np.random.default_rng(0).uniform(0, 500, (5000, 2))
    assert (regions.assign(pts[:, 0], pts[:, 1]) == plan.regions_of(pts[:, 0], pts[:, 1]) + 1).all()
    assert np.allclose(regions.centroids, plan.region_centroids)


def test_bundle_ships_the_campus_true_regions():
    from geomodel.synthetic import make_campus

    bundle = json.loads((BUNDLED_MODEL.parent / "bundle.json").read_text())
    settings = bundle["settings"]
    plan = make_campus(n_regions=settings["regions"], seed=settings["campus_seed"])
    regions = read_regions(BUNDLED_MODEL / "regions.geojson", frame="planar")
    assert regions.names == bundle["region_names"] == plan.region_names
    pts = np.random.default_rng(1).uniform(0, plan.size, (20_000, 2))
    assert (regions.assign(pts[:, 0], pts[:, 1]) == plan.regions_of(pts[:, 0], pts[:, 1]) + 1).all()
    val = np.loadtxt(BUNDLED_MODEL.parent / "val" / "labels.csv", delimiter=",", skiprows=1, usecols=(1, 2, 4))
    assert (regions.assign(val[:, 0], val[:, 1]) == val[:, 2]).all()  # every validation photo in its region


# ----------------------------------------------------------------------------- model directories


@pytest.fixture(scope="module")
def predictor_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("model")
    for name in ("region.pt", "coords.pt"):
        shutil.copy2(BUNDLED_MODEL / name, out / name)
    return out


def test_bundled_predictor_has_its_regions():
    from geomodel.predictor import Predictor

    predictor = Predictor.from_dir(BUNDLED_MODEL, device="cpu")
    assert predictor.regions is not None and len(predictor.regions) == predictor.num_regions == 6
    assert predictor.regions.frame == predictor.frame == "planar"
    assert predictor.info().region_polygons == "6 polygons (regions.geojson)"


def test_old_model_directory_without_regions_loads(predictor_dir):
    from geomodel.predictor import Predictor

    predictor = Predictor.from_dir(predictor_dir, device="cpu")
    assert predictor.regions is None and predictor.info().region_polygons == ""
    assert predictor.predict(BUNDLED_MODEL / "plan.png")[0]["error"] is None


@pytest.mark.parametrize("content, message", [
    ("{broken", "not valid JSON"),
    (json.dumps(collection(feature(1, coords=BOWTIE))), "Self-intersection"),
])
def test_broken_regions_file_fails_at_load_naming_it(predictor_dir, tmp_path, content, message):
    from geomodel.predictor import Predictor

    model = tmp_path / "model"
    shutil.copytree(predictor_dir, model)
    (model / "regions.geojson").write_text(content)
    with pytest.raises(RegionsError, match=message) as info:
        Predictor.from_dir(model, device="cpu")
    assert str(info.value).startswith(str(model / "regions.geojson")) and "\n" not in str(info.value)


def test_regions_that_do_not_fit_the_model_are_refused(predictor_dir, tmp_path):
    from geomodel.errors import CheckpointError
    from geomodel.predictor import Predictor

    model = tmp_path / "model"
    shutil.copytree(predictor_dir, model)
    three().write(model / "regions.geojson")
    with pytest.raises(CheckpointError, match="regions.geojson: 3 planar regions, but the model predicts 6"):
        Predictor.from_dir(model, device="cpu")


# ----------------------------------------------------------------------------- regions derived from labelled photos


def campus_points(n_regions: int = 6, n: int = 400, seed: int = 0):
    from geomodel.synthetic import make_campus

    plan = make_campus(n_regions=n_regions, seed=seed)
    pts = np.random.default_rng(seed).uniform(0, plan.size, (n, 2))
    return plan, pts[:, 0], pts[:, 1], plan.regions_of(pts[:, 0], pts[:, 1]) + 1


def agreement(regions: Regions, plan, n: int = 20_000) -> float:
    """Share of the campus where the regions say what the plan says."""
    pts = np.random.default_rng(99).uniform(0, plan.size, (n, 2))
    return float((regions.assign(pts[:, 0], pts[:, 1]) == plan.regions_of(pts[:, 0], pts[:, 1]) + 1).mean())


def test_derived_regions_recover_the_campus():
    plan, lat, lon, ids = campus_points()
    regions = R.derive_regions(lat, lon, ids, frame="planar", names=plan.region_names)
    assert regions.names == plan.region_names and len(regions) == 6
    assert (regions.assign(lat, lon) == ids).all()  # every photo inside its own region
    assert agreement(regions, plan) > 0.93


def test_label_outliers_do_not_shape_the_regions():
    plan, lat, lon, ids = campus_points()
    clean = R.derive_regions(lat, lon, ids, frame="planar", names=plan.region_names)
    # a photo 30 km away (img_0146's kind) and a photo labelled region 1 in the middle of region 6
    far_lat, far_lon = np.append(lat, 30_000.0), np.append(lon, 500.0)
    far = R.derive_regions(far_lat, far_lon, np.append(ids, 3), frame="planar", names=plan.region_names)
    assert far.bounds == clean.bounds  # the study area ignores it
    r6 = plan.region_centroids[5]
    wrong = R.derive_regions(np.append(lat, r6[0]), np.append(lon, r6[1]), np.append(ids, 1), frame="planar",
                             names=plan.region_names)
    assert wrong.assign(*r6).tolist() == 6 and isinstance(wrong.geometries[0], shapely.Polygon)


def test_derived_regions_in_wgs84_are_lon_lat_around_the_photos():
    plan, y, x, ids = campus_points()
    lat0, lon0 = 17.445, 78.349  # IIIT Hyderabad; the campus read as metres east/north
    lat = lat0 + y / 111_195.0
    lon = lon0 + x / (111_195.0 * np.cos(np.radians(lat0)))
    regions = R.derive_regions(lat, lon, ids, frame="wgs84", names=plan.region_names)
    (south, west), (north, east) = regions.bounds
    assert lat0 - 0.002 < south < lat0 and lat0 + 0.009 < north < lat0 + 0.011
    assert lon0 - 0.002 < west < lon0 and (regions.assign(lat, lon) == ids).all()
    again = read_regions(regions.to_geojson(), frame="wgs84")
    assert (again.assign(lat, lon) == ids).all()


def test_interleaved_labels_give_multipolygons_and_a_region_without_photos_is_an_error():
    lat = np.array([0, 0, 0, 0, 1, 1, 1, 1.0])
    lon = np.array([0, 1, 2, 3, 0, 1, 2, 3.0])
    ids = np.array([1, 2, 1, 2, 1, 2, 1, 2])
    regions = R.derive_regions(lat, lon, ids, frame="planar", names=["a", "b"])
    assert [g.geom_type for g in regions.geometries] == ["MultiPolygon", "MultiPolygon"]
    assert (regions.assign(lat, lon) == ids).all()
    with pytest.raises(RegionsError, match=r"region\(s\) 3 \('c'\): no photos"):
        R.derive_regions(lat, lon, ids, frame="planar", names=["a", "b", "c"])


# ----------------------------------------------------------------------------- automatic regions


@pytest.mark.parametrize("method", R.AUTO_METHODS)
def test_auto_regions_are_balanced_contiguous_and_cover_the_photos(method):
    rng = np.random.default_rng(0)
    lat = np.concatenate([rng.normal(0, 100, 150), rng.normal(400, 50, 90)])
    lon = np.concatenate([rng.normal(0, 200, 150), rng.normal(300, 60, 90)])
    ids, regions = R.auto_regions(lat, lon, 8, frame="planar", method=method)
    assert len(regions) == 8 and regions.names[0] == "Region 1"
    counts = np.bincount(ids, minlength=9)
    assert counts[0] == 0 and counts[1:].min() >= 29 and counts[1:].max() <= 31  # 240 / 8, ties aside
    assert all(isinstance(g, shapely.Polygon) for g in regions.geometries)  # one piece each
    assert (regions.assign(lat, lon) == ids).all()
    north = regions.label_points[:, 0]
    assert north[0] >= north[-1]  # numbered from the north
    again = R.auto_regions(lat, lon, 8, frame="planar", method=method)[0]
    assert (again == ids).all()  # deterministic


def test_auto_regions_leave_far_outliers_out():
    plan, lat, lon, _ = campus_points(n=200)
    lat, lon = np.append(lat, [250_000.0, 30_000.0]), np.append(lon, [500.0, 200_000.0])
    ids, regions = R.auto_regions(lat, lon, 4, frame="planar")
    assert ids[-2:].tolist() == [0, 0] and (ids[:-2] > 0).all()
    assert regions.bounds[1][0] < 1100  # no region stretches towards them


def test_auto_regions_in_wgs84():
    rng = np.random.default_rng(1)
    lat, lon = 51.5 + rng.uniform(0, 0.01, 120), -0.12 + rng.uniform(0, 0.016, 120)
    ids, regions = R.auto_regions(lat, lon, 6, frame="wgs84")
    assert regions.frame == "wgs84" and (np.bincount(ids)[1:] == 20).all()
    (south, west), (north, east) = regions.bounds
    assert 51.49 < south < 51.5 and 51.51 < north < 51.52 and -0.121 < west < -0.12


def test_too_many_auto_regions_is_a_clear_error():
    lat, lon = np.random.default_rng(0).uniform(0, 100, (2, 42))
    with pytest.raises(RegionsError, match=r"10 regions need at least 50 photos \(5 per region\) but 42 photos "
                                           r"have usable positions: use at most 8 regions"):
        R.auto_regions(lat, lon, 10, frame="planar")
    with pytest.raises(RegionsError, match="2 more left out"):
        R.auto_regions(np.append(lat, [np.nan, 1e7]), np.append(lon, [0, 0]), 10, frame="planar")
    with pytest.raises(RegionsError, match="at least 1"):
        R.auto_regions(lat, lon, 0, frame="planar")
    with pytest.raises(RegionsError, match="unknown region partitioning 'grid'; choose one of: balanced-kmeans, kd"):
        R.auto_regions(lat, lon, 2, frame="planar", method="grid")
    same = np.zeros(40)
    with pytest.raises(RegionsError, match="at least 4 different positions"):
        R.auto_regions(same, same, 4, frame="planar")


# ----------------------------------------------------------------------------- fit --regions


TINY = ["--backbone", "resnet18", "--pretrained", "none", "--image-size", "32", "--batch-size", "16",
        "--device", "cpu", "--epochs", "1"]


def campus_regions_file(tmp_path: Path, n_regions: int = 3, seed: int = 1) -> Path:
    """The synthetic_dataset campus's true rectangles, as a user would draw them (features unsorted)."""
    from geomodel.synthetic import make_campus

    plan = make_campus(n_regions=n_regions, seed=seed)
    doc = Regions.from_boxes("planar", [f"Quad <{i}>" for i in range(1, n_regions + 1)],
                             plan.region_rectangles()).to_geojson()
    doc["features"].reverse()
    path = tmp_path / "drawn.geojson"
    path.write_text(json.dumps(doc))
    return path


def test_fit_with_regions_copies_them_and_takes_their_names(synthetic_dataset, tmp_path):
    from geomodel.engine.checkpoint import load_checkpoint
    from train.cli import main

    csv, images = synthetic_dataset
    drawn = campus_regions_file(tmp_path)
    out = tmp_path / "model"
    assert main(["region", "--csv", str(csv), "--images", str(images), "--out", str(out), "--regions", str(drawn),
                 *TINY]) == 0
    copied = read_regions(out / "regions.geojson", frame="planar")
    assert copied.to_geojson() == read_regions(drawn, frame="planar").to_geojson()
    assert copied.names == ["Quad <1>", "Quad <2>", "Quad <3>"]
    assert load_checkpoint(out / "region.pt")["region_names"] == copied.names


def test_fit_with_regions_that_do_not_fit_the_labels(synthetic_dataset, tmp_path, capsys):
    from train.cli import main

    csv, images = synthetic_dataset
    two = Regions.from_boxes("planar", ["a", "b"], [[0, 0, 500, 1000], [500, 0, 1000, 1000]])
    path = two.write(tmp_path / "two.geojson")
    args = ["fit", "--csv", str(csv), "--images", str(images), "--out", str(tmp_path / "m"), *TINY]
    assert main([*args, "--regions", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{csv}: Region_ID 3 (line " in err and f"is not a region of {path}, which has region ids 1..2" in err
    names = tmp_path / "names.txt"
    names.write_text("a\nb\nc\n")
    assert main([*args, "--regions", str(campus_regions_file(tmp_path)), "--region-names", str(names)]) == 2
    assert "--regions carries the region names: drop --region-names" in capsys.readouterr().err
    broken = tmp_path / "broken.geojson"
    broken.write_text(json.dumps(collection(feature(1, coords=BOWTIE))))
    assert main([*args, "--regions", str(broken)]) == 2
    assert f"{broken}: feature #1 (region_id 1, 'A'): invalid polygon: Self-intersection" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()  # refused before anything was written


def test_balanced_assignment_is_the_optimum():
    import itertools

    from geomodel import partition as P

    rng = np.random.default_rng(0)
    for _ in range(15):
        pts, centres = rng.uniform(0, 10, (7, 2)), rng.uniform(0, 10, (3, 2))
        cost = ((pts[:, None] - centres[None]) ** 2).sum(axis=2)
        best = min(cost[np.arange(7), a].sum() for a in itertools.product(range(3), repeat=7)
                   if sorted(np.bincount(a, minlength=3)) == [2, 2, 3])
        fresh = P.balanced_assignment(cost)
        improved = P._improve(cost, rng.permutation([0, 0, 1, 1, 2, 2, int(rng.integers(3))]), 1000)
        for owner in (fresh, improved):
            assert sorted(np.bincount(owner, minlength=3)) == [2, 2, 3]
            assert np.isclose(cost[np.arange(7), owner].sum(), best)


def test_regions_of_the_real_campus_photos(shared_data):
    """Derived and automatic regions on the 245 campus photos with their real label outliers."""
    import pandas as pd

    df = pd.read_csv(shared_data / "campus" / "labels.csv")
    lat, lon, ids = df["latitude"].to_numpy(float), df["longitude"].to_numpy(float), df["Region_ID"].to_numpy()
    far = {"img_0160.jpg", "img_0095.jpg", "img_0145.jpg", "img_0146.jpg", "img_0158.jpg"}  # 8 to 230 km off
    derived = R.derive_regions(lat, lon, ids, frame="planar", names=[f"R{i}" for i in range(1, 16)])
    got = derived.assign(lat, lon)
    assert set(df["filename"][got == 0]) == far
    assert (got == ids).mean() > 0.97  # the rest sit in their own region but for a stray few
    for method in R.AUTO_METHODS:
        auto, regions = R.auto_regions(lat, lon, 15, frame="planar", method=method)
        counts = np.bincount(auto)[1:]
        assert set(df["filename"][auto == 0]) == far and counts.min() >= 15 and counts.max() <= 17
        # (photos at one position stay together, so the 240 photos need not split 16 each)
    with pytest.raises(RegionsError, match="at most 48 regions"):
        R.auto_regions(lat, lon, 49, frame="planar")


def test_photos_at_one_position_neither_hide_the_others_nor_break_the_regions():
    rng = np.random.default_rng(0)
    lat = np.concatenate([np.full(20, 50.0), rng.uniform(0, 100, 30)])  # a GPS stuck on one spot for 20 photos
    lon = np.concatenate([np.full(20, 50.0), rng.uniform(0, 100, 30)])
    for method in R.AUTO_METHODS:
        ids, _ = R.auto_regions(lat, lon, 2, frame="planar", method=method)
        assert (ids > 0).all()  # the 30 others are not outliers
        with pytest.raises(RegionsError, match="20 photos share one position.*: use fewer regions|region .* gets "
                                               "only .* photos .*: use fewer regions"):
            R.auto_regions(lat, lon, 8, frame="planar", method=method)

