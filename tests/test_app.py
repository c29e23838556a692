"""The demo app: pure builders, settings, the prediction service, and the running app over HTTP."""
from __future__ import annotations

import csv
import html
import http.client
import io
import json
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from demo import results as R
from demo.settings import BUNDLED_EXAMPLES, BUNDLED_MODEL, BUNDLED_VAL_CSV, config_from_args, parse_size
from demo.validation import (ALL_REGIONS, add_errors, confusion_popup, histogram_bin_width, histogram_frame, metrics,
                             region_choices, region_fills, region_of_choice, validation_points)

ROOT = Path(__file__).resolve().parents[1]
XSS = "<img src=x onerror=alert(1)>.jpg"
EXAMPLE = sorted(BUNDLED_EXAMPLES.glob("*.jpg"))[0]


def _row(name="a.jpg", *, lat=10.0, lon=20.0, error=None, gps=None, gps_error=None):
    if error is not None:
        return {"file": name, "region_id": None, "region_name": None, "region_prob": None, "top_k": [],
                "latitude": None, "longitude": None, "error": error, "gps_latitude": None, "gps_longitude": None,
                "gps_error": None, "thumbnail": None}
    return {"file": name, "region_id": 2, "region_name": "Science park", "region_prob": 0.8123,
            "top_k": [{"region_id": 2, "region_name": "Science park", "prob": 0.8123},
                      {"region_id": 1, "region_name": "Library quarter", "prob": 0.15}],
            "latitude": lat, "longitude": lon, "error": None,
            "gps_latitude": gps[0] if gps else None, "gps_longitude": gps[1] if gps else None,
            "gps_error": gps_error, "thumbnail": None}


def _save_with_gps(path: Path, lat_ref="N", lat=(17.0, 26.0, 42.0), lon_ref="E", lon=(78.0, 20.0, 56.4)) -> Path:
    exif = Image.Exif()
    exif[0x8825] = {1: lat_ref, 2: lat, 3: lon_ref, 4: lon}
    Image.new("RGB", (48, 48), (120, 90, 60)).save(path, exif=exif)
    return path


# ---------------------------------------------------------------------------------- pure builders


def test_results_table_rows_keep_failed_photos_and_names_as_text():
    rows = [_row(XSS), _row("bad.jpg", error="the file is empty (0 bytes)")]
    df = R.results_table(rows, "m")
    assert list(df.columns) == ["File", "Region", "Probability", "Top-k regions", "Latitude", "Longitude",
                                "GPS latitude", "GPS longitude", "Error (m)", "Problem"]
    assert df.iloc[0]["File"] == XSS  # the raw name: Gradio's "str" cells show it as text
    assert df.iloc[0]["Region"] == "Science park"
    assert df.iloc[0]["Top-k regions"] == "Science park 81% · Library quarter 15%"
    assert df.iloc[0]["Probability"] == pytest.approx(0.812)
    assert df.iloc[1]["Problem"] == "the file is empty (0 bytes)"
    assert df.iloc[1]["Region"] == "" and pd.isna(df.iloc[1]["Latitude"])
    assert R.results_table([], "units").shape == (0, 10)
    planar = R.results_table(rows, "units", gps=False)  # planar models never read GPS: no GPS columns
    assert list(planar.columns) == ["File", "Region", "Probability", "Top-k regions", "Latitude", "Longitude",
                                    "Problem"]


def test_csv_export_round_trips_every_row():
    rows = [_row("a.jpg", lat=1.5, lon=-2.25), _row('we"ird,name.jpg', error="not an image")]
    parsed = list(csv.DictReader(io.StringIO(R.to_csv(rows))))
    assert [p["file"] for p in parsed] == ["a.jpg", 'we"ird,name.jpg']
    assert float(parsed[0]["latitude"]) == 1.5 and float(parsed[0]["longitude"]) == -2.25
    assert parsed[0]["top_k"] == "Science park:0.8123;Library quarter:0.1500"
    assert parsed[1]["error"] == "not an image" and parsed[1]["latitude"] == ""


FORMULA_NAMES = ["=1+2.jpg", "=HYPERLINK('evil.example','click').jpg", "@SUM(1+1).jpg", "+1.jpg", "-1.jpg",
                 "\tx.jpg", "\rx.jpg"]


def test_csv_export_writes_formula_like_text_as_text_and_numbers_as_numbers():
    rows = [_row(name, lat=-1.5, lon=-2.25) for name in FORMULA_NAMES]
    rows[0]["region_name"] = rows[0]["top_k"][0]["region_name"] = "=cmd|' /C calc'!A0"
    rows.append(_row("-bad.jpg", error="-the reason"))
    parsed = list(csv.DictReader(io.StringIO(R.to_csv(rows))))
    assert [p["file"] for p in parsed] == ["'" + n for n in FORMULA_NAMES] + ["'-bad.jpg"]
    assert parsed[0]["region_name"] == "'=cmd|' /C calc'!A0" and parsed[0]["top_k"].startswith("'=cmd")
    assert parsed[-1]["error"] == "'-the reason"
    for p in parsed[:-1]:  # negative numbers stay numbers: no quote, they parse as floats
        assert (p["latitude"], p["longitude"]) == ("-1.5", "-2.25")
        assert float(p["region_prob"]) == pytest.approx(0.8123)
    assert R.to_csv([_row("a.jpg")]).splitlines()[1].startswith("a.jpg,")  # ordinary names unchanged


