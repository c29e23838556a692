"""Pure Folium map builders for the demo: plain data in, an HTML string out.

The maps must work offline inside a sandboxed ``<iframe srcdoc>``, so Leaflet's JS/CSS are
inlined from the ``xstatic-leaflet`` package and folium's CDN links (leaflet, jquery, bootstrap,
awesome-markers, font-awesome) are dropped. Only ``CircleMarker``/``PolyLine`` are used, since
icon markers need the dropped assets.

Security: folium's ``Popup``/``Tooltip`` put their text into JS template literals (``${...}``
runs) and re-parse it as a Jinja template (``{{ ... }}`` runs on the server). User-controlled
strings therefore never go through them: popups and tooltips are bound by ``_BindPopup``, which
HTML-escapes them, JSON-encodes them with ``<``/``>``/``&`` escaped, and emits raw script text.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Sequence

import folium
import numpy as np
from branca.element import Element, MacroElement
from folium.template import tojavascript
from PIL import Image

PRED_COLOUR = "#1f77b4"
TRUE_COLOUR = "#9b2fae"
LINE_COLOUR = "#666666"  # error lines when not coloured by error, or error unknown
ERROR_STOPS = ("#1a9850", "#e6b800", "#d73027")  # green -> yellow -> red
ERROR_QUANTILES = (0.05, 0.5, 0.95)  # error quantiles mapped onto ERROR_STOPS
MAX_PLAN_PX = 2048  # larger plans are downscaled: the whole PNG travels in the srcdoc
_FONT_SIZE = "13px"  # Leaflet controls; folium's default 1rem makes the layer list bulky
_THUMB_RE = re.compile(r"data:image/(?:jpeg|png|webp|gif);base64,[A-Za-z0-9+/]+=*")

Bounds = tuple[tuple[float, float], tuple[float, float]]


@dataclass
class MapPoint:
    """One image on the map. In the planar frame ``lat`` is y and ``lon`` is x."""

    name: str  # file name; shown as text, never as HTML
    lat: float  # predicted latitude (or y)
    lon: float  # predicted longitude (or x)
    region: str | None = None  # predicted region name
    true_lat: float | None = None  # ground truth, if known (both or neither)
    true_lon: float | None = None
    true_region: str | None = None
    error: float | None = None  # distance predicted -> true, in the map's error_unit
    thumbnail: str | None = None  # data:image/...;base64 URI (see thumbnail_data_uri)
    extra: dict[str, Any] = field(default_factory=dict)  # more popup rows

    def __post_init__(self) -> None:
        if not (_finite(self.lat) and _finite(self.lon)):
            raise ValueError(f"{self.name!r}: predicted coordinates must be finite numbers")
        if (self.true_lat is None) != (self.true_lon is None):
            raise ValueError(f"{self.name!r}: give both true_lat and true_lon, or neither")
        if self.true_lat is not None and not (_finite(self.true_lat) and _finite(self.true_lon)):
            raise ValueError(f"{self.name!r}: true coordinates must be finite numbers")
        if self.error is not None and not _finite(self.error):
            raise ValueError(f"{self.name!r}: error must be a finite number or None")
        if self.thumbnail is not None and not _THUMB_RE.fullmatch(self.thumbnail):
            raise ValueError(f"{self.name!r}: thumbnail must be a data:image/...;base64 URI")
        # numpy scalars (float32 is not a float) must not reach json.dumps
        self.lat, self.lon = float(self.lat), float(self.lon)
        if self.has_truth:
            self.true_lat, self.true_lon = float(self.true_lat), float(self.true_lon)
        if self.error is not None:
            self.error = float(self.error)

    @property
    def has_truth(self) -> bool:
        return self.true_lat is not None


@dataclass
class PlanOverlay:
    """A plan image stretched over ``bounds = ((south, west), (north, east))`` (y/x if planar)."""

    image: Image.Image | bytes | str | os.PathLike
    bounds: Bounds

    def __post_init__(self) -> None:
        (south, west), (north, east) = self.bounds
        if not all(_finite(v) for v in (south, west, north, east)):
            raise ValueError("plan bounds must be finite numbers")
        if not (south < north and west < east):
            raise ValueError("plan bounds must be ((south, west), (north, east)) "
                             "with south < north and west < east")
        self.bounds = ((float(south), float(west)), (float(north), float(east)))


def _wgs84_map() -> folium.Map:
    m = folium.Map(location=[20.0, 0.0], zoom_start=2, tiles=None, world_copy_jump=True,
                   font_size=_FONT_SIZE)
    folium.TileLayer("OpenStreetMap", control=False).add_to(m)
    return m


def _planar_map() -> folium.Map:
    # No tile layer, so Leaflet's min zoom would default to 0; build_map sets it from the extent.
    return folium.Map(location=[0.0, 0.0], zoom_start=0, crs="Simple", tiles=None, zoom_snap=0.25,
                      font_size=_FONT_SIZE)


FRAMES: dict[str, Callable[[], folium.Map]] = {"wgs84": _wgs84_map, "planar": _planar_map}


def build_map(
    points: Sequence[MapPoint],
    *,
    frame: str,
    plan: PlanOverlay | None = None,
    error_unit: str = "",
    colour_by_error: bool = True,
    title: str | None = None,
) -> folium.Map:
    """Build an offline Folium map of predictions, ground truth and error lines.

    ``frame`` is ``"wgs84"`` (degrees, OpenStreetMap tiles) or ``"planar"`` (any unit,
    ``L.CRS.Simple``, no tiles, optional ``plan`` image under the points).
    """
    if frame not in FRAMES:
        raise ValueError(f"unknown frame {frame!r}; valid frames: {', '.join(FRAMES)}")
    m = FRAMES[frame]()
    _make_offline(m)

    bounds = _data_bounds(points, plan, frame)
    if frame == "planar" and bounds is not None:
        (s, w), (n, e) = bounds
        # Simple CRS: 1 unit = 1 px at zoom 0; allow zooming out until the extent is ~100 px.
        m.options["min_zoom"] = math.floor(math.log2(100.0 / max(n - s, e - w)))
    if bounds is not None:
        m.location = [(bounds[0][0] + bounds[1][0]) / 2, (bounds[0][1] + bounds[1][1]) / 2]
        m.add_child(_FitBounds(bounds), name="gm_fit_bounds")

    if plan is not None:
        folium.map.CustomPane("plan", z_index=250).add_to(m)  # below overlayPane (400)
        folium.raster_layers.ImageOverlay(
            _plan_data_uri(plan.image), bounds=[list(c) for c in plan.bounds],
            name="Plan", pixelated=False, pane="plan",
        ).add_to(m)

    scale = _error_scale([p.error for p in points if p.has_truth]) if colour_by_error else None
    lines = folium.FeatureGroup(name="Error lines")
    truth = folium.FeatureGroup(name="Ground truth")
    preds = folium.FeatureGroup(name="Predictions")
    for p in points:
        popup = _popup_html(p, frame, error_unit)
        if p.has_truth:
            colour = _error_colour(p.error, scale) if scale and p.error is not None else LINE_COLOUR
            folium.PolyLine([[p.lat, p.lon], [p.true_lat, p.true_lon]], color=colour,
                            weight=2.5, opacity=0.85).add_to(lines)
            _circle(p.true_lat, p.true_lon, TRUE_COLOUR, popup, f"{p.name} (truth)").add_to(truth)
        _circle(p.lat, p.lon, PRED_COLOUR, popup, p.name).add_to(preds)
    for group in (lines, truth, preds):  # later groups draw on top
        group.add_to(m)
    folium.LayerControl(collapsed=False).add_to(m)

    has_truth = any(p.has_truth for p in points)
    legend = _legend_html(title, len(points), has_truth, scale, error_unit)
    m.get_root().html.add_child(_Raw(legend), name="gm_legend")
    if title:
        m.get_root().title = html.escape(title)
    return m


def render_map(
    points: Sequence[MapPoint],
    *,
    frame: str,
    plan: PlanOverlay | None = None,
    error_unit: str = "",
    colour_by_error: bool = True,
    title: str | None = None,
) -> str:
    """Build the map (see ``build_map``) and render it to a complete HTML document."""
    m = build_map(points, frame=frame, plan=plan, error_unit=error_unit,
                  colour_by_error=colour_by_error, title=title)
    return m.get_root().render()


def to_iframe(html_doc: str, height: int = 520) -> str:
    """Wrap a full HTML document in a sandboxed, full-width ``<iframe srcdoc>``."""
    if int(height) <= 0:
        raise ValueError(f"height must be a positive number of pixels, got {height!r}")
    return (
        f'<iframe sandbox="allow-scripts" title="Map" srcdoc="{html.escape(html_doc, quote=True)}" '
        f'style="width:100%;height:{int(height)}px;border:0;"></iframe>'
    )


def thumbnail_data_uri(image: Image.Image, max_px: int = 96) -> str:
    """A small JPEG of ``image`` (longest side <= ``max_px``) as a ``data:`` URI."""
    if max_px <= 0:
        raise ValueError(f"max_px must be positive, got {max_px}")
    thumb = image.copy()
    thumb.thumbnail((max_px, max_px))
    if thumb.mode in ("RGBA", "LA", "P", "PA"):  # JPEG has no alpha: flatten onto white
        rgba = thumb.convert("RGBA")
        thumb = Image.new("RGB", rgba.size, "white")
        thumb.paste(rgba, mask=rgba.getchannel("A"))
    elif thumb.mode != "RGB":
        thumb = thumb.convert("RGB")
    buf = io.BytesIO()
    thumb.save(buf, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


# ---------------------------------------------------------------------------------------------
# Internals


class _Raw(Element):
    """Text placed verbatim in the document (branca would parse it as a Jinja template)."""

    def __init__(self, text: str):
        super().__init__()
        self._text = text

    def render(self, **kwargs: Any) -> str:
        return self._text


class _BindPopup(MacroElement):
    """Bind an HTML popup and a tooltip to the parent layer without folium's Popup/Tooltip."""

    def __init__(self, popup_html: str, tooltip_html: str):
        super().__init__()
        self._name = "BindPopup"
        self.popup_html = popup_html
        self.tooltip_html = tooltip_html

    def render(self, **kwargs: Any) -> None:
        target = self._parent.get_name()
        # tojavascript JSON-encodes strings with < > & ' escaped: no </script>, no ${...}.
        script = (
            f"{target}.bindPopup({tojavascript(self.popup_html)}, {{maxWidth: 320}});\n"
            f"{target}.bindTooltip({tojavascript(self.tooltip_html)}, {{sticky: true}});\n"
        )
        self.get_root().script.add_child(_Raw(script), name=self.get_name())


