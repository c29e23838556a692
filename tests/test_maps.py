"""Tests for demo.maps: pure map builders, rendered to HTML and inspected as text."""

import html
import json
import re

import pytest
from PIL import Image

from demo.maps import MapPoint, PlanOverlay, build_map, render_map, thumbnail_data_uri, to_iframe

EVIL = "<img src=x onerror=alert(1)>.jpg"
CDN_TAG = re.compile(r"<(?:script|link)\b[^>]*\b(?:src|href)\s*=\s*[\"']?(?:https?:)?//", re.I)
LINE_COLOUR = re.compile(r'L\.polyline\([^)]*?"color": "(#[0-9a-f]{6})"', re.S)
JSON_STR = r'"(?:[^"\\]|\\.)*"'


def _points(n_truth: int = 2, n_pred_only: int = 1) -> list[MapPoint]:
    pts = [
        MapPoint(f"img_{i}.jpg", 219000.0 + 100 * i, 142000.0 + 50 * i, "A",
                 true_lat=219050.0 + 100 * i, true_lon=142020.0 + 50 * i, true_region="B",
                 error=10.0 * (i + 1))
        for i in range(n_truth)
    ]
    pts += [MapPoint(f"pred_{i}.jpg", 219500.0, 143000.0 + i, "C") for i in range(n_pred_only)]
    return pts


def _plan() -> PlanOverlay:
    bounds = ((218000.0, 140700.0), (221700.0, 145700.0))
    return PlanOverlay(Image.new("RGB", (40, 30), "white"), bounds)


def _popups(doc: str) -> list[str]:
    """The decoded popup HTML strings, as the browser will set them with innerHTML."""
    return [json.loads(s) for s in re.findall(r"\.bindPopup\((" + JSON_STR + r")", doc)]


@pytest.mark.parametrize("frame", ["wgs84", "planar"])
def test_counts_markers_and_lines(frame):
    doc = render_map(_points(n_truth=2, n_pred_only=1), frame=frame, error_unit="m")
    assert doc.count("L.circleMarker(") == 5  # 3 predictions + 2 truths
    assert doc.count("L.polyline(") == 2
    assert len(_popups(doc)) == 5
    for group in ("Predictions", "Ground truth", "Error lines"):
        assert f'"{group}"' in doc
    assert "L.control.layers(" in doc
    assert 'class="gm-legend"' in doc and "Error (m)" in doc


def test_prediction_only_has_no_lines_or_truth():
    doc = render_map(_points(n_truth=0, n_pred_only=3), frame="planar")
    assert doc.count("L.circleMarker(") == 3
    assert "L.polyline(" not in doc
    assert "Ground truth</div>" not in doc  # no truth row in the legend


def test_error_colours_follow_scale():
    doc = render_map(_points(n_truth=3, n_pred_only=0), frame="planar")
    colours = LINE_COLOUR.findall(doc)
    assert colours == ["#1a9850", "#e6b800", "#d73027"]  # errors 10, 20, 30: green, yellow, red
    plain = render_map(_points(n_truth=3, n_pred_only=0), frame="planar", colour_by_error=False)
    assert set(LINE_COLOUR.findall(plain)) == {"#666666"}


@pytest.mark.parametrize("frame", ["wgs84", "planar"])
def test_malicious_names_are_text(frame):
    p = MapPoint(EVIL, 10.0, 20.0, region="<b>r</b>", true_lat=11.0, true_lon=21.0,
                 true_region="{{ 7*7 }}", error=1.0, extra={"<i>k</i>": "${alert(2)}"})
    doc = render_map([p], frame=frame, title="<script>alert(3)</script>")
    frame_html = to_iframe(doc)
    for text in (doc, frame_html):
        assert "<img src=x" not in text
        assert "<script>alert(3)" not in text
    popups = _popups(doc)
    assert popups and all(html.escape(EVIL) in s and "<img src=x" not in s for s in popups)
    assert all("&lt;b&gt;r&lt;/b&gt;" in s and "&lt;i&gt;k&lt;/i&gt;" in s for s in popups)
    assert all("{{ 7*7 }}" in s and "${alert(2)}" in s for s in popups)  # no Jinja/JS evaluation
    tooltips = [json.loads(s) for s in re.findall(r"\.bindTooltip\((" + JSON_STR + r")", doc)]
    assert tooltips and all(t.startswith(html.escape(EVIL)) for t in tooltips)
    assert "&lt;script&gt;alert(3)&lt;/script&gt;" in doc  # legend title and <title>


def test_planar_uses_simple_crs_without_tiles_and_plan_overlay():
    doc = render_map(_points(), frame="planar", plan=_plan())
    assert "L.CRS.Simple" in doc
    assert "L.tileLayer(" not in doc
    assert "L.imageOverlay(" in doc and "data:image/png;base64," in doc
    assert '"Plan"' in doc


def test_wgs84_uses_osm_tiles():
    doc = render_map(_points(), frame="wgs84")
    assert "L.CRS.EPSG3857" in doc
    assert "tile.openstreetmap.org" in doc