def test_geojson_export_points_are_lon_lat_and_failed_rows_have_null_geometry():
    rows = [_row("a.jpg", lat=17.4, lon=78.3, gps=(17.41, 78.31), gps_error=1500.0), _row("b.jpg", error="bad")]
    gj = json.loads(json.dumps(R.to_geojson(rows, "wgs84")))  # must be JSON-serialisable
    assert gj["type"] == "FeatureCollection" and gj["frame"] == "wgs84"
    good, bad = gj["features"]
    assert good["geometry"] == {"type": "Point", "coordinates": [78.3, 17.4]}
    assert good["properties"]["region_name"] == "Science park"
    assert good["properties"]["gps_error"] == 1500.0
    assert good["properties"]["top_k"][0]["prob"] == pytest.approx(0.8123)
    assert bad["geometry"] is None and bad["properties"]["error"] == "bad"


def test_map_points_skip_failed_photos_and_carry_gps_truth():
    rows = [_row("a.jpg"), _row("b.jpg", gps=(10.1, 20.1), gps_error=15.0), _row("c.jpg", error="bad")]
    points = R.map_points(rows)
    assert [p.name for p in points] == ["a.jpg", "b.jpg"]
    assert not points[0].has_truth
    assert points[1].has_truth and points[1].true_lat == 10.1 and points[1].error == 15.0


def test_problem_list_escapes_names_and_reasons():
    rows = [_row("ok.jpg"), _row(XSS, error="<b>bad</b> *file*")]
    md = R.problems_markdown(rows)
    assert md.startswith("**1 of 2 photos could not be used**")
    assert "`" + XSS + "`" in md  # inside a code span Markdown shows it literally
    assert "<b>" not in md and "&lt;b&gt;" in md and "\\*file\\*" in md
    assert R.problems_markdown([_row("ok.jpg")]) == ""
    assert "`a'b.jpg`" in R.problems_markdown([_row("a`b.jpg", error="x")])
    assert R.escape_markdown("needs the 'pillow-heif' package") == "needs the 'pillow\\-heif' package"


def test_summary_reports_gps_median():
    rows = [_row("a", gps=(1, 1), gps_error=10.0), _row("b", gps=(1, 1), gps_error=30.0), _row("c", error="x")]
    text = R.summary_markdown(rows, "m")
    assert text.startswith("Predicted 2 of 3 photos.") and "median error 20.0 m" in text


def _val_frame() -> pd.DataFrame:
    return pd.DataFrame({
        "filename": ["a.jpg", "b.jpg", "c.jpg", "d.jpg"], "Region_ID": [1, 1, 2, 2],
        "latitude": [0.0, 0.0, 10.0, 10.0], "longitude": [0.0, 0.0, 10.0, 10.0],
        "pred_region_id": [1, 2, 2, None], "pred_region_prob": [0.9, 0.6, 0.7, None],
        "pred_latitude": [3.0, 0.0, 10.0, None], "pred_longitude": [4.0, 2.0, 10.0, None],
        "error": [None, None, None, "d.jpg: the file is empty (0 bytes)"]})


def test_validation_metrics_follow_the_original_definitions():
    pred = add_errors(_val_frame(), "planar")
    assert pred["distance"].iloc[:3].tolist() == [5.0, 2.0, 0.0] and np.isnan(pred["distance"].iloc[3])
    m = metrics(pred, 2, "planar")
    assert m["n"] == 4 and m["n_failed"] == 1
    assert m["region_accuracy"] == pytest.approx(2 / 3)
    mse_lat, mse_lon = (9 + 0 + 0) / 3, (16 + 4 + 0) / 3
    assert m["coord_mse"] == pytest.approx(0.5 * (mse_lat + mse_lon))
    assert m["median_error"] == pytest.approx(2.0)
    points = validation_points(pred, ["North", "South"], {"a.jpg": "data:image/jpeg;base64,AAAA"})
    assert [p.name for p in points] == ["a.jpg", "b.jpg", "c.jpg"]
    assert points[1].region == "South" and points[1].true_region == "North" and points[1].error == 2.0
    assert points[0].thumbnail.startswith("data:image/jpeg")


def test_region_filter_choices():
    choices = region_choices(["North", "South"])
    assert choices == [ALL_REGIONS, "1 · North", "2 · South"]
    assert region_of_choice("2 · South", ["North", "South"]) == 2
    assert region_of_choice(ALL_REGIONS, ["North", "South"]) is None
    assert region_of_choice("nonsense", ["North", "South"]) is None


def test_error_histogram_data_for_the_native_plot():
    width = histogram_bin_width([1.0, 2.0, 2.5, 10.0, 300.0], bins=20)
    assert width in (1.0, 2.0, 2.5, 5.0, 10.0, 20.0)  # a round width
    df = histogram_frame([1.0, 2.0, 2.5, 10.0, float("nan"), 300.0], 1.0, bins=5)
    assert df["error"].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]  # each bar's lower edge
    assert df["photos"].tolist() == [0, 1, 2, 0, 2]  # 10 and 300 land in the open-ended last bin
    assert histogram_frame([], 1.0, bins=3)["photos"].tolist() == [0, 0, 0]


def test_region_fills_carry_accuracy_median_error_and_the_confusion_row():
    pred = add_errors(_val_frame(), "planar")  # region 1: a right (error 5), b taken for 2 (error 2); region 2: c right
    acc, med = region_fills(pred, ["North", XSS], "planar", "units")
    assert acc.values == [0.5, 1.0] and med.values == [3.5, 0.0]
    assert acc.scale.colour(0.5) != acc.scale.colour(1.0)
    popup = acc.popups[0]
    assert "1 · North" in popup and "2 photos" in popup and "accuracy <b>50%</b>" in popup
    assert "median error <b>3.5</b> units" in popup
    assert "Mistaken for:" in popup and "<td>2 · &lt;img src=x onerror=alert(1)&gt;.jpg</td><td>1</td><td>50%</td>" in popup
    assert "<img" not in acc.popups[1] and "All recognised." in acc.popups[1]
    assert "No validation photos here." in confusion_popup(0, ["A", "B"], [0, 0], None, None, "m")


