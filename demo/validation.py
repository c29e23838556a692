"""The Validation explorer: predictions for a labelled set, computed once, viewed per region.

`ValidationSet.compute` runs the model over the set once (at app start-up); every view after
that (map, metrics, histogram, for all regions or one) comes from pure functions of the cached
frame, so a visitor never triggers model work here.
"""
from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
from demo.colours import accuracy_scale, error_scale
from demo.map_regions import RegionFill
from demo.maps import MapPoint, PlanOverlay, render_map, to_iframe
from demo.results import escape_markdown
from demo.thumbnails import ThumbnailFolder
from geomodel.data.images import load_image
from geomodel.data.labels import check_region_count, read_labels
from geomodel.data.paths import image_paths
from geomodel.errors import GeomodelError
from geomodel.geo import distance
from geomodel.predictor import Predictor, evaluate_frame

ALL_REGIONS = "All regions"
HISTOGRAM_BINS = 20
PREDICT_CHUNK = 64  # photos predicted between two progress reports


def read_validation_labels(predictor: Predictor, csv: str | Path, images: str | Path, *,
                           allow_outside: bool = False) -> pd.DataFrame:
    """The validation CSV, checked (against the model's regions, and every path inside `images`
    unless `allow_outside`) before any photo is predicted."""
    df = read_labels(csv, frame=predictor.frame)
    check_region_count(csv, df, predictor.num_regions)
    image_paths(df, images, csv, allow_outside=allow_outside)
    return df


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
    m = evaluate_frame(pred, num_regions, frame)
    return {"n": m["n_images"], "n_failed": m["n_failed"],
            **{k: m[k] for k in ("region_accuracy", "coord_mse", "mean_error", "median_error")}}


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


