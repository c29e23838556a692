"""`python -m train collect`: a walk's photos, video and GPX (made by the tests) in, a collection that
`fit`/`evaluate` take unchanged out; every bad input one clear line, and the good photos still collected."""
from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from geomodel.collect.walk import make_sample, regions_geojson
from geomodel.data.labels import read_labels
from geomodel.regions import read_regions
from geomodel.synthetic import make_campus
from train.cli import main


@pytest.fixture(scope="module")
def plan():
    return make_campus(n_regions=4, seed=3)


@pytest.fixture(scope="module")
def sample(plan, tmp_path_factory):
    """A short walk in each of 4 regions (20 s, 3 fps, 48 px), 3 geotagged + 1 GPS-less photo per region."""
    return make_sample(tmp_path_factory.mktemp("walk"), plan, minutes=1 / 3, photos_per_region=3,
                       untagged_per_region=1, test_per_region=3, size=48, fps=3.0, seed=1)


def _collect(*argv, expect: int = 0) -> None:
    assert main(["collect", *map(str, argv)]) == expect


def _err(capsys) -> str:
    return capsys.readouterr().err


def test_collect_photos_video_and_gpx_with_drawn_regions(sample, plan, tmp_path, capsys):
    out = tmp_path / "c"
    _collect(sample.photos, sample.videos, "--gpx", sample.gpx, "--regions", sample.regions, "--out", out)
    printed = capsys.readouterr()
    assert sorted(p.name for p in out.iterdir()) == ["images", "labels.csv", "map.html", "regions.geojson",
                                                     "summary.json"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder left
    df = read_labels(out / "labels.csv")  # the project's own reader accepts it
    assert list(df.columns[:6]) == ["filename", "latitude", "longitude", "Region_ID", "timestamp", "angle"]
    assert sorted(df["filename"]) == sorted(p.name for p in (out / "images").iterdir())
    summary = json.loads((out / "summary.json").read_text())
    assert summary["from_photos"] == 16 and summary["located_by"]["track"] >= 4 + summary["from_video_frames"]
    assert summary["from_video_frames"] >= 4 * 5  # 20 s at 1.4 m/s per region: ~28 m, a frame per 2 m
    assert [r["photos"] for r in summary["regions"]] == np.bincount(df["Region_ID"], minlength=5)[1:].tolist()
    # the labels agree with the campus: a photo's region is the region it was taken in (GPS error aside)
    from geomodel.geo import wgs84_to_planar

    y, x = wgs84_to_planar(df["latitude"], df["longitude"], metres_per_unit=1 / plan.scale)
    assert (plan.regions_of(y, x) + 1 == df["Region_ID"]).mean() > 0.9
    frames = df[df["filename"].str.startswith("walk_")]
    assert frames["angle"].notna().mean() > 0.8 and frames["timestamp"].str.endswith("Z").all()
    assert read_regions(out / "regions.geojson", frame="wgs84").names == plan.region_names
    page = (out / "map.html").read_text()
    assert plan.region_names[0] in page and not re.search(r"<(?:script|link)\b[^>]*\b(?:src|href)=", page)
    assert "photos in 4 regions" in printed.out


def test_collect_a_csv_without_regions_in_the_planar_frame(synthetic_dataset, tmp_path):
    csv, images = synthetic_dataset  # planar coordinates, with a Region_ID column to be replaced
    out = tmp_path / "c"
    _collect(csv, "--frame", "planar", "--images", images, "--auto-regions", 3, "--partition", "balanced-kmeans",
             "--out", out)
    df = read_labels(out / "labels.csv")
    src = pd.read_csv(csv)
    assert len(df) == len(src) and df["latitude"].between(0, 1000).all()
    assert sorted(df["Region_ID"].unique()) == [1, 2, 3]
    regions = read_regions(out / "regions.geojson", frame="planar")
    assert len(regions.names) == 3
    assert (np.asarray(regions.assign(df["latitude"], df["longitude"])) == df["Region_ID"]).all()


def test_existing_out_is_refused_and_overwrite_replaces_it(sample, tmp_path, capsys):
    out = tmp_path / "c"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    _collect(sample.test, "--regions", sample.regions, "--out", out, expect=2)
    assert f"{out}: already exists" in _err(capsys) and (out / "keep.txt").is_file()
    _collect(sample.test, "--regions", sample.regions, "--out", out, "--overwrite")
    assert not (out / "keep.txt").exists() and (out / "labels.csv").is_file()
    _collect(out / "images", "--regions", sample.regions, "--out", out, "--overwrite", expect=2)
    assert "--overwrite would delete inputs inside it" in _err(capsys) and (out / "labels.csv").is_file()


@pytest.mark.parametrize("content, problem", [
    ("{not json", "not valid JSON"),
    ('{"type": "FeatureCollection", "features": []}', "no region polygons"),
    ('{"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {"region_id": 1, "name": "a"}, '
     '"geometry": {"type": "Point", "coordinates": [78.3, 17.4]}}]}', "a region must be a Polygon"),
    ("self-intersecting", "self-intersect"),
    ("overlapping", "overlap"),
    ("empty", "empty"),
])
def test_bad_regions_file_is_one_line_naming_it(sample, plan, tmp_path, capsys, content, problem):
    path = tmp_path / "regions.geojson"
    gj = regions_geojson(plan)
    if content == "self-intersecting":
        (a, b, c, d, _) = gj["features"][0]["geometry"]["coordinates"][0]
        gj["features"][0]["geometry"]["coordinates"] = [[a, c, b, d, a]]  # a bow tie
        content = json.dumps(gj)
    elif content == "overlapping":
        gj["features"][1]["geometry"] = gj["features"][0]["geometry"]
        content = json.dumps(gj)
    elif content == "empty":
        gj["features"][2]["geometry"]["coordinates"] = []
        content = json.dumps(gj)
    path.write_text(content)
    _collect(sample.test, "--regions", path, "--out", tmp_path / "c", expect=2)
    err = _err(capsys)
    assert err.startswith("error: ") and str(path) in err and problem.lower() in err.lower()
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "c").exists()