def test_region_names_stay_text_in_the_model_tab_the_summary_and_the_filter():
    from dataclasses import replace

    from demo.ui import model_markdown
    from demo.validation import metrics_markdown
    from geomodel.predictor import Predictor

    info = Predictor.from_dir(BUNDLED_MODEL, device="cpu").info()
    names = [XSS, "**bold** [link](javascript:alert(2))", *info.region_names[2:]]
    text = model_markdown(replace(info, region_names=names), config_from_args([], env={}))
    assert "<img" not in text and "1 &lt;img src=x onerror=alert\\(1\\)&gt;\\.jpg" in text
    assert "\\*\\*bold\\*\\* \\[link\\]\\(javascript:alert\\(2\\)\\)" in text
    m = {"n": 2, "n_failed": 0, "region_accuracy": 0.5, "coord_mse": 1.0, "median_error": 1.0, "mean_error": 1.0}
    assert "**&lt;img src=x onerror=alert\\(1\\)&gt;\\.jpg: 2 validation photos**" in metrics_markdown(m, "m", XSS)
    choice = region_choices(names)[1]  # the dropdown's choices are plain text; Gradio shows them as text
    assert XSS in choice and region_of_choice(choice, names) == 1


def test_validation_job_runs_in_the_background_and_reports_progress_or_its_problem():
    import threading

    from demo.validation_job import ValidationJob
    from geomodel.errors import GeomodelError

    go = threading.Event()

    def compute(progress):
        progress(64, 100)
        go.wait(10)
        return "the set"

    job = ValidationJob(compute, total=100)
    for _ in range(100):  # the thread reports before it waits
        if job.done_photos == 64:
            break
        time.sleep(0.01)
    assert not job.ready and job.status().startswith("Predicting the validation set: 64 of 100 photos done.")
    go.set()
    assert job.wait(10) and job.result == "the set" and job.problem is None

    def broken(progress):
        raise GeomodelError("val.csv: line 3: the file is empty (0 bytes)")

    failed = ValidationJob(broken, total=3)
    assert failed.wait(10) and failed.result is None
    assert failed.problem == "val.csv: line 3: the file is empty (0 bytes)"
    crashed = ValidationJob(lambda progress: 1 / 0, total=3)
    assert crashed.wait(10) and "ZeroDivisionError" in crashed.problem


def test_map_index_of_table_rows_skips_failed_photos():
    rows = [_row("a.jpg"), _row("bad.jpg", error="x"), _row("c.jpg")]
    assert [R.map_index(rows, i) for i in range(4)] == [0, -1, 1, -1]
    points = R.map_points([{**r, "probs": [0.25, 0.75]} if r["error"] is None else r for r in rows])
    assert points[1].name == "c.jpg" and points[1].region_values == [0.25, 0.75]


# ---------------------------------------------------------------------------------- settings


def test_settings_default_to_the_bundle_and_read_the_environment(tmp_path):
    cfg = config_from_args([], env={})
    assert cfg.model == BUNDLED_MODEL and cfg.val_csv == BUNDLED_VAL_CSV
    assert cfg.plan == BUNDLED_MODEL / "plan.json" and cfg.examples and cfg.port == 7860
    (tmp_path / "images").mkdir()
    env = {"GEOMODEL_MODEL_DIR": str(tmp_path), "PORT": "9000", "GEOMODEL_MAX_FILES": "4",
           "GEOMODEL_VAL_CSV": str(tmp_path / "val.csv")}
    cfg = config_from_args([], env=env)
    assert cfg.model == tmp_path and cfg.port == 9000 and cfg.max_files == 4
    assert cfg.val_images == tmp_path / "images" and cfg.plan is None and cfg.examples is None
    assert config_from_args(["--port", "9001"], env=env).port == 9001  # flags beat the environment
    user = config_from_args(["--model", str(tmp_path)], env={})
    assert user.val_csv is None and user.examples is None  # the synthetic set never judges a user's model
    assert parse_size("10mb") == 10 * 2**20 and parse_size("512kb") == 512 * 1024 and parse_size("77") == 77
    with pytest.raises(ValueError, match="not a size"):
        parse_size("ten")
    with pytest.raises(ValueError, match="max_files"):
        config_from_args(["--max-files", "0"], env={})