class _FitBounds(MacroElement):
    """``fitBounds`` without animation: folium's animates from its initial zoom, so a browser
    (or a screenshot) shows a half-zoomed frame first.

    A map built while hidden (an iframe in an inactive tab) has size 0 and fits to the minimum
    zoom; when it first gets a size, it fits again.
    """

    def __init__(self, bounds: Bounds):
        super().__init__()
        self._name = "FitBounds"
        self.bounds = [list(bounds[0]), list(bounds[1])]

    def render(self, **kwargs: Any) -> None:
        target = self._parent.get_name()
        bounds = json.dumps(self.bounds)
        script = (
            f"{target}.fitBounds({bounds}, {{animate: false}});\n"
            f"window.addEventListener('resize', function () {{\n"
            f"  var was = {target}.getSize();\n"
            f"  {target}.invalidateSize({{animate: false}});\n"
            f"  if (was.x === 0 || was.y === 0) {{ {target}.fitBounds({bounds}, {{animate: false}}); }}\n"
            f"}});\n"
        )
        self.get_root().script.add_child(_Raw(script), name=self.get_name())


@lru_cache(maxsize=1)
def _leaflet_assets() -> tuple[str, str]:
    """Leaflet's (css, js) from xstatic-leaflet, with the CSS images inlined as data URIs."""
    from xstatic.pkg import leaflet

    base = Path(leaflet.BASE_DIR)
    js = (base / "leaflet.js").read_text(encoding="utf-8")
    css = (base / "leaflet.css").read_text(encoding="utf-8")

    def inline(match: re.Match) -> str:
        data = (base / "images" / match.group(1)).read_bytes()
        return f"url(data:image/png;base64,{base64.b64encode(data).decode('ascii')})"

    css = re.sub(r"url\(images/([\w.-]+\.png)\)", inline, css)
    return css, js.replace("</script", "<\\/script")


