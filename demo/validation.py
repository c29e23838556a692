"""The Validation explorer: predictions for a labelled set, computed once, viewed per region.

`ValidationSet.compute` runs the model over the set once (at app start-up); every view after
that (map, metrics, histogram, for all regions or one) comes from pure functions of the cached
frame, so a visitor never triggers model work here.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFont

from demo.maps import MapPoint, PlanOverlay, render_map, thumbnail_data_uri, to_iframe
from demo.results import escape_markdown
from geomodel.data.images import load_image
from geomodel.data.labels import check_region_count, read_labels
from geomodel.errors import GeomodelError
from geomodel.geo import distance
from geomodel.metrics import coord_metrics, region_metrics
from geomodel.predictor import Predictor

ALL_REGIONS = "All regions"


def region_choices(region_names: Sequence[str]) -> list[str]:
    """Filter choices: everything, then `3 · Arts court` per region (ids are 1-based)."""
    return [ALL_REGIONS] + [f"{i + 1} · {name}" for i, name in enumerate(region_names)]


def region_of_choice(choice: str | None, region_names: Sequence[str]) -> int | None:
    """1-based region id of a filter choice; None for all regions (or anything unknown)."""
    choices = region_choices(region_names)
    return choices.index(choice) if choice in choices and choice != ALL_REGIONS else None


def add_errors(pred: pd.DataFrame, frame: str) -> pd.DataFrame:
    """`Predictor.predict_frame` output plus `distance` (prediction -> truth; NaN where it failed)."""
    out = pred.copy()
    ok = out["error"].isna()
    d = np.full(len(out), np.nan)
    if ok.any():
        t, p = out.loc[ok, ["latitude", "longitude"]], out.loc[ok, ["pred_latitude", "pred_longitude"]]
        d[ok.to_numpy()] = distance(frame, t["latitude"], t["longitude"], p["pred_latitude"], p["pred_longitude"])
    out["distance"] = d
    return out


def subset(pred: pd.DataFrame, region_id: int | None) -> pd.DataFrame:
    """Rows whose TRUE region is `region_id` (1-based), or all rows."""
    return pred if region_id is None else pred[pred["Region_ID"] == region_id]


def metrics(pred: pd.DataFrame, num_regions: int, frame: str) -> dict:
    """Region accuracy, coordinate MSE (0.5*(MSE_lat+MSE_lon)), mean/median error of the rows."""
    ok = pred[pred["error"].isna()]
    out = {"n": int(len(pred)), "n_failed": int(len(pred) - len(ok))}
    if ok.empty:
        return {**out, "region_accuracy": float("nan"), "coord_mse": float("nan"), "mean_error": float("nan"),
                "median_error": float("nan")}
    reg = region_metrics(ok["Region_ID"].to_numpy(np.int64) - 1, ok["pred_region_id"].to_numpy(np.int64) - 1,
                         num_regions)
    crd = coord_metrics(ok[["latitude", "longitude"]].to_numpy(np.float64),
                        ok[["pred_latitude", "pred_longitude"]].to_numpy(np.float64), frame)
    return {**out, "region_accuracy": reg["region_accuracy"], "coord_mse": crd["coord_mse"],
            "mean_error": crd["mean_error"], "median_error": crd["median_error"]}


def metrics_markdown(m: dict, unit: str, label: str = ALL_REGIONS) -> str:
    """The summary shown above the map."""
    failed = f" ({m['n_failed']} could not be read)" if m["n_failed"] else ""
    lines = [f"**{escape_markdown(label)}: {m['n']} validation photo{'s' if m['n'] != 1 else ''}**{failed}", ""]
    if m["n"] - m["n_failed"] > 0:
        lines += ["| Metric | Value |", "|---|---|",
                  f"| Region accuracy | {m['region_accuracy']:.1%} |",
                  f"| Coordinate MSE, 0.5·(MSE_lat + MSE_lon) | {m['coord_mse']:,.2f} {unit}² |",
                  f"| Median error | {m['median_error']:,.1f} {unit} |",
                  f"| Mean error | {m['mean_error']:,.1f} {unit} |"]
    return "\n".join(lines)


def validation_points(pred: pd.DataFrame, region_names: Sequence[str],
                      thumbnails: dict[str, str] | None = None) -> list[MapPoint]:
    """A map point per predicted photo: prediction, truth, error line, popup with thumbnail."""
    thumbnails = thumbnails or {}
    points = []
    for row in pred[pred["error"].isna()].itertuples(index=False):
        points.append(MapPoint(
            name=str(row.filename), lat=row.pred_latitude, lon=row.pred_longitude,
            region=region_names[int(row.pred_region_id) - 1], true_lat=row.latitude, true_lon=row.longitude,
            true_region=region_names[int(row.Region_ID) - 1], error=row.distance,
            thumbnail=thumbnails.get(str(row.filename)),  # the popup says whether the region is right
        ))
    return points


def error_histogram(errors: Sequence[float], unit: str, *, bins: int = 20, size: tuple[int, int] = (560, 260),
                    title: str = "Coordinate error") -> Image.Image:
    """A bar chart of the errors as a PIL image (no plotting library needed)."""
    e = np.asarray([x for x in errors if np.isfinite(x)], dtype=np.float64)
    w, h = size
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    font = _font(12)
    left, right, top, bottom = 48, 24, 26, 36
    draw.line([(left, h - bottom), (w - right, h - bottom)], fill="#444")
    draw.line([(left, top), (left, h - bottom)], fill="#444")
    if len(e) == 0:
        draw.text((left, 6), f"{title} ({unit}): no photos", fill="#222", font=font)
        return img
    hi = float(np.max(e)) if np.max(e) > 0 else 1.0
    counts, edges = np.histogram(e, bins=bins, range=(0.0, hi))
    plot_w, plot_h = w - left - right, h - top - bottom
    peak = max(int(counts.max()), 1)
    median = float(np.median(e))
    for i, c in enumerate(counts):
        x0 = left + plot_w * i / bins
        x1 = left + plot_w * (i + 1) / bins
        y0 = h - bottom - plot_h * c / peak
        if c:
            draw.rectangle([x0 + 1, y0, x1 - 1, h - bottom - 1], fill="#1f77b4")
    xm = left + plot_w * median / hi
    draw.line([(xm, top), (xm, h - bottom)], fill="#d73027", width=2)
    head = f"{title} ({unit}), n = {len(e)}, "
    draw.text((left, 6), head, fill="#222", font=font)
    draw.text((left + draw.textlength(head, font=font), 6), f"median {median:,.1f}", fill="#d73027", font=font)
    for frac in (0.0, 0.25, 0.5, 0.75, 1.0):
        x = left + plot_w * frac
        draw.line([(x, h - bottom), (x, h - bottom + 4)], fill="#444")
        draw.text((x, h - bottom + 6), f"{hi * frac:,.0f}", fill="#444", font=font, anchor="ma")
    for count in sorted({0, peak // 2, peak}):  # whole photo counts only
        y = h - bottom - plot_h * count / peak
        draw.text((left - 6, y), str(count), fill="#444", font=font, anchor="rm")
    draw.text((w // 2, h - 4), f"error ({unit})", fill="#444", font=font, anchor="md")
    return img


@dataclass
class ValidationView:
    """What the explorer shows for one filter choice."""

    map_html: str
    summary: str
    histogram: Image.Image


@dataclass
class ValidationSet:
    """A labelled set's predictions, computed once, and its views per region."""

    pred: pd.DataFrame  # predict_frame output + distance
    region_names: list[str]
    frame: str
    unit: str
    plan: PlanOverlay | None = None
    thumbnails: dict[str, str] = field(default_factory=dict)
    map_height: int = 560
    _views: dict[int | None, ValidationView] = field(default_factory=dict, repr=False)

    @classmethod
    def compute(cls, predictor: Predictor, csv: str | Path, images: str | Path, *,
                plan: PlanOverlay | None = None, map_height: int = 560) -> "ValidationSet":
        """Predict the whole set (the only model work here) and pre-render every view."""
        df = read_labels(csv)
        check_region_count(csv, df, predictor.num_regions)
        pred = add_errors(predictor.predict_frame(df, images, progress=False), predictor.frame)
        thumbs = {}
        for name in pred.loc[pred["error"].isna(), "filename"]:
            try:
                thumbs[str(name)] = thumbnail_data_uri(load_image(Path(images) / name), max_px=96)
            except GeomodelError:
                pass
        vs = cls(pred, predictor.region_names, predictor.frame, predictor.info().error_unit, plan, thumbs,
                 map_height)
        for region in [None, *range(1, predictor.num_regions + 1)]:
            vs.view(region)
        return vs

    def view(self, region_id: int | None) -> ValidationView:
        if region_id not in self._views:
            part = subset(self.pred, region_id)
            label = ALL_REGIONS if region_id is None else f"Region {region_id} · {self.region_names[region_id - 1]}"
            m = metrics(part, len(self.region_names), self.frame)
            html_doc = render_map(validation_points(part, self.region_names, self.thumbnails), frame=self.frame,
                                  plan=self.plan, error_unit=self.unit, title=f"Validation: {label}")
            self._views[region_id] = ValidationView(
                to_iframe(html_doc, height=self.map_height), metrics_markdown(m, self.unit, label),
                error_histogram(part["distance"].to_numpy(), self.unit, title=f"Error, {label}"))
        return self._views[region_id]


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # Pillow built without FreeType
        return ImageFont.load_default()