@pytest.mark.parametrize("frame", ["wgs84", "planar"])
def test_offline_no_cdn_and_leaflet_inlined(frame):
    doc = render_map(_points(), frame=frame, plan=_plan() if frame == "planar" else None)
    assert not CDN_TAG.search(doc), CDN_TAG.search(doc)
    assert not re.search(r"<(?:script|link)\b[^>]*\b(?:src|href)=", doc)  # nothing external at all
    assert "jquery" not in doc.lower() and "bootstrap" not in doc.lower()
    assert "Leaflet 1.9.3, a JS library for interactive maps" in doc  # leaflet.js inlined
    assert ".leaflet-container" in doc  # leaflet.css inlined
    assert "images/layers.png" not in doc  # CSS images inlined as data URIs
    urls = set(re.findall(r"https?://[^\s\"'<>)\\]+", doc))
    assert not {u for u in urls if re.search(r"\.(?:js|css)(?:\?|$)", u)}
    assert ("https://tile.openstreetmap.org/{z}/{x}/{y}.png" in urls) == (frame == "wgs84")


def test_iframe_is_sandboxed_and_escaped():
    doc = render_map(_points(), frame="planar")
    out = to_iframe(doc, height=400)
    assert out.startswith("<iframe ") and out.endswith("</iframe>")
    assert 'sandbox="allow-scripts"' in out and "allow-same-origin" not in out
    assert "height:400px" in out and "width:100%" in out
    srcdoc = re.fullmatch(r'<iframe [^>]*?srcdoc="([^"]*)"[^>]*></iframe>', out, re.S)
    assert srcdoc, "srcdoc must be one attribute with no raw double quotes"
    assert "<script" not in srcdoc.group(1) and "<" not in srcdoc.group(1)
    assert html.unescape(srcdoc.group(1)) == doc
    with pytest.raises(ValueError):
        to_iframe(doc, height=0)


@pytest.mark.parametrize("frame,plan", [("wgs84", False), ("planar", False), ("planar", True)])
def test_empty_points_render(frame, plan):
    doc = render_map([], frame=frame, plan=_plan() if plan else None)
    assert "L.map(" in doc and "L.circleMarker(" not in doc
    assert ("L.imageOverlay(" in doc) == plan
    assert bool(re.search(r"map_\w+\.fitBounds\(", doc)) == plan
    assert "No points" in doc


def test_single_point_bounds_are_not_degenerate():
    doc = render_map([MapPoint("a.jpg", 1.0, 2.0)], frame="planar")
    (s, w), (n, e) = json.loads(re.search(r"map_\w+\.fitBounds\((\[\[.*?\]\])", doc).group(1))
    assert s < 1.0 < n and w < 2.0 < e


def test_popup_contents():
    thumb = thumbnail_data_uri(Image.new("RGB", (200, 100), "red"))
    p = MapPoint("a.jpg", 1.0, 2.0, "North", true_lat=1.5, true_lon=2.5, true_region="South",
                 error=1234.5, thumbnail=thumb, extra={"confidence": 0.9})
    (popup, _) = _popups(render_map([p], frame="wgs84", error_unit="km"))
    for text in ("a.jpg", "North", "South", "1,234 km", "confidence", "0.9", thumb):
        assert text in popup


def test_thumbnail_data_uri_is_small_jpeg():
    import base64
    import io

    uri = thumbnail_data_uri(Image.new("RGBA", (300, 150), (0, 0, 255, 128)), max_px=64)
    assert uri.startswith("data:image/jpeg;base64,")
    img = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    assert img.format == "JPEG" and max(img.size) == 64


def test_plan_accepts_bytes_and_path(tmp_path):
    path = tmp_path / "plan.png"
    Image.new("L", (20, 20), 128).save(path)
    bounds = ((0.0, 0.0), (10.0, 10.0))
    for image in (path, str(path), path.read_bytes()):
        doc = render_map([], frame="planar", plan=PlanOverlay(image, bounds))
        assert "data:image/png;base64," in doc


def test_validation():
    with pytest.raises(ValueError, match="wgs84.*planar|planar.*wgs84"):
        build_map([], frame="utm")
    with pytest.raises(ValueError):
        MapPoint("a", float("nan"), 0.0)
    with pytest.raises(ValueError):
        MapPoint("a", 0.0, 0.0, true_lat=1.0)
    with pytest.raises(ValueError):
        MapPoint("a", 0.0, 0.0, thumbnail="https://example.com/x.jpg")
    with pytest.raises(ValueError):
        PlanOverlay(Image.new("RGB", (2, 2)), ((10.0, 0.0), (0.0, 10.0)))


def test_numpy_coordinates():
    import numpy as np

    p = MapPoint("a.jpg", np.float32(1.5), np.float32(2.5), true_lat=np.float64(1.0),
                 true_lon=np.int64(2), error=np.float32(3.0))
    assert "L.polyline(" in render_map([p], frame="planar")


def test_build_map_is_pure():
    import folium

    before = (list(folium.Map.default_js), list(folium.Map.default_css))
    build_map(_points(), frame="wgs84")
    assert (list(folium.Map.default_js), list(folium.Map.default_css)) == before
    assert folium.Map().default_js  # other folium users keep their CDN defaults