def _make_offline(m: folium.Map) -> None:
    """Drop folium's CDN links and inline Leaflet in the document head instead."""
    m.default_js = []  # instance attributes: folium's class-level lists stay untouched
    m.default_css = []
    css, js = _leaflet_assets()
    header = m.get_root().header
    header.add_child(_Raw(f"<style>{css}</style>"), name="leaflet_css")
    header.add_child(_Raw(f"<script>{js}</script>"), name="leaflet_js")
    header.add_child(_Raw(f"<style>{_LEGEND_CSS}</style>"), name="gm_css")


def _circle(lat: float, lon: float, colour: str, popup: str, tooltip: str) -> folium.CircleMarker:
    marker = folium.CircleMarker([lat, lon], radius=6, color="#ffffff", weight=1, fill=True,
                                 fill_color=colour, fill_opacity=0.9)
    marker.add_child(_BindPopup(popup, _esc(tooltip)))
    return marker


def _data_bounds(points: Sequence[MapPoint], plan: PlanOverlay | None, frame: str) -> Bounds | None:
    lats = [p.lat for p in points] + [p.true_lat for p in points if p.has_truth]
    lons = [p.lon for p in points] + [p.true_lon for p in points if p.has_truth]
    if plan is not None:
        lats += [plan.bounds[0][0], plan.bounds[1][0]]
        lons += [plan.bounds[0][1], plan.bounds[1][1]]
    if not lats:
        return None
    s, n, w, e = min(lats), max(lats), min(lons), max(lons)
    span = max(n - s, e - w)
    if span > 0:
        pad = 0.05 * span
    else:  # a single location: Leaflet would zoom in without limit
        pad = 0.01 if frame == "wgs84" else max(1e-3 * max(abs(s), abs(w)), 1.0)
    return (s - pad, w - pad), (n + pad, e + pad)