def histogram_frame(errors: Sequence[float], bin_width: float, *, bins: int = HISTOGRAM_BINS) -> pd.DataFrame:
    """Photos per error bin, for `gr.BarPlot(x="error", y="photos", x_bin=bin_width)`.

    One row per bin (`error` = the bin's lower edge), the last bin open-ended: a few huge errors
    (mislabelled photos) land there instead of stretching the axis.
    """
    e = np.asarray([x for x in errors if np.isfinite(x)], dtype=np.float64)
    idx = np.minimum((e // bin_width).astype(np.int64), bins - 1) if len(e) else np.zeros(0, np.int64)
    counts = np.bincount(idx, minlength=bins)[:bins]
    return pd.DataFrame({"error": np.arange(bins) * float(bin_width), "photos": counts.astype(np.int64)})


def histogram_bin_width(errors: Sequence[float], bins: int = HISTOGRAM_BINS) -> float:
    """A round bin width whose `bins` bins cover the errors up to their 98th percentile (the same for
    every region's view, so that the views compare)."""
    e = np.asarray([x for x in errors if np.isfinite(x)], dtype=np.float64)
    top = float(np.quantile(e, 0.98)) if len(e) else 1.0
    raw = max(top, 1e-9) / bins
    mag = 10 ** np.floor(np.log10(raw))
    return float(next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw))


def region_fills(pred: pd.DataFrame, region_names: Sequence[str], frame: str, unit: str) -> list[RegionFill]:
    """The explorer's region shadings: accuracy and median error per (true) region, over the whole set.

    Clicking a region shows its popup: its confusion row (which regions its photos were
    predicted as), accuracy and median error. Names are escaped here.
    """
    m = evaluate_frame(pred, len(region_names), frame)
    acc, med = m["per_region_accuracy"], m["per_region_median_error"]
    popups = [confusion_popup(i, region_names, m["confusion"][i], acc[i], med[i], unit)
              for i in range(len(region_names))]
    return [RegionFill("Accuracy", acc, accuracy_scale(), popups=popups),
            RegionFill("Median error", med, error_scale(med, unit, caption="Median error"), popups=popups)]


def confusion_popup(i: int, region_names: Sequence[str], row: Sequence[int], accuracy: float | None,
                    median: float | None, unit: str) -> str:
    """Region i's popup (HTML, every name escaped): its photos, accuracy, median error, and what
    the wrongly placed ones were taken for (its confusion row, largest first)."""
    esc = html.escape
    total = int(sum(row))
    head = f'<div class="gm-name">{i + 1} · {esc(region_names[i])}</div>'
    if total == 0:
        return f'<div class="gm-popup gm-confusion">{head}No validation photos here.</div>'
    stats = (f"<div>{total} photo{'s' if total != 1 else ''} · accuracy <b>{accuracy:.0%}</b> · median error "
             f"<b>{median:,.1f}</b> {esc(unit)}</div>")
    wrong = sorted(((int(c), j) for j, c in enumerate(row) if j != i and c), reverse=True)
    if not wrong:
        return f'<div class="gm-popup gm-confusion">{head}{stats}<div>All recognised.</div></div>'
    rows = "".join(f"<tr><td>{j + 1} · {esc(region_names[j])}</td><td>{c}</td><td>{c / total:.0%}</td></tr>"
                   for c, j in wrong)
    return (f'<div class="gm-popup gm-confusion">{head}{stats}<div>Mistaken for:</div>'
            f"<table>{rows}</table></div>")


@dataclass
class ValidationView:
    """What the explorer shows for one filter choice."""

    map_html: str
    summary: str
    histogram: pd.DataFrame  # see histogram_frame


@dataclass
class ValidationSet:
    """A labelled set's predictions, computed once, and its views per region."""

    pred: pd.DataFrame  # predict_frame output + distance
    region_names: list[str]
    frame: str
    unit: str
    plan: PlanOverlay | None = None
    thumbnails: dict[str, str] = field(default_factory=dict)  # file name -> served thumbnail URL
    map_height: int = 560
    regions: dict | None = None  # regions.geojson of the model, drawn and shaded when known
    _views: dict[int | None, ValidationView] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.bin_width = histogram_bin_width(self.pred["distance"].to_numpy())
        self.fills = region_fills(self.pred, self.region_names, self.frame, self.unit) if self.regions is not None else []

    @classmethod
    def compute(cls, predictor: Predictor, csv: str | Path | pd.DataFrame, images: str | Path, *,
                plan: PlanOverlay | None = None, map_height: int = 560, regions: dict | None = None,
                thumbnails: ThumbnailFolder | None = None,
                progress: Callable[[int, int], None] | None = None,
                allow_outside: bool = False) -> "ValidationSet":
        """Predict the whole set (the only model work here) and pre-render every view.

        `csv`: the labels CSV, or its frame already read by `read_validation_labels`. With
        `thumbnails`, each photo's thumbnail is written there once and the popups link to it
        (the browser loads it when the popup opens); without, the popups have none.
        `progress(done, total)` is called after every chunk of photos. Rows naming files outside
        `images` are refused (a DataError) unless `allow_outside`.
        """
        df = (csv if isinstance(csv, pd.DataFrame)
              else read_validation_labels(predictor, csv, images, allow_outside=allow_outside))
        csv_name = "labels CSV" if isinstance(csv, pd.DataFrame) else csv
        parts = []
        for start in range(0, len(df), PREDICT_CHUNK):
            parts.append(predictor.predict_frame(df.iloc[start:start + PREDICT_CHUNK], images, progress=False,
                                                 csv=csv_name, allow_outside=allow_outside))
            if progress is not None:
                progress(min(start + PREDICT_CHUNK, len(df)), len(df))
        pred = add_errors(pd.concat(parts) if parts else predictor.predict_frame(df, images, progress=False),
                          predictor.frame)
        thumbs = {}
        if thumbnails is not None:
            side = 2 * thumbnails.max_px  # JPEGs decode at reduced scale: several times faster than in full
            for name in pred.loc[pred["error"].isna(), "filename"]:
                try:
                    thumbs[str(name)] = thumbnails.add(load_image(Path(images) / name, draft=(side, side)))
                except GeomodelError:
                    pass
        vs = cls(pred, predictor.region_names, predictor.frame, predictor.info().error_unit, plan, thumbs,
                 map_height, regions)
        for region in [None, *range(1, predictor.num_regions + 1)]:
            vs.view(region)
        return vs

    def view(self, region_id: int | None) -> ValidationView:
        if region_id not in self._views:
            part = subset(self.pred, region_id)
            label = ALL_REGIONS if region_id is None else f"Region {region_id} · {self.region_names[region_id - 1]}"
            m = metrics(part, len(self.region_names), self.frame)
            html_doc = render_map(validation_points(part, self.region_names, self.thumbnails), frame=self.frame,
                                  plan=self.plan, error_unit=self.unit, title=f"Validation: {label}",
                                  regions=self.regions, region_fills=self.fills)
            self._views[region_id] = ValidationView(
                to_iframe(html_doc, height=self.map_height), metrics_markdown(m, self.unit, label),
                histogram_frame(part["distance"].to_numpy(), self.bin_width))
        return self._views[region_id]
