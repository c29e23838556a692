"""An evaluation report that shows where a model fails: per-region table, confusion picture, worst photos.

The report is a self-contained folder with `index.html`; the confusion matrix is a PNG drawn
with matplotlib (`geomodel.charts`).
"""
from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from geomodel.charts import confusion_figure, save_png
from geomodel.data.images import load_image
from geomodel.geo import distance


def worst_photos(pred: pd.DataFrame, frame: str, k: int = 12) -> pd.DataFrame:
    """The k predictions with the largest distance error (wrong regions first)."""
    ok = pred[pred["error"].isna()].copy()
    ok["distance"] = distance(frame, ok["latitude"], ok["longitude"], ok["pred_latitude"], ok["pred_longitude"])
    ok["wrong_region"] = ok["Region_ID"] != ok["pred_region_id"]
    return ok.sort_values(["wrong_region", "distance"], ascending=False).head(k)


def write_report(pred: pd.DataFrame, metrics: dict, region_names: Sequence[str], out_dir: str | Path, *,
                 images_dir: str | Path, frame: str | None = None, k: int = 12) -> Path:
    """Write `out_dir/index.html` (+ confusion.png, thumbnails, metrics.json); returns the index path."""
    out = Path(out_dir)
    (out / "thumbs").mkdir(parents=True, exist_ok=True)
    frame = frame or ("wgs84" if metrics.get("error_unit") == "m" else "planar")
    labels = [f"{i + 1} {n}" for i, n in enumerate(region_names)]
    save_png(confusion_figure(metrics["confusion"], labels), out / "confusion.png")
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str))
    unit = html.escape(str(metrics.get("error_unit", "")))
    support = np.asarray(metrics["confusion"]).sum(axis=1)
    rows = "".join(
        f"<tr><td>{i + 1}</td><td>{html.escape(name)}</td><td>{int(support[i])}</td>"
        f"<td>{'' if acc is None else f'{acc:.0%}'}</td>"
        f"<td>{'' if med is None else f'{med:,.1f}'}</td></tr>"
        for i, (name, acc, med) in enumerate(zip(region_names, metrics["per_region_accuracy"],
                                                 metrics["per_region_median_error"])))
    cards = []
    for n, (_, r) in enumerate(worst_photos(pred, frame, k).iterrows()):
        thumb = f"thumbs/{n:02d}.jpg"
        try:
            img = load_image(Path(images_dir) / r["filename"])
            img.thumbnail((160, 160))
            img.save(out / thumb, quality=85)
        except Exception:  # noqa: BLE001 - a missing thumbnail must not sink the report
            thumb = ""
        true_name = region_names[int(r["Region_ID"]) - 1]
        pred_name = region_names[int(r["pred_region_id"]) - 1]
        cards.append(
            f"<figure>{f'<img src={thumb!r}>' if thumb else ''}<figcaption><b>{html.escape(str(r['filename']))}"
            f"</b><br>true: {html.escape(true_name)}<br>predicted: {html.escape(pred_name)} "
            f"({r['pred_region_prob']:.0%})<br>error: {r['distance']:,.1f} {unit}</figcaption></figure>")
    failed = "".join(f"<li>{html.escape(str(f['filename']))}: {html.escape(str(f['error']))}</li>"
                     for f in metrics.get("failed", []))
    page = f"""<!doctype html><meta charset="utf-8"><title>geomodel evaluation</title>
<style>body{{font:14px sans-serif;margin:24px}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;
padding:3px 8px;text-align:right}}figure{{display:inline-block;width:170px;vertical-align:top;margin:6px}}
figure img{{max-width:160px}}</style>
<h1>Evaluation</h1>
<p>{metrics['n_images']} photos ({metrics['n_failed']} unreadable) · region accuracy
<b>{metrics['region_accuracy']:.1%}</b> · coordinate MSE <b>{metrics['coord_mse']:,.0f}</b> {unit}² ·
median error <b>{metrics['median_error']:,.1f}</b> {unit} · mean error {metrics['mean_error']:,.1f} {unit}</p>
<h2>Per region</h2><table><tr><th>id</th><th>region</th><th>photos</th><th>accuracy</th>
<th>median error ({unit})</th></tr>{rows}</table>
<h2>Confusion matrix</h2><img src="confusion.png" alt="confusion matrix">
<h2>Worst photos</h2>{''.join(cards)}
{f'<h2>Unreadable</h2><ul>{failed}</ul>' if failed else ''}"""
    index = out / "index.html"
    index.write_text(page)
    return index