def test_too_many_auto_regions_suggests_a_smaller_k(sample, tmp_path, capsys):
    _collect(sample.test, "--auto-regions", 12, "--out", tmp_path / "c", expect=2)  # 12 test photos
    err = _err(capsys)
    assert err.startswith("error: 12 regions need at least 60 photos") and "use at most 2 regions" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "c").exists()


def test_bad_inputs_are_listed_and_good_photos_still_collected(sample, tmp_path, capsys):
    """Every kind of bad input in one run: each is one line naming it, and every good photo is collected."""
    from geomodel.collect.exif import write_photo_meta
    from PIL import Image

    (tmp_path / "bad.gpx").write_text("<gpx><trk>")
    (tmp_path / "untimed.gpx").write_text('<gpx version="1.1"><trk><trkseg><trkpt lat="17.4" lon="78.3"></trkpt>'
                                          '<trkpt lat="17.5" lon="78.3"></trkpt></trkseg></trk></gpx>')
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "broken.mp4").write_text("not a video")
    write_photo_meta(Image.new("RGB", (16, 16)), tmp_path / "zero.jpg", latitude=0.0, longitude=0.0)
    far = write_photo_meta(Image.new("RGB", (16, 16)), tmp_path / "far.jpg", latitude=17.4, longitude=78.3)
    exif = Image.open(far).getexif()
    exif[0x8825] = {**exif.get_ifd(0x8825), 2: (95.0, 0.0, 0.0)}  # latitude 95 degrees
    Image.new("RGB", (16, 16)).save(far, exif=exif)
    out = tmp_path / "c"
    _collect(sample.photos, tmp_path / "broken.mp4", tmp_path / "notes.txt", tmp_path / "gone.jpg",
             tmp_path / "zero.jpg", far, "--gpx", tmp_path / "bad.gpx", "--gpx", tmp_path / "untimed.gpx",
             "--regions", sample.regions, "--out", out)
    err = _err(capsys)
    assert f"warning: {tmp_path / 'bad.gpx'}: not a readable GPX file" in err
    assert f"warning: {tmp_path / 'untimed.gpx'}: its 2 track points have no timestamps" in err
    for line in ("broken.mp4: not a readable video", "notes.txt: not a photo, video or CSV", "gone.jpg: not found",
                 "zero.jpg: ", "0,0", "far.jpg: ", "latitude 95.000000 is out of range",
                 "no GPS position in its EXIF, and no GPS track (--gpx)"):
        assert line in err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["photos"] == 12  # every geotagged photo; the 4 without GPS had no usable track
    assert len(summary["left_out"]) == 4 + 5
    assert sorted(p.name for p in (out / "images").iterdir()) == sorted(p.name for p in sample.photos.iterdir()
                                                                       if p.name.startswith("IMG_"))


def test_photos_outside_every_region_are_left_out_and_listed(sample, plan, tmp_path, capsys):
    gj = regions_geojson(plan)
    gj["features"] = gj["features"][:2]
    (tmp_path / "two.geojson").write_text(json.dumps(gj))
    out = tmp_path / "c"
    _collect(sample.test, "--regions", tmp_path / "two.geojson", "--out", out)
    summary = json.loads((out / "summary.json").read_text())
    outside = [x for x in summary["left_out"] if "outside every region" in x["reason"]]
    assert summary["photos"] == 6 and len(outside) == 6 and "outside every region" in _err(capsys)
    assert len(list((out / "images").iterdir())) == 6


