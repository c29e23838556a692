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
    "duplicate region_id": (collection(feature(1), feature(2, coords=square(2, 0)), feature(2, name="B", coords=square(5, 5))),
                            r"feature #3 \(region_id 2, 'B'\): region_id 2 is used twice \(also by feature #2"),
    "ids not 1..N": (collection(feature(1), feature(3, coords=square(2, 0))), r"exactly 1..2 .*missing 2, unexpected 3"),
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
    assert str(info.value).startswith(str(path))


def test_missing_and_huge_files(tmp_path, monkeypatch):
    with pytest.raises(RegionsError, match="regions file not found: .*nope.geojson"):
        read_regions(tmp_path / "nope.geojson")
    path = three().write(tmp_path / "big.geojson")
    monkeypatch.setattr(R, "MAX_FILE_BYTES", path.stat().st_size - 1)
    monkeypatch.setattr(R.json, "loads", lambda *a, **k: pytest.fail("a file over the cap must not be parsed"))
    with pytest.raises(RegionsError, match=r"big.geojson: .* MB is too large for a regions file"):
        read_regions(path)


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
    assert str(model / "regions.geojson") in str(info.value)


def test_regions_that_do_not_fit_the_model_are_refused(predictor_dir, tmp_path):
    from geomodel.errors import CheckpointError
    from geomodel.predictor import Predictor

    model = tmp_path / "model"
    shutil.copytree(predictor_dir, model)
    three().write(model / "regions.geojson")
    with pytest.raises(CheckpointError, match="regions.geojson: 3 planar regions, but the model predicts 6"):
        Predictor.from_dir(model, device="cpu")
