"""The evaluation report: per-region table, confusion picture, worst photos, escaped names."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
from PIL import Image

from geomodel.predictor import evaluate_frame
from geomodel.charts import confusion_figure
from geomodel.report import worst_photos, write_report


def _predictions(tmp_path: Path) -> pd.DataFrame:
    names = ["a.png", "<img src=x onerror=alert(1)>.png", "c.png", "d.png"]
    for n in names:
        Image.new("RGB", (20, 20), (10, 200, 30)).save(tmp_path / n)
    return pd.DataFrame({
        "filename": names, "latitude": [0.0, 0.0, 10.0, 10.0], "longitude": [0.0, 0.0, 10.0, 10.0],
        "Region_ID": [1, 1, 2, 2], "pred_region_id": [1, 2, 2, None], "pred_region_prob": [0.9, 0.6, 0.8, None],
        "pred_latitude": [1.0, 9.0, 10.0, None], "pred_longitude": [0.0, 9.0, 10.0, None],
        "error": [None, None, None, "d.png: image is truncated or corrupt"]})


def test_report_shows_failures(tmp_path: Path) -> None:
    pred = _predictions(tmp_path)
    metrics = evaluate_frame(pred, num_regions=2, frame="planar")
    assert metrics["n_failed"] == 1 and metrics["region_accuracy"] == 2 / 3
    index = write_report(pred, metrics, ["North", "South"], tmp_path / "rep", images_dir=tmp_path)
    page = index.read_text()
    assert "<img src=x onerror" not in page and "&lt;img src=x onerror=alert(1)&gt;.png" in page
    assert "66.7%" in page and "truncated or corrupt" in page
    chart = Image.open(tmp_path / "rep" / "confusion.png")
    assert chart.format == "PNG" and chart.size[0] > 300 and chart.size[1] > 250
    assert len(list((tmp_path / "rep" / "thumbs").iterdir())) == 3
    worst = worst_photos(pred, "planar", k=2)
    assert worst["filename"].iloc[0].startswith("<img")  # the wrong-region photo comes first


def test_confusion_chart_shows_counts_shares_and_names_as_text() -> None:
    names = ["1 North", "2 $x^2$ <b>South</b>"]
    fig = confusion_figure([[3, 1], [0, 2]], names)
    ax = fig.axes[0]
    assert ax.get_xlabel() == "predicted region" and ax.get_ylabel() == "true region"
    assert [t.get_text() for t in ax.get_yticklabels()] == names  # no math parsing of user text
    assert sorted(t.get_text() for t in ax.texts) == ["1", "2", "3"]  # counts; zero cells stay blank
    shares = ax.images[0].get_array()
    assert shares.tolist() == [[0.75, 0.25], [0.0, 1.0]]  # colour = share of the true region's photos
    big = confusion_figure([[1] * 15] * 15, [f"r{i}" for i in range(15)])
    assert big.get_size_inches()[1] > fig.get_size_inches()[1]