@dataclass(frozen=True)
class _Scale:
    values: tuple[float, float, float]  # errors at ERROR_QUANTILES


def _error_scale(errors: Sequence[float | None]) -> _Scale | None:
    known = [e for e in errors if e is not None]
    if not known:
        return None
    q = np.quantile(np.asarray(known, dtype=float), ERROR_QUANTILES)
    return _Scale(tuple(float(v) for v in q))


def _error_colour(error: float, scale: _Scale) -> str:
    lo, mid, hi = scale.values
    if hi <= lo:
        return ERROR_STOPS[1]
    if error <= mid:
        t = 0.0 if mid <= lo else (error - lo) / (mid - lo)
        a, b = ERROR_STOPS[0], ERROR_STOPS[1]
    else:
        t = 1.0 if hi <= mid else (error - mid) / (hi - mid)
        a, b = ERROR_STOPS[1], ERROR_STOPS[2]
    t = min(max(t, 0.0), 1.0)
    ca, cb = _rgb(a), _rgb(b)
    return "#" + "".join(f"{round(x + (y - x) * t):02x}" for x, y in zip(ca, cb))


def _rgb(hex_colour: str) -> tuple[int, int, int]:
    return tuple(int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]


def _plan_data_uri(image: Image.Image | bytes | str | os.PathLike) -> str:
    if isinstance(image, Image.Image):
        img = image
    elif isinstance(image, (bytes, bytearray)):
        img = Image.open(io.BytesIO(image))
    else:
        img = Image.open(image)
    img.load()
    if max(img.size) > MAX_PLAN_PX:
        img = img.copy()
        img.thumbnail((MAX_PLAN_PX, MAX_PLAN_PX))
    if img.mode not in ("1", "L", "LA", "P", "RGB", "RGBA"):
        img = img.convert("RGBA")
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _popup_html(p: MapPoint, frame: str, unit: str) -> str:
    axes = "lat, lon" if frame == "wgs84" else "y, x"
    rows = [("Predicted region", p.region),
            (f"Predicted ({axes})", _fmt_coords(p.lat, p.lon, frame))]
    if p.has_truth or p.true_region is not None:
        rows.append(("True region", p.true_region))
    if p.has_truth:
        rows.append((f"True ({axes})", _fmt_coords(p.true_lat, p.true_lon, frame)))
    if p.error is not None:
        rows.append(("Error", f"{_fmt_number(p.error)} {unit}".strip()))
    rows += list(p.extra.items())
    body = "".join(
        f"<tr><th>{_esc(k)}</th><td>{_esc('—' if v is None else v)}</td></tr>" for k, v in rows
    )
    thumb = f'<img class="gm-thumb" src="{p.thumbnail}" alt="">' if p.thumbnail else ""
    name = f'<div class="gm-name">{_esc(p.name)}</div>'
    return f'<div class="gm-popup">{thumb}{name}<table>{body}</table></div>'


