"""Pure Folium map builders for the demo: plain data in, an HTML string out.

The maps must work offline inside a sandboxed ``<iframe srcdoc>``, so Leaflet's JS/CSS are
inlined from the ``xstatic-leaflet`` package (and Leaflet.markercluster's from
``xstatic-leaflet-markercluster``), and folium's CDN links (leaflet, jquery, bootstrap,
awesome-markers, font-awesome, markercluster) are dropped.

Points and regions are drawn by ``map.js`` (inlined too) from one JSON payload: a photo costs
about a hundred bytes, not a Leaflet call per marker, so maps of thousands of photos stay light.
Beyond ``CLUSTER_ABOVE`` photos the markers are clustered.

Security: folium's ``Popup``/``Tooltip`` put their text into JS template literals (``${...}``
runs) and re-parse it as a Jinja template (``{{ ... }}`` runs on the server). User-controlled
strings (file names, region names) therefore never go through them: every string in the
payload is HTML-escaped in Python and JSON-encoded with ``<``/``>``/``&``/``'`` escaped, and
``map.js`` only joins those escaped strings, fixed labels and numbers into markup.
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
from branca.element import Element, MacroElement
from folium.plugins import MarkerCluster
from folium.template import Template
from PIL import Image

from demo.colours import ColourScale, error_scale
from demo.map_regions import RegionFill, region_bounds, region_list, regions_payload

PRED_COLOUR = "#1f77b4"
TRUE_COLOUR = "#9b2fae"
LINE_COLOUR = "#666666"  # error lines when not coloured by error, or error unknown
ERROR_QUANTILES = (0.05, 0.5, 0.95)  # error lines: green at the 5th percentile, yellow at the median, red at the 95th
CLUSTER_ABOVE = 200  # more photos than this: markers are clustered, error lines start hidden
MAX_PLAN_PX = 2048  # larger plans are downscaled: the whole PNG travels in the srcdoc
_FONT_SIZE = "13px"  # Leaflet controls; folium's default 1rem makes the layer list bulky
_THUMB_RE = re.compile(r"data:image/(?:jpeg|png|webp|gif);base64,[A-Za-z0-9+/]+=*")
# A thumbnail the app serves itself: a relative URL (resolved against the app's page), plain characters only.
_COLOUR_RE = re.compile(r"#[0-9a-fA-F]{6}")
MAX_LEGEND_COLOURS = 16  # point colours listed in the legend
# What the points are: the words the popups, legend and layer list use for them.
ROLES = {"predictions": {"region": "Predicted region", "coords": "Predicted", "one": "Prediction",
                         "many": "Predictions"},
         "photos": {"region": "Region", "coords": "Position", "one": "Photo", "many": "Photos"}}
_THUMB_URL_RE = re.compile(r"(?!/)(?!.*//)(?!.*\.\./)[A-Za-z0-9_./=%-]+\.(?:jpg|jpeg|png|webp)")

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
    thumbnail: str | None = None  # data:image/...;base64 URI (see thumbnail_data_uri), or a relative URL
    extra: dict[str, Any] = field(default_factory=dict)  # more popup rows
    region_values: Sequence[float] | None = None  # one per region (e.g. predicted probabilities), for fills
    # that follow the selected point (RegionFill.follow_points)
    colour: str | None = None  # "#rrggbb" of this point's dot (default PRED_COLOUR), e.g. its region's colour

    def __post_init__(self) -> None:
        if not (_finite(self.lat) and _finite(self.lon)):
            raise ValueError(f"{self.name!r}: predicted coordinates must be finite numbers")
        if (self.true_lat is None) != (self.true_lon is None):
            raise ValueError(f"{self.name!r}: give both true_lat and true_lon, or neither")
        if self.true_lat is not None and not (_finite(self.true_lat) and _finite(self.true_lon)):
            raise ValueError(f"{self.name!r}: true coordinates must be finite numbers")
        if self.error is not None and not _finite(self.error):
            raise ValueError(f"{self.name!r}: error must be a finite number or None")
        if self.thumbnail is not None and not (_THUMB_RE.fullmatch(self.thumbnail)
                                               or _THUMB_URL_RE.fullmatch(self.thumbnail)):
            raise ValueError(f"{self.name!r}: thumbnail must be a data:image/...;base64 URI or a relative "
                             "URL of an image")
        # numpy scalars (float32 is not a float) must not reach json.dumps
        self.lat, self.lon = float(self.lat), float(self.lon)
        if self.has_truth:
            self.true_lat, self.true_lon = float(self.true_lat), float(self.true_lon)
        if self.error is not None:
            self.error = float(self.error)
        if self.region_values is not None:
            self.region_values = [float(v) for v in self.region_values]
        if self.colour is not None and not _COLOUR_RE.fullmatch(str(self.colour)):
            raise ValueError(f"{self.name!r}: colour must be '#rrggbb', got {self.colour!r}")

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
    regions: Any = None,
    region_fills: Sequence[RegionFill] = (),
    selected: int | None = None,
    cluster: bool | None = None,
    role: str = "predictions",
) -> folium.Map:
    """Build an offline Folium map of predictions, ground truth, error lines and regions.

    ``frame`` is ``"wgs84"`` (degrees, OpenStreetMap tiles) or ``"planar"`` (any unit,
    ``L.CRS.Simple``, no tiles, optional ``plan`` image under the points).

    ``regions``: a GeoJSON FeatureCollection in the agreed ``regions.geojson`` format (or a
    ``geomodel.regions.Regions``), drawn as outlines with their names. Each of ``region_fills``
    colours them by its values, with a legend; with several, the layer list switches between
    them. A fill with ``follow_points`` shows the values of the point whose index is
    ``selected`` (default: the first point that has ``region_values``), and of any point clicked
    afterwards, or selected by the parent page (``postMessage({gmSelect: index})``).
    ``cluster``: cluster the markers (default: beyond ``CLUSTER_ABOVE`` points).
    ``role``: what the points are, for the popups, legend and layer list (see ``ROLES``): a
    model's ``"predictions"``, or a collection's ``"photos"`` (their own positions; each dot
    in its ``MapPoint.colour``, e.g. its region's).
    """
    if frame not in FRAMES:
        raise ValueError(f"unknown frame {frame!r}; valid frames: {', '.join(FRAMES)}")
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; valid roles: {', '.join(ROLES)}")
    region_items = region_list(regions) if regions is not None else []
    if region_fills and not region_items:
        raise ValueError("region_fills need regions")
    cluster = len(points) > CLUSTER_ABOVE if cluster is None else cluster
    m = FRAMES[frame]()
    _make_offline(m, cluster)

    area = region_bounds(region_items) if region_items else None
    bounds = _data_bounds(points, plan, frame, area)  # everything drawn
    view = _data_bounds(points, plan, frame, area, near_area=True)  # what the map opens on
    if frame == "planar" and bounds is not None:
        # Simple CRS: 1 unit = 1 px at zoom 0; allow zooming out until everything is ~100 px,
        # and in until the view's extent is ~50,000 px.
        m.options["min_zoom"] = math.floor(math.log2(100.0 / _span(bounds)))
        m.options["max_zoom"] = max(math.floor(math.log2(100.0 / _span(view))), m.options["min_zoom"]) + 9
    elif frame == "wgs84":
        m.options["max_zoom"] = 19  # OpenStreetMap's deepest tiles
    if view is not None:
        m.location = [(view[0][0] + view[1][0]) / 2, (view[0][1] + view[1][1]) / 2]
        m.add_child(_FitBounds(view), name="gm_fit_bounds")

    if plan is not None:
        folium.map.CustomPane("plan", z_index=250).add_to(m)  # below overlayPane (400)
        folium.raster_layers.ImageOverlay(
            _plan_data_uri(plan.image), bounds=[list(c) for c in plan.bounds],
            name="Plan", pixelated=False, pane="plan",
        ).add_to(m)

    scale = (error_scale([p.error for p in points if p.has_truth], error_unit, quantiles=ERROR_QUANTILES)
             if colour_by_error and any(p.error is not None for p in points if p.has_truth) else None)
    follow = next((k for k, f in enumerate(region_fills) if f.follow_points), -1)
    payload = {**_payload(points, frame, error_unit, scale, region_items, region_fills, follow),
               "words": ROLES[role]}
    data = _Data(payload)
    m.add_child(data, name="gm_data")
    gm = _Script(f"var gm_map = new GM.Map({m.get_name()}, {data.get_name()});\n")
    m.add_child(gm, name="gm_new")

    if region_items:
        folium.map.CustomPane("gm_regions", z_index=350).add_to(m)  # above the plan, below the points
        base = len(region_fills) > 1  # several fills: one at a time, chosen in the layer list
        for k, fill in enumerate(region_fills or [None]):
            name = "Regions" if fill is None else f"Regions: {fill.name}"
            _JsLayer(f"gm_map.regions({k if fill is not None else -1})", name, overlay=not base,
                     show=k == 0).add_to(m)

    has_truth = any(p.has_truth for p in points)
    groups = {}
    for key, name, show in (("lines", "Error lines", not cluster), ("truth", "Ground truth", True),
                            ("preds", ROLES[role]["many"], True)):  # later groups draw on top
        if key == "lines" or key == "truth":
            if not has_truth:
                continue
        group = (_cluster_group(name, key) if cluster and key != "lines"
                 else folium.FeatureGroup(name=name, show=show))
        group.add_to(m)
        groups[key] = group
    refs = ", ".join(f"{k}: {g.get_name()}" for k, g in groups.items())
    m.add_child(_Script(f"gm_map.points({{{refs}}});\n"), name="gm_points")
    if region_items:
        _JsLayer("gm_map.labels()", "Region names", overlay=True, show=True).add_to(m)
    folium.LayerControl(collapsed=False).add_to(m)
    initial = _initial_selection(points, selected) if follow >= 0 else -1
    m.add_child(_Script(f"gm_map.finish({initial});\n"), name="gm_finish")

    legend = _legend_html(title, points, has_truth, scale, region_fills, region_items, initial, ROLES[role]["one"])
    m.get_root().html.add_child(_Raw(legend), name="gm_legend")
    if title:
        m.get_root().title = html.escape(title)
    return m


def render_map(points: Sequence[MapPoint], *, frame: str, **kwargs: Any) -> str:
    """Build the map (see ``build_map``, same arguments) and render it to a complete HTML document."""
    return build_map(points, frame=frame, **kwargs).get_root().render()


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
    return "data:image/jpeg;base64," + base64.b64encode(thumbnail_jpeg(image, max_px)).decode("ascii")


def thumbnail_jpeg(image: Image.Image, max_px: int = 96) -> bytes:
    """A small JPEG of ``image`` (longest side <= ``max_px``), transparency flattened onto white."""
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
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------
# Internals


class _Raw(Element):
    """Text placed verbatim in the document (branca would parse it as a Jinja template)."""

    def __init__(self, text: str):
        super().__init__()
        self._text = text

    def render(self, **kwargs: Any) -> str:
        return self._text


class _Script(MacroElement):
    """Fixed script text (no user text), appended to the map's script in the order added."""

    def __init__(self, code: str):
        super().__init__()
        self._name = "GmScript"
        self.code = code

    def render(self, **kwargs: Any) -> None:
        self.get_root().script.add_child(_Raw(self.code), name=self.get_name())


class _Data(MacroElement):
    """The map's payload as a JS variable: JSON with < > & ' escaped (no </script>, no markup)."""

    def __init__(self, payload: dict):
        super().__init__()
        self._name = "GmData"
        self.payload = payload

    def render(self, **kwargs: Any) -> None:
        code = f"var {self.get_name()} = {_js_json(self.payload)};\n"
        self.get_root().script.add_child(_Raw(code), name=self.get_name())


class _JsLayer(folium.map.Layer):
    """A Leaflet layer made by map.js (a fixed expression), listed in folium's layer control."""

    _template = Template("{% macro script(this, kwargs) %}var {{ this.get_name() }} = {{ this.expr }};\n"
                         "{% endmacro %}")

    def __init__(self, expr: str, name: str, *, overlay: bool, show: bool):
        super().__init__(name=name, overlay=overlay, control=True, show=show)
        self._name = "GmLayer"
        self.expr = expr


_CLUSTER_ICON = """function (cluster) {
  var n = cluster.getChildCount();
  var size = n < 10 ? 30 : n < 100 ? 36 : 44;
  return L.divIcon({html: '<div><span>' + n + '</span></div>', className: 'marker-cluster gm-cluster-%s',
                    iconSize: L.point(size, size)});
}"""


def _cluster_group(name: str, key: str) -> MarkerCluster:
    group = MarkerCluster(name=name, icon_create_function=_CLUSTER_ICON % key,
                          options={"maxClusterRadius": 45, "spiderfyOnMaxZoom": True, "chunkedLoading": True})
    group.default_js, group.default_css = [], []  # inlined by _make_offline instead of a CDN
    return group


class _FitBounds(MacroElement):
    """``fitBounds`` without animation: folium's animates from its initial zoom, so a browser
    (or a screenshot) shows a half-zoomed frame first.

    A map built while hidden or still being laid out (an iframe in an inactive tab, or one the
    page is inserting) has a size of 0 or a few pixels and fits to that; whenever its size
    changes it fits again, until the visitor has moved or zoomed it.
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
            f"(function () {{\n"
            f"  var touched = false, box = {target}.getContainer();\n"
            f"  ['mousedown', 'wheel', 'touchstart', 'keydown'].forEach(function (e) {{\n"
            f"    box.addEventListener(e, function () {{ touched = true; }}, {{passive: true}});\n"
            f"  }});\n"
            f"  function refit() {{\n"
            f"    {target}.invalidateSize({{animate: false}});\n"
            f"    if (!touched) {{ {target}.fitBounds({bounds}, {{animate: false}}); }}\n"
            f"  }}\n"
            f"  if (window.ResizeObserver) {{ new ResizeObserver(refit).observe(box); }}\n"
            f"  else {{ window.addEventListener('resize', refit); }}\n"
            f"}})();\n"
        )
        self.get_root().script.add_child(_Raw(script), name=self.get_name())


def _js_json(obj: Any) -> str:
    """JSON for a <script> block: no character of it can end the script or start markup."""
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    for ch, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("'", "\\u0027"),
                    ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(ch, esc)
    return text


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
    return css, _script_safe(js)


@lru_cache(maxsize=1)
def _cluster_assets() -> tuple[str, str]:
    """Leaflet.markercluster's (css, js) from xstatic-leaflet-markercluster."""
    from xstatic.pkg import leaflet_markercluster

    base = Path(leaflet_markercluster.BASE_DIR)
    css = "\n".join((base / f).read_text(encoding="utf-8") for f in ("MarkerCluster.css", "MarkerCluster.Default.css"))
    js = (base / "leaflet.markercluster.js").read_text(encoding="utf-8")
    return css, _script_safe(js)


@lru_cache(maxsize=1)
def _map_js() -> str:
    return _script_safe((Path(__file__).with_name("map.js")).read_text(encoding="utf-8"))


def _script_safe(js: str) -> str:
    """JS to inline in a <script> block: nothing that ends it, no source-map link (not served)."""
    return re.sub(r"//# sourceMappingURL=\S+", "", js).replace("</script", "<\\/script")


def _make_offline(m: folium.Map, cluster: bool) -> None:
    """Drop folium's CDN links and inline Leaflet (and markercluster, map.js) in the document head instead."""
    m.default_js = []  # instance attributes: folium's class-level lists stay untouched
    m.default_css = []
    css, js = _leaflet_assets()
    header = m.get_root().header
    header.add_child(_Raw(f"<style>{css}</style>"), name="leaflet_css")
    header.add_child(_Raw(f"<script>{js}</script>"), name="leaflet_js")
    if cluster:
        ccss, cjs = _cluster_assets()
        header.add_child(_Raw(f"<style>{ccss}</style>"), name="markercluster_css")
        header.add_child(_Raw(f"<script>{cjs}</script>"), name="markercluster_js")
    header.add_child(_Raw(f"<script>{_map_js()}</script>"), name="gm_js")
    header.add_child(_Raw(f"<style>{_LEGEND_CSS}</style>"), name="gm_css")


def _payload(points: Sequence[MapPoint], frame: str, unit: str, scale: ColourScale | None,
             region_items: list[dict], fills: Sequence[RegionFill], follow: int) -> dict:
    """Everything map.js draws, every string HTML-escaped; a point is a short list (see map.js)."""
    strings: dict[str, int] = {}
    colours: dict[str, int] = {}

    def sid(text: str | None) -> int:
        return -1 if text is None else strings.setdefault(_esc(text), len(strings))

    def cid(colour: str) -> int:
        return colours.setdefault(colour, len(colours))

    pts = []
    for p in points:
        extra: dict[str, Any] = {}
        if p.extra:
            extra["rows"] = [[_esc(k), _esc("—" if v is None else v)] for k, v in p.extra.items()]
        if p.thumbnail:
            extra["thumb"] = _esc(p.thumbnail)
        if p.colour:
            extra["colour"] = p.colour
        if follow >= 0 and p.region_values is not None:
            if len(p.region_values) != len(region_items):
                raise ValueError(f"{p.name!r}: {len(p.region_values)} region values for {len(region_items)} regions")
            f = fills[follow]
            extra["fill"] = {"colours": f.scale.colours(p.region_values),
                             "texts": [f.scale.text(v) for v in p.region_values]}
        line = LINE_COLOUR if scale is None or p.error is None else scale.colour(p.error)
        pts.append([_esc(p.name), _coord(p.lat, frame), _coord(p.lon, frame), sid(p.region),
                    _coord(p.true_lat, frame), _coord(p.true_lon, frame), sid(p.true_region),
                    None if p.error is None else float(f"{p.error:.6g}"), cid(line) if p.has_truth else -1,
                    extra or None])
    out = {"frame": frame, "unit": _esc(unit), "predColour": PRED_COLOUR, "trueColour": TRUE_COLOUR,
           "strings": list(strings), "colours": list(colours), "pts": pts, "regions": None}
    if region_items:
        out["regions"] = {**regions_payload(region_items, fills), "follow": follow}
    return out


def _coord(v: float | None, frame: str) -> float | None:
    if v is None:
        return None
    return round(v, 7) if frame == "wgs84" else float(f"{v:.9g}")


def _initial_selection(points: Sequence[MapPoint], selected: int | None) -> int:
    if selected is not None and 0 <= selected < len(points) and points[selected].region_values is not None:
        return selected
    return next((i for i, p in enumerate(points) if p.region_values is not None), -1)


def _data_bounds(points: Sequence[MapPoint], plan: PlanOverlay | None, frame: str,
                 extra: tuple[list[float], list[float]] | None = None, *, near_area: bool = False) -> Bounds | None:
    """The points, the plan and `extra` (the regions' vertices), padded. With `near_area`, when a plan
    or regions say where the area is, points farther from it than a quarter of its size are left out:
    a label 30 km off campus is still drawn, but the map does not open zoomed out to show it."""
    area_lats, area_lons = [], []
    if plan is not None:
        area_lats += [plan.bounds[0][0], plan.bounds[1][0]]
        area_lons += [plan.bounds[0][1], plan.bounds[1][1]]
    if extra is not None:
        area_lats += [min(extra[0]), max(extra[0])]
        area_lons += [min(extra[1]), max(extra[1])]
    coords = [(p.lat, p.lon) for p in points] + [(p.true_lat, p.true_lon) for p in points if p.has_truth]
    if near_area and area_lats:
        s, n, w, e = min(area_lats), max(area_lats), min(area_lons), max(area_lons)
        reach = 0.25 * max(n - s, e - w)
        coords = [(y, x) for y, x in coords if s - reach <= y <= n + reach and w - reach <= x <= e + reach]
    lats = [y for y, _ in coords] + area_lats
    lons = [x for _, x in coords] + area_lons
    if not lats:
        return None
    s, n, w, e = min(lats), max(lats), min(lons), max(lons)
    span = max(n - s, e - w)
    if span > 0:
        pad = 0.05 * span
    else:  # a single location: Leaflet would zoom in without limit
        pad = 0.01 if frame == "wgs84" else max(1e-3 * max(abs(s), abs(w)), 1.0)
    return (s - pad, w - pad), (n + pad, e + pad)


def _span(bounds: Bounds) -> float:
    (s, w), (n, e) = bounds
    return max(n - s, e - w)


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


def _legend_html(title: str | None, points: Sequence[MapPoint], has_truth: bool, scale: ColourScale | None,
                 fills: Sequence[RegionFill], region_items: list[dict], initial: int,
                 point_word: str = "Prediction") -> str:
    def swatch(kind: str, colour: str, label: str) -> str:
        return f'<div><span class="gm-{kind}" style="background:{colour}"></span>{label}</div>'

    parts = ['<div class="gm-legend">']
    if title:
        parts.append(f'<div class="gm-title">{_esc(title)}</div>')
    if points:
        colours = list(dict.fromkeys(p.colour or PRED_COLOUR for p in points))
        if len(colours) == 1:
            parts.append(swatch("dot", colours[0], _esc(point_word)))
        else:  # one colour per region: the dots' colours, named by their region
            named = list(dict.fromkeys((p.colour or PRED_COLOUR, p.region or "") for p in points))
            shown = named[:MAX_LEGEND_COLOURS]
            parts += [swatch("dot", c, _esc(name or point_word)) for c, name in shown]
            if len(named) > len(shown):
                parts.append(f'<div class="gm-sub">and {len(named) - len(shown)} more</div>')
    if has_truth:
        parts.append(swatch("dot", TRUE_COLOUR, "Ground truth"))
        parts.append(scale.legend_html() if scale is not None else swatch("line", LINE_COLOUR, "Error line"))
    for k, fill in enumerate(fills):
        unknown = any(v is None or not math.isfinite(v) for v in fill.values)
        if fill.follow_points and initial >= 0:
            unknown = False
        parts.append(fill.scale.legend_html(no_data=unknown, elem_id=f"gm-fill-{k}"))
        if fill.follow_points:
            name = _esc(points[initial].name) if initial >= 0 else ""
            parts.append(f'<div class="gm-follow" id="gm-follow-name">{name}</div>')
    if region_items and not fills:
        parts.append('<div><span class="gm-area"></span>Region</div>')
    if not points:
        parts.append('<div class="gm-sub">No points</div>')
    parts.append("</div>")
    return "".join(parts)


_LEGEND_CSS = """
.gm-legend{position:fixed;left:10px;bottom:18px;z-index:1000;background:rgba(255,255,255,.92);
  padding:6px 9px;border-radius:5px;box-shadow:0 1px 4px rgba(0,0,0,.35);
  font:12px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#222;min-width:150px;max-width:230px}
.gm-legend .gm-title{font-weight:600;margin-bottom:2px;overflow-wrap:anywhere}
.gm-legend .gm-sub{margin-top:4px;color:#444}
.gm-legend .gm-follow{color:#444;font-style:italic;overflow-wrap:anywhere}
.gm-dot{display:inline-block;width:10px;height:10px;border-radius:50%;margin-right:6px;
  vertical-align:-1px;border:1px solid #fff;box-shadow:0 0 0 1px rgba(0,0,0,.3)}
.gm-line{display:inline-block;width:16px;height:3px;margin-right:6px;vertical-align:3px}
.gm-area{display:inline-block;width:14px;height:10px;margin-right:6px;vertical-align:-1px;border:1.5px solid #333}
.gm-bar{height:8px;border-radius:2px;margin-top:2px}
.gm-ticks{position:relative;height:15px;font-size:11px;color:#444;margin:0 12px}
.gm-ticks span{position:absolute;transform:translateX(-50%);white-space:nowrap}
.gm-nodata span{display:inline-block;width:14px;height:8px;margin-right:6px;vertical-align:0}
.gm-popup{font:12px/1.4 system-ui,sans-serif;max-width:320px}
.gm-popup .gm-thumb{display:block;max-width:96px;max-height:96px;margin-bottom:4px;
  border-radius:3px}
.gm-popup .gm-name{font-weight:600;margin-bottom:3px;overflow-wrap:anywhere}
.gm-popup th{text-align:left;font-weight:500;color:#555;padding-right:8px;vertical-align:top}
.gm-popup td{overflow-wrap:anywhere}
.gm-confusion td{padding-right:10px}
.gm-region-label span{display:inline-block;transform:translate(-50%,-50%);white-space:nowrap;
  font:600 11px system-ui,sans-serif;color:#222;text-shadow:0 0 3px #fff,0 0 3px #fff,0 0 2px #fff;
  pointer-events:none}
.gm-cluster-preds div{background:rgba(31,119,180,.75);color:#fff}
.gm-cluster-preds{background:rgba(31,119,180,.3)}
.gm-cluster-truth div{background:rgba(155,47,174,.75);color:#fff}
.gm-cluster-truth{background:rgba(155,47,174,.3)}
"""


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _finite(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False