def test_nothing_positioned_is_an_error_and_writes_nothing(tmp_path, sample, capsys):
    (tmp_path / "in").mkdir()
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "in" / "plain.jpg")
    _collect(tmp_path / "in", "--auto-regions", 2, "--out", tmp_path / "c", expect=2)
    err = _err(capsys)
    assert "plain.jpg: no GPS position in its EXIF" in err and "nothing to collect" in err
    assert not (tmp_path / "c").exists()


def test_no_time_overlap_warns_with_both_ranges(sample, tmp_path, capsys):
    _collect(sample.photos, "--gpx", sample.gpx, "--time-offset", "+12", "--regions", sample.regions,
             "--out", tmp_path / "c")
    err = _err(capsys)
    assert "warning: no photo or video time overlaps the GPS tracks" in err
    assert "EXIF times have no time zone and GPX times are UTC" in err and "2024-05-01 10:00:00" in err


@pytest.mark.slow
def test_walk_to_model_to_explorer(sample, plan, tmp_path, capsys):
    """collect -> fit --preset cpu-small (small) -> evaluate -> the app's validation explorer."""
    from demo.validation import ValidationSet
    from geomodel.predictor import Predictor

    _collect(sample.photos, sample.videos, "--gpx", sample.gpx, "--regions", sample.regions, "--out", tmp_path / "c")
    _collect(sample.test, "--regions", tmp_path / "c" / "regions.geojson", "--out", tmp_path / "t")
    assert main(["fit", "--preset", "cpu-small", "--frame", "wgs84", "--csv", str(tmp_path / "c" / "labels.csv"),
                 "--images", str(tmp_path / "c" / "images"), "--regions", str(tmp_path / "c" / "regions.geojson"),
                 "--out", str(tmp_path / "m"), "--image-size", "64",
                 "--aug-views", "1", "--epochs", "8", "--coords-epochs", "8", "--device", "cpu"]) == 0
    assert main(["evaluate", "--model", str(tmp_path / "m"), "--csv", str(tmp_path / "t" / "labels.csv"),
                 "--images", str(tmp_path / "t" / "images"), "--json", str(tmp_path / "m" / "test.json")]) == 0
    metrics = json.loads((tmp_path / "m" / "test.json").read_text())
    assert metrics["n_images"] == 12 and metrics["n_failed"] == 0 and metrics["error_unit"] == "m"
    predictor = Predictor.from_dir(tmp_path / "m", device="cpu")
    assert predictor.region_names == plan.region_names and predictor.regions.names == plan.region_names
    vs = ValidationSet.compute(predictor, tmp_path / "t" / "labels.csv", tmp_path / "t" / "images")
    assert len(vs.pred) == 12 and "iframe" in vs.view(None).map_html


def test_a_region_without_photos_is_a_warning(sample, plan, tmp_path, capsys):
    gj = regions_geojson(plan)
    far = [[78.40, 17.50], [78.41, 17.50], [78.41, 17.51], [78.40, 17.51], [78.40, 17.50]]  # kilometres away
    gj["features"].append({"type": "Feature", "properties": {"region_id": 5, "name": "Annex"},
                           "geometry": {"type": "Polygon", "coordinates": [far]}})
    (tmp_path / "five.geojson").write_text(json.dumps(gj))
    _collect(sample.test, "--regions", tmp_path / "five.geojson", "--out", tmp_path / "c")
    err = _err(capsys)
    assert "warning: region 5 ('Annex') has no photos" in err and "--num-regions 5" in err
    summary = json.loads((tmp_path / "c" / "summary.json").read_text())
    assert [r["photos"] for r in summary["regions"]] == [3, 3, 3, 3, 0]


def test_time_offsets_and_video_starts_parse_or_say_what_is_expected(tmp_path, capsys):
    from datetime import timedelta as td

    from train.collect import parse_offset, parse_video_starts

    assert [parse_offset(t) for t in ("+05:30", "-7", "5.5", "90s", "-1.5s", "-0:01:30", "+12:45:10")] == [
        td(hours=5, minutes=30), td(hours=-7), td(hours=5.5), td(seconds=90), td(seconds=-1.5),
        -td(minutes=1, seconds=30), td(hours=12, minutes=45, seconds=10)]
    for bad in ("abc", "5.5:30", "+5h", ""):
        with pytest.raises(ValueError, match="expected e.g. \\+05:30"):
            parse_offset(bad)
    starts = parse_video_starts(["2024-05-01T10:00:00Z", "clips/a.mp4=2024-05-01T15:30:00+05:30"])
    assert starts == {"": 1714557600.0, "a.mp4": 1714557600.0}
    with pytest.raises(ValueError, match="not an ISO 8601 time"):
        parse_video_starts(["a.mp4=yesterday"])
    _collect(tmp_path, "--auto-regions", 3, "--time-offset", "soon", "--out", tmp_path / "c", expect=2)
    assert "error: --time-offset 'soon'" in _err(capsys)