def _legend_html(
    title: str | None, n: int, has_truth: bool, scale: _Scale | None, unit: str
) -> str:
    def swatch(kind: str, colour: str, label: str) -> str:
        return f'<div><span class="gm-{kind}" style="background:{colour}"></span>{label}</div>'

    parts = ['<div class="gm-legend">']
    if title:
        parts.append(f'<div class="gm-title">{_esc(title)}</div>')
    parts.append(swatch("dot", PRED_COLOUR, "Prediction"))
    if has_truth:
        parts.append(swatch("dot", TRUE_COLOUR, "Ground truth"))
        if scale is not None:
            label = f"Error ({_esc(unit)})" if unit else "Error"
            lo, hi = (int(q * 100) for q in (ERROR_QUANTILES[0], ERROR_QUANTILES[-1]))
            gradient = f"linear-gradient(to right,{','.join(ERROR_STOPS)})"
            ticks = "".join(f"<span>{_fmt_number(v)}</span>" for v in scale.values)
            parts.append(
                f'<div class="gm-sub">{label}, {lo}th–{hi}th pct</div>'
                f'<div class="gm-bar" style="background:{gradient}"></div>'
                f'<div class="gm-ticks">{ticks}</div>'
            )
        else:
            parts.append(swatch("line", LINE_COLOUR, "Error line"))
    if n == 0:
        parts.append('<div class="gm-sub">No points</div>')
    parts.append("</div>")
    return "".join(parts)


_LEGEND_CSS = """
.gm-legend{position:fixed;left:10px;bottom:18px;z-index:1000;background:rgba(255,255,255,.92);
  padding:6px 9px;border-radius:5px;box-shadow:0 1px 4px rgba(0,0,0,.35);
  font:12px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#222;min-width:130px}
.gm-legend .gm-title{font-weight:600;margin-bottom:2px;max-width:240px;overflow-wrap:anywhere}
.gm-legend .gm-sub{margin-top:4px;color:#444}
.gm-dot{display:inline-block;width:10px;height:10px;border-radius:50%;margin-right:6px;
  vertical-align:-1px;border:1px solid #fff;box-shadow:0 0 0 1px rgba(0,0,0,.3)}
.gm-line{display:inline-block;width:16px;height:3px;margin-right:6px;vertical-align:3px}
.gm-bar{height:8px;border-radius:2px;margin-top:2px}
.gm-ticks{display:flex;justify-content:space-between;gap:8px;font-size:11px;color:#444}
.gm-popup{font:12px/1.4 system-ui,sans-serif;max-width:300px}
.gm-popup .gm-thumb{display:block;max-width:96px;max-height:96px;margin-bottom:4px;
  border-radius:3px}
.gm-popup .gm-name{font-weight:600;margin-bottom:3px;overflow-wrap:anywhere}
.gm-popup th{text-align:left;font-weight:500;color:#555;padding-right:8px;vertical-align:top}
.gm-popup td{overflow-wrap:anywhere}
"""


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _finite(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _fmt_number(x: float) -> str:
    return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.3g}" if abs(x) < 10 else f"{x:.1f}"


def _fmt_coords(a: float, b: float, frame: str) -> str:
    if frame == "wgs84":
        return f"{a:.5f}, {b:.5f}"
    return f"{a:.6g}, {b:.6g}"
