"""Colour scales and their legends for the maps, from `branca.colormap` (folium's own dependency).

A `ColourScale` maps numbers to colours with a branca `LinearColormap` (ColorBrewer schemes) and
draws its legend: the colour bar is the colormap sampled across its range, the ticks are chosen
to be readable numbers. Values that are unknown (None, NaN) get `NO_DATA`.
"""
from __future__ import annotations

import html
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from branca.colormap import LinearColormap, linear

NO_DATA = "#bdbdbd"  # regions without a value (no photos, no prediction)
_LEGEND_STOPS = 11  # samples of the colormap in a legend's colour bar


@dataclass(frozen=True)
class ColourScale:
    """Numbers -> colours (a branca colormap), with how the legend shows them."""

    colormap: LinearColormap
    caption: str  # legend title; plain text (escaped when drawn)
    ticks: tuple[float, ...]  # values labelled under the colour bar
    fmt: Callable[[float], str] = lambda v: f"{v:g}"  # tick and tooltip text of a value

    def colour(self, value: float | None) -> str:
        """`#rrggbb` for `value` (clipped to the scale's range); `NO_DATA` when it is unknown."""
        if value is None or not math.isfinite(float(value)):
            return NO_DATA
        return self.colormap.rgb_hex_str(float(value))

    def colours(self, values: Sequence[float | None]) -> list[str]:
        return [self.colour(v) for v in values]

    def text(self, value: float | None) -> str:
        """The value as the legend writes it ("–" when unknown)."""
        return "–" if value is None or not math.isfinite(float(value)) else self.fmt(float(value))

    def legend_html(self, *, no_data: bool = False, elem_id: str | None = None) -> str:
        """The caption, the colour bar and the ticks, as an HTML fragment (all text escaped)."""
        lo, hi = self.colormap.vmin, self.colormap.vmax
        stops = ",".join(self.colormap.rgb_hex_str(lo + (hi - lo) * i / (_LEGEND_STOPS - 1))
                         for i in range(_LEGEND_STOPS))
        ticks = "".join(f'<span style="left:{x:.1f}%">{html.escape(self.fmt(t))}</span>'
                        for t, x in _spaced_ticks(self.ticks, lo, hi))
        extra = (f'<div class="gm-nodata"><span style="background:{NO_DATA}"></span>no data</div>'
                 if no_data else "")
        ident = f' id="{html.escape(elem_id, quote=True)}"' if elem_id else ""
        return (f'<div class="gm-scale"{ident}><div class="gm-sub">{html.escape(self.caption)}</div>'
                f'<div class="gm-bar" style="background:linear-gradient(to right,{stops})"></div>'
                f'<div class="gm-ticks">{ticks}</div>{extra}</div>')


def _spaced_ticks(ticks: Sequence[float], lo: float, hi: float, gap: float = 25.0) -> list[tuple[float, float]]:
    """(value, % along the bar) of the ticks to write: both ends, and the inner ones at least `gap` %
    from every other written one (a median near one end would print over that end's label)."""
    placed = [(t, 100 * (t - lo) / (hi - lo) if hi > lo else 0.0) for t in ticks]
    if len(placed) <= 2:
        return placed
    shown = [placed[0]]
    for t, x in placed[1:-1]:
        if x - shown[-1][1] >= gap and placed[-1][1] - x >= gap:
            shown.append((t, x))
    return shown + [placed[-1]]


def _percent(v: float) -> str:
    return f"{v:.0%}"


def probability_scale(caption: str = "Probability") -> ColourScale:
    """0..1, light yellow -> dark red: where the model believes the photo was taken."""
    return ColourScale(linear.YlOrRd_09.scale(0.0, 1.0), caption, (0.0, 0.25, 0.5, 0.75, 1.0), _percent)


def accuracy_scale(caption: str = "Region accuracy") -> ColourScale:
    """0..1, red (never right) -> yellow -> green (always right)."""
    return ColourScale(linear.RdYlGn_11.scale(0.0, 1.0), caption, (0.0, 0.25, 0.5, 0.75, 1.0), _percent)


def error_scale(values: Sequence[float | None], unit: str = "", *, caption: str = "Error",
                quantiles: tuple[float, float, float] | None = None) -> ColourScale:
    """Errors, green (small) -> yellow -> red (large).

    The range is 0..max of the known values, with yellow halfway; with `quantiles=(0.05, 0.5,
    0.95)` it is those quantiles, with yellow at the middle one (so that a few huge errors, such
    as mislabelled photos kilometres away, do not wash out the rest).
    """
    known = np.asarray([v for v in values if v is not None and math.isfinite(float(v))], dtype=float)
    if quantiles is not None and len(known):
        lo, mid, hi = (float(q) for q in np.quantile(known, quantiles))
    else:
        lo, hi = 0.0, float(known.max()) if len(known) else 1.0
        mid = hi / 2
    if hi <= lo:  # all errors equal: any colour will do, the scale must not be empty
        hi = lo + max(abs(lo) * 0.01, 1e-9)
        mid = (lo + hi) / 2
    mid = min(max(mid, lo), hi)
    colours = list(reversed(linear.RdYlGn_11.colors))  # 11 stops, yellow in the middle
    index = list(np.linspace(lo, mid, 6)) + list(np.linspace(mid, hi, 6))[1:]
    index = list(np.maximum.accumulate(index))  # branca needs a sorted index
    cmap = LinearColormap(colours, index=index, vmin=lo, vmax=hi)
    title = f"{caption} ({unit})" if unit else caption
    ticks = (lo, mid, hi) if quantiles is not None else tuple(_nice_ticks(lo, hi))
    return ColourScale(cmap, title, ticks, _number)


def count_scale(top: float, caption: str = "Photos") -> ColourScale:
    """0..top, white -> dark blue: how many photos fall in each region."""
    top = max(float(top), 1.0)
    return ColourScale(linear.Blues_09.scale(0.0, top), caption, tuple(_nice_ticks(0.0, top)), _number)


def region_colours(n: int) -> list[str]:
    """``n`` distinct ``#rrggbb`` colours, one per region: ColorBrewer's Set1 (without its yellow,
    too faint over a map), then Dark2, 16 in all, repeating beyond that."""
    palette = [_hex(c) for c in (*linear.Set1_09.colors, *linear.Dark2_08.colors)]
    palette = [c for c in palette if c != "#ffff33"]
    return [palette[i % len(palette)] for i in range(n)]


def _hex(rgba: Sequence[float]) -> str:
    return "#" + "".join(f"{round(255 * v):02x}" for v in rgba[:3])


def _number(x: float) -> str:
    return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.3g}" if abs(x) < 10 else f"{x:.1f}".rstrip("0").rstrip(".")


def _nice_ticks(lo: float, hi: float, n: int = 4) -> list[float]:
    """Round numbers between lo and hi (both ends included), about n of them."""
    raw = (hi - lo) / max(n, 1)
    mag = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1.0
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step) * step
    ticks = [lo] + [t for t in np.arange(first, hi, step) if lo + step / 4 < t < hi - step / 4] + [hi]
    return [float(t) for t in ticks]
