"""Charts written to files: the evaluation report's confusion matrix and the learning curve.

Drawn with matplotlib's object API (`Figure` + the Agg canvas): no pyplot, so no global figure
state and no GUI backend, and importing this module does not import matplotlib. User text
(region names) is drawn with math parsing off, so `$...$` in a name stays literal.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DPI = 100


def _figure(width: float, height: float) -> "Figure":
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_png(fig: "Figure", path: str | Path) -> Path:
    """Write the figure as a PNG (the size it was made with, `DPI` dots per inch)."""
    path = Path(path)
    fig.savefig(path, format="png", dpi=DPI)
    return path


def confusion_figure(confusion: Sequence[Sequence[int]], labels: Sequence[str]) -> "Figure":
    """Confusion matrix: rows = true region, columns = predicted; colour = share of the row, text = count."""
    m = np.asarray(confusion, dtype=np.int64)
    n = len(m)
    share = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
    longest = max((len(s) for s in labels), default=1)
    side = 1.2 + 0.42 * n
    fig = _figure(side + 0.075 * min(longest, 28) + 1.2, side + 0.9)
    ax = fig.add_subplot()
    image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    for i in range(n):
        for j in range(n):
            if m[i, j]:
                ax.text(j, i, str(m[i, j]), ha="center", va="center", fontsize=8,
                        color="white" if share[i, j] > 0.55 else "black")
    ax.set_xticks(range(n), [str(i + 1) for i in range(n)], fontsize=8)
    ax.set_yticks(range(n), [_short(s) for s in labels], fontsize=8)
    for t in ax.get_yticklabels():
        t.set_parse_math(False)
    ax.set_xlabel("predicted region")
    ax.set_ylabel("true region")
    ax.set_title("Confusion matrix (counts)", fontsize=10)
    fig.colorbar(image, ax=ax, shrink=0.8, label="share of the true region's photos")
    return fig


def learning_curve_figure(result: dict) -> "Figure":
    """Measured accuracy per photos-per-region (with its spread over draws), the fitted line, the target."""
    points = result["points"]
    target, needed, fit = result["target_accuracy"], result["photos_per_region_for_target"], result["fit"]
    fig = _figure(6.4, 4.2)
    ax = fig.add_subplot()
    x = [p["photos_per_region"] for p in points]
    ax.errorbar(x, [p["accuracy"] for p in points], yerr=[p["accuracy_std"] for p in points], fmt="o",
                color="#1e3c8c", capsize=3, label="measured (leave-one-out)")
    ax.plot(x, [p["top3_accuracy"] for p in points], "s", color="#7f9ed8", markersize=4, label="top-3")
    xs = x + ([needed] if needed else [])
    lo = 2 ** math.floor(math.log2(max(min(xs), 0.5)))
    hi = 2 ** math.ceil(math.log2(max(max(xs), lo * 2)))
    if fit:
        grid = np.geomspace(lo, hi, 50)
        ax.plot(grid, fit["intercept"] + fit["slope_per_doubling"] * np.log2(grid), "--", color="#4670c8",
                label=f"fit: {fit['slope_per_doubling']:+.1%} per doubling")
    ax.axhline(target, color="#c82828", linewidth=1.5, label=f"target {target:.0%}")
    ax.axhline(result["chance_accuracy"], color="#999999", linewidth=1,
               label=f"largest region alone {result['chance_accuracy']:.0%}")
    if needed:
        ax.plot([needed], [target], "o", markerfacecolor="none", markeredgecolor="#c82828", markersize=9)
        ax.annotate(f"~{needed:.0f} photos", (needed, target), textcoords="offset points", xytext=(0, -16),
                    ha="center", color="#c82828", fontsize=9)
    ax.set_xscale("log", base=2)
    ax.set_xlim(lo, hi)
    ax.xaxis.set_major_formatter(lambda v, _: f"{v:g}")
    ax.set_ylim(0, 1)
    ax.yaxis.set_major_formatter(lambda v, _: f"{v:.0%}")
    ax.grid(True, color="#e8e8e8")
    ax.set_xlabel("labelled photos per region (log scale)")
    ax.set_ylabel("region accuracy")
    ax.set_title(f"Leave-one-out matching accuracy, {result['photos']} photos, {result['regions']} regions",
                 fontsize=10)
    ax.legend(loc="upper left", fontsize=8)
    return fig


def _short(label: str, width: int = 28) -> str:
    return label if len(label) <= width else label[:width - 1] + "…"


def regions_figure(panels: Sequence[tuple[str, object, np.ndarray, np.ndarray, np.ndarray]]) -> "Figure":
    """Side-by-side maps of region polygons with the photos coloured by region.

    Each panel is (title, `geomodel.regions.Regions`, latitudes, longitudes, 1-based region ids;
    0: a photo left out, drawn as a black cross). Longitude across, latitude up, equal scales.
    """
    import shapely
    from matplotlib import colormaps

    colours = colormaps["tab20"]
    fig = _figure(4.2 * len(panels), 3.8)
    for k, (title, regions, lat, lon, ids) in enumerate(panels, start=1):
        ax = fig.add_subplot(1, len(panels), k)
        for i, geom in enumerate(regions.geometries):
            for part in shapely.get_parts(geom):
                x, y = part.exterior.xy
                ax.fill(x, y, color=colours(i % 20), alpha=0.3, linewidth=0)
                ax.plot(x, y, color="0.25", linewidth=0.6)
        ids = np.asarray(ids)
        inside = ids > 0
        ax.scatter(np.asarray(lon)[inside], np.asarray(lat)[inside], s=9, linewidths=0.3, edgecolors="0.2",
                   c=[colours((r - 1) % 20) for r in ids[inside]])
        ax.scatter(np.asarray(lon)[~inside], np.asarray(lat)[~inside], s=18, marker="x", color="black")
        (south, west), (north, east) = regions.bounds
        pad = 0.04 * max(north - south, east - west)
        ax.set_xlim(west - pad, east + pad)
        ax.set_ylim(south - pad, north + pad)
        ax.set_aspect("equal")
        ax.set_title(title, fontsize=10, parse_math=False)
        ax.tick_params(labelsize=7)
    return fig