@pytest.mark.parametrize("problem", ["broken", "huge"])
def test_a_broken_or_huge_regions_file_stops_the_app_with_one_line(tmp_path, problem):
    """Not a blank map: `python app.py` refuses the model directory, naming the file, exit code 2."""
    import shutil

    model = tmp_path / "model"
    shutil.copytree(BUNDLED_MODEL, model)
    if problem == "broken":
        (model / "regions.geojson").write_text('{"type": "FeatureCollection", "features": [{"type": "Feat')
    else:  # past read_regions' size limit: refused before it is parsed
        with open(model / "regions.geojson", "wb") as fh:
            fh.truncate(64 * 2**20)
    out = subprocess.run([sys.executable, str(ROOT / "app.py"), "--model", str(model), "--port", str(_free_port())],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out.stdout + out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "regions.geojson" in lines[0], out.stderr


def test_app_and_demo_import_without_launching():
    code = ("import app, demo.ui, demo.bundle, demo.service, sys; "
            "import gradio as gr; "
            "assert not any(isinstance(v, gr.Blocks) for v in vars(app).values()); "
            "assert 'geomodel.engine.stages' not in sys.modules; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_bundle_is_complete_and_small():
    model_files = {p.name for p in BUNDLED_MODEL.iterdir()}
    assert {"region.pt", "coords.pt", "plan.png", "plan.json"} <= model_files
    assert not any(n.endswith("_last.pt") for n in model_files)
    total = sum(p.stat().st_size for p in (ROOT / "assets").rglob("*") if p.is_file())
    assert total < 15 * 2**20
    bundle = json.loads((ROOT / "assets" / "bundle.json").read_text())
    assert bundle["validation"]["region_accuracy"] > 0.5  # it learned something (6 regions: chance is 1/6)


# ---------------------------------------------------------------------------------- service


@pytest.fixture(scope="module")
def predictor():
    from geomodel.predictor import Predictor

    return Predictor.from_dir(BUNDLED_MODEL, device="cpu")


@pytest.fixture(scope="module")
def wgs84_predictor():
    """The bundled model with its coordinate frame moved onto the globe (a 1 km campus near 17.4N 78.3E)."""
    from geomodel.engine.checkpoint import load_checkpoint
    from geomodel.predictor import Predictor

    region = load_checkpoint(BUNDLED_MODEL / "region.pt", kind="region")
    coords = load_checkpoint(BUNDLED_MODEL / "coords.pt", kind="coords")
    state = dict(coords["state_dict"])
    state["coord_mean"] = torch.tensor([17.445, 78.349], dtype=torch.float64)
    state["coord_std"] = torch.tensor([0.002, 0.002], dtype=torch.float64)
    coords = {**coords, "frame": "wgs84", "state_dict": state,
              "data_config": {**coords["data_config"], "frame": "wgs84", "error_unit": "m"}}
    return Predictor(region, coords, device="cpu")


def _bad_files(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.jpg").write_text("these are my holiday notes, not a photo\n")
    data = EXAMPLE.read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 2])
    return [folder / "empty.jpg", folder / "notes.jpg", folder / "truncated.jpg"]


def test_service_lists_bad_files_and_predicts_the_good_ones(predictor, tmp_path):
    from demo.service import predict_photos

    paths = [EXAMPLE, *_bad_files(tmp_path)]
    seen = []
    rows = predict_photos(predictor, paths, progress=lambda done, total: seen.append((done, total)))
    assert [r["file"] for r in rows] == [EXAMPLE.name, "empty.jpg", "notes.jpg", "truncated.jpg"]
    assert rows[0]["error"] is None and rows[0]["region_name"] in predictor.region_names
    assert rows[0]["thumbnail"].startswith("data:image/jpeg;base64,")
    assert len(rows[0]["top_k"]) == 3 and rows[1]["probs"] is None
    probs = rows[0]["probs"]  # every region's probability, for the map's shading
    assert len(probs) == predictor.num_regions and sum(probs) == pytest.approx(1.0, abs=1e-5)
    assert probs[rows[0]["region_id"] - 1] == pytest.approx(rows[0]["region_prob"]) == pytest.approx(max(probs))
    assert rows[1]["error"] == "the file is empty (0 bytes)"
    assert rows[2]["error"] == "this is a text file, not an image"
    assert "truncated" in rows[3]["error"]
    assert all(str(tmp_path) not in (r["error"] or "") for r in rows)  # no server paths in messages
    assert seen[-1] == (4, 4)


def test_service_enforces_request_limits(predictor, tmp_path):
    from demo.service import TooManyPhotos, predict_photos

    with pytest.raises(TooManyPhotos, match="limit is 2 per request"):
        predict_photos(predictor, [EXAMPLE] * 3, max_files=2)
    rows = predict_photos(predictor, [EXAMPLE], max_bytes=100)
    assert "accepts photos up to" in rows[0]["error"]


def test_service_reads_gps_only_for_wgs84_models(predictor, wgs84_predictor, tmp_path):
    from demo.service import predict_photos
    from geomodel.geo import haversine

    photo = _save_with_gps(tmp_path / "gps.jpg")
    [planar] = predict_photos(predictor, [photo])
    assert planar["gps_latitude"] is None
    [row] = predict_photos(wgs84_predictor, [photo])
    assert (row["gps_latitude"], row["gps_longitude"]) == pytest.approx((17.445, 78.349))
    expected = haversine(17.445, 78.349, row["latitude"], row["longitude"])
    assert row["gps_error"] == pytest.approx(float(expected))
    assert 17.3 < row["latitude"] < 17.6  # the moved frame really is in degrees
    point = R.map_points([row])[0]
    assert point.has_truth and point.error == row["gps_error"]


def test_validation_set_refuses_files_outside_its_folder_unless_allowed(predictor, tmp_path):
    from demo.validation import ValidationSet
    from geomodel.errors import DataError

    images = tmp_path / "val"
    images.mkdir()
    (images / "a.jpg").write_bytes(EXAMPLE.read_bytes())
    (images / "b.jpg").symlink_to(EXAMPLE)  # a link out of the folder (to the repository's examples)
    csv_path = tmp_path / "val.csv"
    csv_path.write_text(f"filename,latitude,longitude,Region_ID\na.jpg,500,500,1\nb.jpg,400,400,2\n"
                        f"../../../../../../..{EXAMPLE},300,300,1\n")
    with pytest.raises(DataError, match=r"outside the image folder .* on lines 3, 4;"):
        ValidationSet.compute(predictor, csv_path, images)
    vs = ValidationSet.compute(predictor, csv_path, images, allow_outside=True)
    assert vs.pred["error"].isna().all() and len(vs.pred) == 3
    assert config_from_args(["--allow-outside-images"], env={}).allow_outside_images is True
    assert config_from_args([], env={"GEOMODEL_ALLOW_OUTSIDE_IMAGES": "1"}).allow_outside_images is True
    assert config_from_args([], env={}).allow_outside_images is False


# ---------------------------------------------------------------------------------- running app


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def running_app(private_upload_folder):
    """The real app (bundled model) on a free port, with small limits so they are cheap to hit."""
    import app

    blocks, config = app.build(["--port", str(_free_port()), "--max-files", "5", "--max-file-size", "1mb"])
    url = app.launch(blocks, config, prevent_thread_lock=True, quiet=True)
    yield url.rstrip("/")
    blocks.close()


@pytest.fixture(scope="module")
def client(running_app):
    from gradio_client import Client

    return Client(running_app, verbose=False, download_files=False)


@pytest.mark.slow
def test_api_predict_returns_table_and_map(client, predictor, tmp_path):
    from gradio_client import handle_file

    bad = _bad_files(tmp_path)
    table, map_html = client.predict([handle_file(str(EXAMPLE)), *[handle_file(str(p)) for p in bad]],
                                     api_name="/predict")
    data = table["data"]
    assert [r[0] for r in data] == [EXAMPLE.name, "empty.jpg", "notes.jpg", "truncated.jpg"]
    good = dict(zip(table["headers"], data[0]))
    assert good["Region"] and good["Problem"] == "" and isinstance(good["Latitude"], float)
    problems = [r[-1] for r in data[1:]]
    assert problems[0] == "the file is empty (0 bytes)" and problems[1] == "this is a text file, not an image"
    assert "truncated" in problems[2]
    assert map_html.startswith('<iframe sandbox="allow-scripts"')
    doc = html.unescape(re.search(r'srcdoc="([^"]*)"', map_html).group(1))
    data = json.loads(re.search(r"var gm_data_\w+ = (\{.*?\});\n", doc).group(1))
    points = data["pts"]
    assert [p[0] for p in points] == [EXAMPLE.name] and "data:image/png;base64," in doc  # one point on the plan
    # The model directory's polygons, and the photo's fill: each region coloured by its probability.
    bundled = json.loads((BUNDLED_MODEL / "regions.geojson").read_text())["features"]
    regions = data["regions"]
    assert regions["names"] == [f["properties"]["name"] for f in bundled]
    for drawn, feature in zip(regions["geojson"]["features"], bundled, strict=True):
        assert np.allclose(drawn["geometry"]["coordinates"], feature["geometry"]["coordinates"], rtol=1e-6)
    from demo.colours import probability_scale

    probs = predictor.predict([EXAMPLE], top_k=len(bundled))[0]["top_k"]
    by_id = [next(t["prob"] for t in probs if t["region_id"] == i + 1) for i in range(len(bundled))]
    assert points[0][9]["fill"]["colours"] == probability_scale().colours(by_id)
    assert points[0][9]["fill"]["texts"] == [probability_scale().text(v) for v in by_id]


@pytest.mark.slow
def test_api_table_is_what_the_predictor_alone_gives(client, predictor, tmp_path):
    """The map gained region shading; the API's table did not change: the same as from Predictor.predict's top 3."""
    from gradio_client import handle_file

    from demo.service import _failed

    bad = _bad_files(tmp_path)[0]
    table, _ = client.predict([handle_file(str(EXAMPLE)), handle_file(str(bad))], api_name="/predict")
    [direct] = predictor.predict([EXAMPLE], top_k=3)
    rows = [{**direct, "file": EXAMPLE.name, "gps_latitude": None, "gps_longitude": None, "gps_error": None},
            {**_failed(bad, "the file is empty (0 bytes)")}]
    expected = R.results_table(rows, predictor.info().error_unit, gps=False)
    assert table["headers"] == list(expected.columns)
    got = pd.DataFrame(table["data"], columns=table["headers"])
    pd.testing.assert_frame_equal(got, expected, check_dtype=False)


@pytest.mark.slow
def test_api_refuses_too_many_photos_and_too_large_files(client, tmp_path):
    from gradio_client import handle_file

    with pytest.raises(Exception, match="Add at least one photo"):
        client.predict([], api_name="/predict")
    with pytest.raises(Exception, match="limit is 5 per request"):
        client.predict([handle_file(str(EXAMPLE))] * 6, api_name="/predict")
    big = tmp_path / "big.jpg"
    big.write_bytes(EXAMPLE.read_bytes() + b"\0" * (2 * 2**20))
    with pytest.raises(Exception, match="(?i)size|large|413"):
        client.predict([handle_file(str(big))], api_name="/predict")


@pytest.mark.slow
def test_file_names_stay_text_in_table_and_map(client, tmp_path):
    from gradio_client import handle_file

    names = ["x' onmouseover='alert(1)' a=&amp;.jpg", XSS]
    for name in names:
        (tmp_path / name).write_bytes(EXAMPLE.read_bytes())
    table, map_html = client.predict([handle_file(str(tmp_path / n)) for n in names], api_name="/predict")
    shown = [r[0] for r in table["data"]]
    assert shown[0] == names[0]
    assert "img src=x onerror=alert(1)" in shown[1]  # Gradio strips < > from upload names; the rest is text
    # The iframe's srcdoc is one escaped attribute; inside it, names only appear HTML-escaped in JS strings.
    assert re.fullmatch(r'<iframe sandbox="allow-scripts" title="Map" srcdoc="[^"<>]*" style="[^"]*"></iframe>',
                        map_html, flags=re.S)
    doc = html.unescape(re.search(r'srcdoc="([^"]*)"', map_html).group(1))
    assert "onmouseover='" not in doc and "<img src=x" not in doc
    # Popups and tooltips get the name HTML-escaped (&#x27;), then JSON-encoded with & < > as \u0026 ...
    assert "x\\u0026#x27; onmouseover=\\u0026#x27;alert(1)\\u0026#x27;" in doc


TRAVERSALS = [
    "/gradio_api/file=/etc/passwd",
    "/gradio_api/file=../../../../etc/passwd",
    "/gradio_api/file=..%2F..%2F..%2F..%2Fetc%2Fpasswd",
    "/gradio_api/file=%2Fetc%2Fpasswd",
    "/gradio_api/file=%252Fetc%252Fpasswd",
    "/gradio_api/file=/proc/self/environ",
    "/file=/etc/passwd",
    "/file=../../etc/passwd",
    "/file/..%2F..%2F..%2Fetc%2Fpasswd",
    "/gradio_api/file/../../../../etc/passwd",
    "/gradio_api/file/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "/static/../../../../etc/passwd",
    "/static/..%2F..%2F..%2F..%2Fetc%2Fpasswd",
    "/assets/..%2F..%2F..%2F..%2F..%2Fetc%2Fpasswd",
    "/gradio_api/file=/tmp/../etc/passwd",
    "/gradio_api/file=file:///etc/passwd",
    "/gradio_api/proxy=/etc/passwd",
]


def _raw_get(base: str, path: str) -> tuple[int, bytes]:
    """GET `path` exactly as written: HTTP libraries would resolve the `..` segments before sending."""
    host, port = base.split("//", 1)[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


@pytest.mark.slow
@pytest.mark.parametrize("path", TRAVERSALS)
def test_file_routes_refuse_path_traversal(running_app, path):
    status, body = _raw_get(running_app, path)
    assert b"root:" not in body and b"PATH=" not in body
    assert status != 200 or b"<html" in body.lower()  # at most the app's page, never the file


def _validation_map(client) -> str:
    """The explorer's map for all regions (the document inside its srcdoc), once the predictions are done."""
    for _ in range(600):
        _, map_html, _ = client.predict("All regions", api_name="/validation_view")
        if "srcdoc=" in map_html:
            return html.unescape(re.search(r'srcdoc="([^"]*)"', map_html).group(1))
        time.sleep(0.1)
    raise AssertionError("the explorer's predictions did not finish")


@pytest.mark.slow
def test_validation_thumbnails_are_served_not_inlined(running_app, client):
    import httpx

    doc = _validation_map(client)
    config = httpx.get(f"{running_app}/config", timeout=30).text
    assert "Validation: All regions" not in html.unescape(config)  # the page carries no explorer data
    assert "data:image/jpeg" not in doc  # no photo inlined in the page
    urls = sorted(set(re.findall(r"gradio_api/file=[^\"\\]+?\.jpg", doc)))
    assert len(urls) == 60  # one per validation photo
    folder = urls[0].split("=", 1)[1].rsplit("/", 1)[0]
    assert "/geomodel-thumbs-" in folder and all(u.startswith(f"gradio_api/file={folder}/") for u in urls)
    status, body = _raw_get(running_app, "/" + urls[0])
    assert status == 200 and body[:3] == b"\xff\xd8\xff"  # a JPEG
    assert max(Image.open(io.BytesIO(body)).size) <= 96
    for path in (f"{folder}/../../../../etc/passwd", f"{folder}/..%2F..%2F..%2F..%2Fetc%2Fpasswd", f"{folder}/",
                 f"{folder}/../{ROOT.name}/app.py"):
        status, body = _raw_get(running_app, f"/gradio_api/file={path}")
        assert status != 200 and b"root:" not in body, path


@pytest.mark.slow
def test_file_routes_serve_uploads_but_not_the_repository(running_app):
    import httpx

    for secret in (ROOT / "app.py", BUNDLED_MODEL / "region.pt", ROOT / "requirements.txt"):
        status, body = _raw_get(running_app, f"/gradio_api/file={secret}")
        assert status in (403, 404), secret
    # A real upload is served back: the refusals above are not just a broken route.
    with open(EXAMPLE, "rb") as fh:
        up = httpx.post(f"{running_app}/gradio_api/upload", files={"files": (EXAMPLE.name, fh)}, timeout=30)
    assert up.status_code == 200
    status, body = _raw_get(running_app, f"/gradio_api/file={up.json()[0]}")
    assert status == 200 and body == EXAMPLE.read_bytes()


def _sse_error(base: str, payload: dict) -> dict:
    """POST an API call, then read its event stream's `error` event."""
    import httpx

    post = httpx.post(f"{base}/gradio_api/call/predict", json=payload, timeout=60)
    assert post.status_code == 200, post.text
    stream = httpx.get(f"{base}/gradio_api/call/predict/{post.json()['event_id']}", timeout=120).text
    assert "event: error" in stream, stream
    return json.loads(stream.split("event: error", 1)[1].split("data:", 1)[1].strip().splitlines()[0])


@pytest.mark.slow
@pytest.mark.parametrize("data, phrase", [
    (["hello"], "Not a list of files (got a str)"),
    ([[123]], "Not a list of files (got a list of int)"),
    ([{"x": 1}], "Not a list of files (got a dict)"),
    ([[{"path": "/etc/passwd", "meta": {"_type": "gradio.FileData"}}]], "not uploaded"),
    ([], "didn't receive enough input values"),
])
def test_api_bad_inputs_get_a_message(running_app, data, phrase):
    error = _sse_error(running_app, {"data": data})
    assert error["error"] and phrase in error["error"]
    assert "Traceback" not in error["error"]


@pytest.mark.slow
@pytest.mark.parametrize("fn_index", [99, -1])
def test_api_unknown_event_index_is_a_client_error(running_app, fn_index):
    import httpx

    r = httpx.post(f"{running_app}/gradio_api/queue/join", json={"data": [[]], "fn_index": fn_index,
                                                                  "session_hash": "abc"}, timeout=60)
    assert r.status_code == 404 and f"no event with fn_index {fn_index}" in r.json()["detail"]


def test_unexpected_handler_failures_reach_the_visitor_as_one_fixed_line(caplog):
    import gradio as gr

    from demo.ui import _user_facing

    @_user_facing
    def broken():
        raise RuntimeError("/srv/secret/path exploded")

    with pytest.raises(gr.Error) as err:
        broken()
    assert "secret" not in err.value.message and "server log" in err.value.message
    assert "/srv/secret/path exploded" in caplog.text  # the details are logged for the operator


def _gradio_leftovers(cache: Path) -> tuple[list[Path], list[Path]]:
    """(empty tmp* files directly in Gradio's upload folder, every file below it)."""
    empty = [p for p in cache.glob("tmp*") if p.is_file() and p.stat().st_size == 0]
    return empty, [p for p in cache.rglob("*") if p.is_file()]


@pytest.mark.slow
def test_stopped_app_leaves_no_uploads_work_folder_or_empty_files(tmp_path):
    """SIGTERM (docker stop, systemctl stop) stops the app like Ctrl-C and cleans up after it."""
    import signal

    from gradio_client import Client, handle_file

    from bench import free_port, wait_ready

    cache, temp = tmp_path / "gradio", tmp_path / "tmp"
    temp.mkdir()
    port = free_port()
    env = {**__import__("os").environ, "GRADIO_TEMP_DIR": str(cache), "TMPDIR": str(temp),
           "GRADIO_ANALYTICS_ENABLED": "False"}
    proc = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--port", str(port)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_ready(f"http://127.0.0.1:{port}", proc, timeout=300)
        assert len(list(temp.glob("geomodel-app-*"))) == 1  # the work folder exists while the app runs
        client = Client(f"http://127.0.0.1:{port}", verbose=False, download_files=False)
        photos = [tmp_path / f"p{i}.jpg" for i in range(2)]
        for i, photo in enumerate(photos):
            photo.write_bytes(EXAMPLE.read_bytes() + bytes([i]))  # distinct files, distinct upload folders
        for _ in range(3):
            table, _ = client.predict([handle_file(str(p)) for p in photos], api_name="/predict")
            assert all(row[1] for row in table["data"])
        empty, files = _gradio_leftovers(cache)
        assert empty == []  # Gradio's gr.File left one empty tmp* file per uploaded photo
        assert any(p.name == "p0.jpg" for p in files)  # the uploads are there while the app runs
        proc.send_signal(signal.SIGTERM)
        head = []
        for line in proc.stdout:  # a second SIGTERM while it cleans up (docker stop repeats it) is ignored
            head.append(line)
            if line.startswith("stopping:"):
                proc.send_signal(signal.SIGTERM)
                break
        rest, _ = proc.communicate(timeout=120)
        out = "".join(head) + rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, out
    assert "Traceback" not in out, out
    assert list(temp.glob("geomodel-app-*")) == [], out
    assert _gradio_leftovers(cache)[1] == [], out  # uploads, example copies: every file the app cached
    # and the folders Gradio made for them; only its own feature folder (made at start-up) stays
    assert [p.name for p in cache.iterdir() if p.name != "vibe_edit_history"] == []


def test_download_files_do_not_pile_up_per_request(predictor, tmp_path):
    """Each request's CSV/GeoJSON is copied into Gradio's cache when returned; ours go at the next request."""
    import os

    from demo.service import CpuTurns
    from demo.settings import AppConfig
    from demo.ui import AppContext, downloads

    ctx = AppContext(AppConfig(), predictor, predictor.info(), None, None, None, [], "", tmp_path, CpuTurns.create())
    rows = [_row("a.jpg")]
    for _ in range(5):
        downloads(ctx, rows)
        for folder in tmp_path.iterdir():  # as if a minute had passed
            os.utime(folder, (folder.stat().st_mtime - 120,) * 2)
    assert len(list(tmp_path.iterdir())) == 1


def test_turns_give_a_newcomer_the_next_turn_not_the_last():
    """A one-photo request arriving during a 32-photo request waits for one photo, not 31."""
    import threading

    from demo.service import Turns

    turns, log = Turns(), []
    big_started, newcomer_waiting = threading.Event(), threading.Event()

    def big():
        for i in range(32):
            with turns.turn():
                log.append(f"big{i}")
                if i == 0:
                    big_started.set()
                    newcomer_waiting.wait(10)
                    while turns.waiting == 0:  # the newcomer is in line before this turn ends
                        time.sleep(0.001)

    def newcomer():
        big_started.wait(10)
        newcomer_waiting.set()
        with turns.turn():
            log.append("new")

    threads = [threading.Thread(target=big), threading.Thread(target=newcomer)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert log.index("new") == 1 and len(log) == 33


def test_a_normal_photo_never_waits_for_a_big_decode(predictor, tmp_path):
    """Big decodes (over SMALL_DECODE pixels) go one at a time in their own lane; normal photos in theirs."""
    import threading

    from demo.service import SMALL_DECODE, CpuTurns, predict_photos

    turns = CpuTurns.create()
    done: list[list[dict]] = []
    big = _png16(tmp_path / "big.png", 2100, 2000)
    assert 2100 * 2000 > SMALL_DECODE
    with turns.large.turn():  # as if another request were decoding a huge PNG right now
        normal = threading.Thread(target=lambda: done.append(predict_photos(predictor, [EXAMPLE], turns=turns)))
        normal.start()
        normal.join(120)
        assert done and done[0][0]["error"] is None  # finished while the big lane was busy
        heavy = threading.Thread(target=lambda: done.append(predict_photos(predictor, [big], turns=turns)))
        heavy.start()
        heavy.join(2)
        assert heavy.is_alive() and turns.large.waiting == 1  # the big photo waits for the big lane
    heavy.join(120)
    assert len(done) == 2 and done[1][0]["error"] is None


def _png16(path: Path, w: int, h: int) -> Path:
    ramp = np.repeat((np.arange(h, dtype=np.uint16)[:, None] * (65535 // max(h - 1, 1))), w, 1)
    Image.fromarray(ramp).save(path, compress_level=1)
    return path


def test_request_pixel_budget_refuses_photos_past_it_and_keeps_the_others(predictor, tmp_path):
    from demo.service import predict_photos

    big = [_png16(tmp_path / f"big{i}.png", 400, 300) for i in range(3)]  # 120,000 pixels each
    rows = predict_photos(predictor, [*big, EXAMPLE], max_pixels=300_000)
    assert [r["error"] is None for r in rows] == [True, True, False, True]
    assert rows[2]["error"].startswith("not decoded: it needs 0.12 megapixels and this request's photos already "
                                       "used 0.24 of the 0.3 megapixels one request may decode")


@pytest.mark.slow
def test_load_test_script_passes_with_a_small_load():
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "load_test.py"), "--clients", "2", "--requests", "2"],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["ok"] == 4 and result["failed"] == 0 and result["server_alive"] is True
    assert result["bad_files_reported"] > 0 and result["photos_predicted"] == 12
    assert result["p95_s"] >= result["p50_s"] > 0 and result["server_peak_rss_mb"] > 0


def test_results_table_shows_the_heading_only_when_the_model_predicts_it() -> None:
    from demo.results import results_table, to_csv

    row = {"file": "a.jpg", "region_name": "North", "region_prob": 0.9, "top_k": [], "latitude": 1.0,
           "longitude": 2.0, "error": None}
    without = results_table([{**row, "heading": None}], gps=False)
    assert "Heading (°)" not in without.columns
    with_heading = results_table([{**row, "heading": 271.6}], gps=False)
    assert with_heading["Heading (°)"].tolist() == [272.0]
    assert list(with_heading.columns[:7]) == ["File", "Region", "Probability", "Top-k regions", "Latitude",
                                              "Longitude", "Heading (°)"]
    assert "GPS latitude" not in with_heading.columns and "Problem" in with_heading.columns
    assert "heading" in to_csv([{**row, "heading": 271.6}]).splitlines()[0].split(",")


def test_model_tab_describes_local_matching_when_the_model_has_it():
    from dataclasses import replace

    from demo.ui import model_markdown
    from geomodel.predictor import Predictor

    info = Predictor.from_dir(BUNDLED_MODEL, device="cpu").info()
    cfg = config_from_args([], env={})
    assert "Local matching" not in model_markdown(info, cfg)  # the bundled model has no gallery
    region = {**info.metrics["region"], "accuracy": 0.5, "head_accuracy": 0.42, "gallery_size": 162}
    text = model_markdown(replace(info, metrics={**info.metrics, "region": region}), cfg)
    assert "| Local matching | against 162 labelled photos, ~27 per region (head alone: 42.0% on the hold-out, " \
           "with matching 50.0%); " in text
    region = {**region, "match_weight": 0.3}
    text = model_markdown(replace(info, metrics={**info.metrics, "region": region}), cfg)
    assert "~27 per region, weight 0.3 chosen on the hold-out (head alone: 42.0% on the hold-out, with matching " \
           "50.0%)" in text
    assert "`python -m train learning-curve` says how many |" in text
    assert "| Region accuracy (training hold-out) | 50.0% |" in text
    region = {**region, "match_weight": 0, "gallery_size": 0, "accuracy": 0.42,
              "fusion": [{"weight": 0.0, "accuracy": 0.42}, {"weight": 0.5, "accuracy": 0.4}]}
    text = model_markdown(replace(info, metrics={**info.metrics, "region": region}), cfg)
    assert "| Local matching | off: on the hold-out it did not beat the head alone (42.0%; best with matching " \
           "40.0%), so no gallery is stored" in text


def test_bundle_command_line_still_builds_the_committed_model(tmp_path):
    """`python -m demo.bundle` pins its settings: retuning the cpu-small preset must not change (or break) it."""
    from demo.bundle import get_args_parser as bundle_args, training_argv
    from geomodel.config import to_dict
    from geomodel.engine.checkpoint import load_checkpoint
    from train.cli import _configs, get_args_parser
    from train.presets import apply_preset

    names = tmp_path / "names.txt"
    names.write_text("\n".join(f"Region {i}" for i in range(1, 7)))
    argv = training_argv(tmp_path / "train.csv", tmp_path, tmp_path / "model", names, bundle_args().parse_args([]),
                         tmp_path / "cache")
    _, (region, _), (coords, _) = _configs(apply_preset(get_args_parser(), "fit", "cpu-small", argv))
    for built, name in ((region, "region.pt"), (coords, "coords.pt")):
        committed = load_checkpoint(BUNDLED_MODEL / name)["model_config"]
        built = to_dict(built)
        # settings this version still has (a renamed one, e.g. match_shortlist, is ignored at load too)
        same = {k for k in committed if k in built and k not in ("num_regions", "predict_heading", "backbone")}
        assert len(same) >= len(committed) - 4, name
        assert {k: built[k] for k in same} == {k: committed[k] for k in same}, name
    assert region.match_layers == []


def test_stopping_app_stops_the_background_validation_between_chunks():
    """At exit the explorer's thread is stopped and joined: a process ending while torch runs in a daemon
    thread is aborted ('terminate called without an active exception') and skips its clean-up."""
    import threading

    from demo.validation_job import ValidationJob

    chunks = []
    started = threading.Event()

    def compute(progress):
        for done in range(1, 1000):
            chunks.append(done)
            started.set()
            time.sleep(0.01)  # one chunk of photos being predicted
            progress(done, 1000)
        raise AssertionError("not stopped")

    job = ValidationJob(compute, total=1000)
    assert started.wait(10)
    assert job.stop(timeout=10) is True
    assert job.ready and job.result is None and "stopped" in job.problem
    assert len(chunks) < 1000
