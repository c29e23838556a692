"""Tests for demo.maps: pure map builders, rendered to HTML and inspected as text."""

import html
import json
import re

import numpy as np
import pytest
from PIL import Image

from demo.map_regions import RegionFill
from demo.maps import MapPoint, PlanOverlay, build_map, render_map, thumbnail_data_uri, to_iframe
from regions_geojson import campus_geojson

EVIL = "<img src=x onerror=alert(1)>.jpg"
CDN_TAG = re.compile(r"<(?:script|link)\b[^>]*\b(?:src|href)\s*=\s*[\"']?(?:https?:)?//", re.I)


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


def _payload(doc: str) -> dict:
    """The JSON payload map.js draws (points, regions, fills)."""
    return json.loads(re.search(r"var gm_data_\w+ = (\{.*?\});\n", doc).group(1))


def _campus(n_regions: int = 6) -> dict:
    from geomodel.synthetic import make_campus

    return campus_geojson(make_campus(n_regions=n_regions, seed=0))


@pytest.mark.parametrize("frame", ["wgs84", "planar"])
def test_counts_markers_and_lines(frame):
    doc = render_map(_points(n_truth=2, n_pred_only=1), frame=frame, error_unit="m")
    pts = _payload(doc)["pts"]
    assert [p[0] for p in pts] == ["img_0.jpg", "img_1.jpg", "pred_0.jpg"]
    assert sum(p[4] is not None for p in pts) == 2  # two truths, so two error lines
    assert pts[1][1:3] == [219100.0, 142050.0] and pts[1][4:6] == [219150.0, 142070.0]
    for group in ("Predictions", "Ground truth", "Error lines"):
        assert f'"{group}"' in doc
    assert "L.control.layers(" in doc and "gm_map.points(" in doc
    assert 'class="gm-legend"' in doc and "Error (m)" in doc
    assert "L.markerClusterGroup" not in doc  # a few points are not clustered


def test_prediction_only_has_no_lines_or_truth():
    doc = render_map(_points(n_truth=0, n_pred_only=3), frame="planar")
    assert len(_payload(doc)["pts"]) == 3
    assert '"Error lines"' not in doc and '"Ground truth"' not in doc
    assert "Ground truth</div>" not in doc  # no truth row in the legend


def test_error_colours_follow_a_branca_scale():
    from demo.colours import error_scale

    doc = render_map(_points(n_truth=3, n_pred_only=0), frame="planar")
    data = _payload(doc)
    colours = [data["colours"][p[8]] for p in data["pts"]]
    # errors 10, 20, 30: the 5th percentile and below green, the median yellow, the 95th and above red
    assert colours == ["#006837", "#ffffbf", "#a50026"]
    scale = error_scale([10.0, 20.0, 30.0], quantiles=(0.05, 0.5, 0.95))
    assert scale.colour(15.0) not in colours  # interpolated in between
    assert scale.colormap.vmin == pytest.approx(11.0) and scale.colormap.vmax == pytest.approx(29.0)
    plain = _payload(render_map(_points(n_truth=3, n_pred_only=0), frame="planar", colour_by_error=False))
    assert plain["colours"] == ["#666666"]


@pytest.mark.parametrize("frame", ["wgs84", "planar"])
def test_malicious_names_are_text(frame):
    p = MapPoint(EVIL, 10.0, 20.0, region="<b>r</b>", true_lat=11.0, true_lon=21.0,
                 true_region="{{ 7*7 }}", error=1.0, extra={"<i>k</i>": "${alert(2)}"})
    regions = _campus(2)
    regions["features"][0]["properties"]["name"] = "<img src=x onerror=alert(4)>"
    doc = render_map([p], frame=frame, title="<script>alert(3)</script>", regions=regions)
    frame_html = to_iframe(doc)
    for text in (doc, frame_html):
        assert "<img src=x" not in text
        assert "<script>alert(3)" not in text
        assert "alert(4)>" not in text
    data = _payload(doc)
    [pt] = data["pts"]
    assert pt[0] == html.escape(EVIL)
    assert "&lt;b&gt;r&lt;/b&gt;" in data["strings"] and "{{ 7*7 }}" in data["strings"]  # no Jinja evaluation
    assert pt[9]["rows"] == [["&lt;i&gt;k&lt;/i&gt;", "${alert(2)}"]]  # inserted as markup by map.js: escaped
    assert data["regions"]["names"][0] == "&lt;img src=x onerror=alert(4)&gt;"
    assert "&lt;script&gt;alert(3)&lt;/script&gt;" in doc  # legend title and <title>
    assert "\\u003cimg" not in doc and "onerror=alert(4)\\u003e" not in doc  # never raw, even JSON-escaped


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
    assert "L.map(" in doc and _payload(doc)["pts"] == []
    assert ("L.imageOverlay(" in doc) == plan
    assert bool(re.search(r"map_\w+\.fitBounds\(", doc)) == plan
    assert "No points" in doc


def test_single_point_bounds_are_not_degenerate():
    doc = render_map([MapPoint("a.jpg", 1.0, 2.0)], frame="planar")
    (s, w), (n, e) = json.loads(re.search(r"map_\w+\.fitBounds\((\[\[.*?\]\])", doc).group(1))
    assert s < 1.0 < n and w < 2.0 < e


def test_popup_data():
    thumb = thumbnail_data_uri(Image.new("RGB", (200, 100), "red"))
    p = MapPoint("a.jpg", 1.0, 2.0, "North", true_lat=1.5, true_lon=2.5, true_region="South",
                 error=1234.5, thumbnail=thumb, extra={"confidence": 0.9})
    data = _payload(render_map([p], frame="wgs84", error_unit="km"))
    [pt] = data["pts"]
    assert data["strings"][pt[3]] == "North" and data["strings"][pt[6]] == "South"
    assert pt[7] == 1234.5 and data["unit"] == "km"
    assert pt[9] == {"rows": [["confidence", "0.9"]], "thumb": thumb}
    served = MapPoint("b.jpg", 1.0, 2.0, thumbnail="gradio_api/file=/tmp/thumbs-1/0001.jpg")
    assert _payload(render_map([served], frame="wgs84"))["pts"][0][9]["thumb"] == served.thumbnail


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
    for url in ("https://example.com/x.jpg", "//example.com/x.jpg", "/etc/x.jpg", "a/../../x.jpg",
                "javascript:alert(1)//.jpg", 'a".jpg', "x.svg"):
        with pytest.raises(ValueError):
            MapPoint("a", 0.0, 0.0, thumbnail=url)
    with pytest.raises(ValueError):
        PlanOverlay(Image.new("RGB", (2, 2)), ((10.0, 0.0), (0.0, 10.0)))


def test_numpy_coordinates():
    import numpy as np

    p = MapPoint("a.jpg", np.float32(1.5), np.float32(2.5), true_lat=np.float64(1.0),
                 true_lon=np.int64(2), error=np.float32(3.0))
    assert _payload(render_map([p], frame="planar"))["pts"][0][1:3] == [1.5, 2.5]


def test_build_map_is_pure():
    import folium

    before = (list(folium.Map.default_js), list(folium.Map.default_css))
    build_map(_points(), frame="wgs84")
    assert (list(folium.Map.default_js), list(folium.Map.default_css)) == before
    assert folium.Map().default_js  # other folium users keep their CDN defaults


# ------------------------------------------------------------------------------------------ regions


def test_regions_are_drawn_with_names_and_fill_values():
    from demo.colours import accuracy_scale

    regions = _campus(6)
    acc = [0.1, 0.5, None, 0.9, 1.0, 0.0]
    fill = RegionFill("Accuracy", acc, accuracy_scale(), popups=[f"<b>{i}</b>" for i in range(6)])
    doc = render_map(_points(), frame="planar", regions=regions, region_fills=[fill])
    r = _payload(doc)["regions"]
    assert len(r["geojson"]["features"]) == 6
    for i, (feat, src) in enumerate(zip(r["geojson"]["features"], regions["features"])):
        assert feat["properties"] == {"i": i}  # no user text in the geometry
        got, want = (np.asarray(g["geometry"]["coordinates"]) for g in (feat, src))
        assert got.shape == want.shape and np.allclose(got, want, rtol=1e-6)
    assert r["names"] == [f["properties"]["name"] for f in regions["features"]]
    assert r["fills"][0]["colours"] == accuracy_scale().colours(acc)
    assert r["fills"][0]["colours"][2] == "#bdbdbd"  # no data: grey
    assert r["fills"][0]["texts"] == ["10%", "50%", "–", "90%", "100%", "0%"]
    assert r["fills"][0]["popups"][0] == "<b>0</b>"  # given already escaped: inserted as is
    assert r["follow"] == -1
    for (lat, lon), feat in zip(r["labels"], regions["features"]):  # names are written inside their region
        ring = feat["geometry"]["coordinates"][0]
        assert min(c[1] for c in ring) < lat < max(c[1] for c in ring)
        assert min(c[0] for c in ring) < lon < max(c[0] for c in ring)
    assert '"Regions: Accuracy"' in doc and '"Region names"' in doc and "gm_regions" in doc
    assert 'id="gm-fill-0"' in doc and "Region accuracy" in doc and "no data" in doc


def test_several_fills_are_base_layers_one_shown():
    from demo.colours import accuracy_scale, error_scale

    fills = [RegionFill("Accuracy", [0.5] * 6, accuracy_scale()),
             RegionFill("Median error", [1.0, 2, 3, 4, 5, 6], error_scale([1, 6], "m"))]
    m = build_map([], frame="planar", regions=_campus(6), region_fills=fills)
    doc = m.get_root().render()
    control = re.search(r"base_layers : \{(.*?)\},\s*overlays", doc, re.S).group(1)
    assert '"Regions: Accuracy"' in control and '"Regions: Median error"' in control
    layers = re.findall(r"var (gm_layer_\w+) = gm_map\.regions\((\d+)\)", doc)
    assert [k for _, k in layers] == ["0", "1"]
    assert f"{layers[0][0]}.addTo(" in doc and f"{layers[1][0]}.addTo(" not in doc


def test_a_fill_can_follow_the_selected_point():
    from demo.colours import probability_scale

    probs = [[0.7, 0.2, 0.1, 0, 0, 0], [0.0, 0.0, 0.1, 0.1, 0.3, 0.5]]
    pts = [MapPoint(f"p{i}.jpg", 100.0 * i, 200.0, region_values=v) for i, v in enumerate(probs)]
    regions = _campus(6)
    doc = render_map(pts, frame="planar", regions=regions, region_fills=[RegionFill.probability(n_regions=6)])
    data = _payload(doc)
    assert data["regions"]["follow"] == 0
    for p, v in zip(data["pts"], probs):
        assert p[9]["fill"]["colours"] == probability_scale().colours(v)
        assert p[9]["fill"]["texts"][0] == f"{v[0]:.0%}"
    assert "gm_map.finish(0);" in doc  # the first photo is shown
    assert 'id="gm-follow-name">p0.jpg<' in doc
    second = render_map(pts, frame="planar", regions=regions, region_fills=[RegionFill.probability(n_regions=6)],
                        selected=1)
    assert "gm_map.finish(1);" in second and 'id="gm-follow-name">p1.jpg<' in second
    with pytest.raises(ValueError, match="3 region values for 6 regions"):
        render_map([MapPoint("a", 1.0, 2.0, region_values=[1, 0, 0])], frame="planar", regions=regions,
                   region_fills=[RegionFill.probability(n_regions=6)])


def test_region_geometry_is_checked():
    good = _campus(2)
    bad_cases = {
        "FeatureCollection": {"type": "Feature"},
        "region_id must be an integer": {**good, "features": [
            {**good["features"][0], "properties": {"region_id": "1", "name": "a"}}]},
        "Polygon or MultiPolygon": {**good, "features": [
            {**good["features"][0], "geometry": {"type": "Point", "coordinates": [0, 0]}}]},
        "finite": {**good, "features": [
            {**good["features"][0], "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [1, float("nan")],
                                                                                     [1, 1], [0, 0]]]}}]},
        "exactly 1..1": {**good, "features": [good["features"][1]]},
    }
    for message, regions in bad_cases.items():
        with pytest.raises(ValueError, match=message):
            render_map([], frame="planar", regions=regions)
    with pytest.raises(ValueError, match="region fill 'x': 1 values for 2 regions"):
        from demo.colours import accuracy_scale

        render_map([], frame="planar", regions=good, region_fills=[RegionFill("x", [1.0], accuracy_scale())])
    multi = {"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {"region_id": 1, "name": "m"},
             "geometry": {"type": "MultiPolygon", "coordinates": [good["features"][0]["geometry"]["coordinates"],
                                                                  good["features"][1]["geometry"]["coordinates"]]}}]}
    assert len(_payload(render_map([], frame="planar", regions=multi))["regions"]["geojson"]["features"]) == 1


def test_regions_alone_fit_the_map():
    doc = render_map([], frame="planar", regions=_campus(6))
    (s, w), (n, e) = json.loads(re.search(r"map_\w+\.fitBounds\((\[\[.*?\]\])", doc).group(1))
    assert s < 0 < 1000 < n and w < 0 < 1000 < e
    assert '"Regions"' in doc  # outlines only: one overlay


def test_legend_ticks_do_not_print_over_each_other():
    from demo.colours import error_scale, probability_scale

    def ticks(scale):
        return re.findall(r'left:([\d.]+)%">([^<]*)<', scale.legend_html())

    # the campus's errors: 5th percentile 140.5, median 750.7 (24 % along the bar), 95th 2,636
    skewed = error_scale([140.5] * 5 + [750.7] * 10 + [2636.0] * 5, "units", quantiles=(0.05, 0.5, 0.95))
    assert [t for _, t in ticks(skewed)] == ["140.5", "2,636"]
    even = error_scale([0.0, 50.0, 100.0], "m", quantiles=(0.0, 0.5, 1.0))
    assert [float(x) for x, _ in ticks(even)] == [0.0, 50.0, 100.0]
    assert [t for _, t in ticks(probability_scale())] == ["0%", "25%", "50%", "75%", "100%"]


def test_a_far_label_outlier_is_drawn_but_the_map_opens_on_the_regions():
    """Like the campus's img_0146 (30 km off): without regions or a plan it is in view; with them it is not."""
    pts = [MapPoint("a.jpg", 500.0, 500.0, true_lat=400.0, true_lon=450.0),
           MapPoint("far.jpg", 600.0, 300.0, true_lat=250_000.0, true_lon=300.0),
           MapPoint("near.jpg", 1200.0, -200.0)]  # beyond the regions, within a quarter of their size: in view

    def fit(doc):
        return json.loads(re.search(r"map_\w+\.fitBounds\((\[\[.*?\]\])", doc).group(1))

    (s, w), (n, e) = fit(render_map(pts, frame="planar"))
    assert n > 250_000
    doc = render_map(pts, frame="planar", regions=_campus(6))
    (s, w), (n, e) = fit(doc)
    assert s < 0 and 1200 < n < 1300 and w < -200 and 1000 < e < 1100
    assert len(_payload(doc)["pts"]) == 3 and 250_000.0 in _payload(doc)["pts"][1]  # still drawn
    zoom_out = int(re.search(r'"minZoom": (-?\d+)', doc).group(1))
    assert 2 ** zoom_out * 250_000 <= 100  # zooming out reaches it


def test_many_points_are_clustered_offline():
    from demo.maps import CLUSTER_ABOVE

    pts = [MapPoint(f"{i}.jpg", float(i % 50), float(i // 50), true_lat=float(i % 50) + 0.5, true_lon=float(i // 50),
                    error=0.5) for i in range(CLUSTER_ABOVE + 1)]
    doc = render_map(pts, frame="planar", regions=_campus(6))
    assert doc.count("L.markerClusterGroup(") == 2  # predictions and truths; lines cannot cluster
    assert "Leaflet.markercluster" in doc or "MarkerClusterGroup" in doc  # the plug-in is inlined
    assert ".marker-cluster-small" in doc  # and its CSS
    assert not CDN_TAG.search(doc) and "cdnjs" not in doc and "sourceMappingURL" not in doc
    lines = re.search(r'var (feature_group_\w+) = L\.featureGroup', doc).group(1)
    assert f"{lines}.addTo(" not in doc  # thousands of error lines start hidden (the layer list shows them)
    more = pts + [MapPoint(f"more_{i}.jpg", 1.0, 2.0, true_lat=1.5, true_lon=2.5, error=0.5) for i in range(1000)]
    per_photo = (len(to_iframe(render_map(more, frame="planar"))) - len(to_iframe(doc))) / 1000
    assert per_photo < 120  # about a hundred bytes per photo, not kilobytes of Leaflet calls
    assert "L.markerClusterGroup(" not in render_map(pts[:10], frame="planar")


# ------------------------------------------------------------------------------------------ in Chromium

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def browser():
    from pathlib import Path

    if not Path(CHROMIUM).is_file():
        pytest.skip(f"{CHROMIUM} not found (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


def _open(browser, doc: str):
    page = browser.new_page(viewport={"width": 900, "height": 600})
    page.dialogs, page.errors = [], []
    page.on("dialog", lambda d: (page.dialogs.append(d.message), d.dismiss()))
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    page.set_content(doc)
    return page


def _fills(page) -> list[str]:
    return page.eval_on_selector_all("path.gm-region", "ps => ps.map(p => p.getAttribute('fill'))")


@pytest.mark.slow
def test_in_chromium_popups_show_names_as_text_and_clicks_reshade_regions(browser):
    from demo.colours import probability_scale

    regions = _campus(6)
    regions["features"][2]["properties"]["name"] = "<img src=x onerror=alert(5)>"
    probs = [[0.7, 0.2, 0.1, 0, 0, 0], [0.0, 0.0, 0.1, 0.1, 0.3, 0.5]]
    pts = [MapPoint(EVIL, 300.0, 200.0, "<b>r</b>", extra={"<i>k</i>": "${alert(2)}"}, region_values=probs[0]),
           MapPoint("b.jpg", 700.0, 800.0, "S", region_values=probs[1])]
    page = _open(browser, render_map(pts, frame="planar", regions=regions,
                                     region_fills=[RegionFill.probability(n_regions=6)]))
    assert _fills(page) == probability_scale().colours(probs[0])
    page.locator("path.gm-pred").nth(1).dispatch_event("click")
    assert _fills(page) == probability_scale().colours(probs[1])
    assert page.locator("#gm-follow-name").inner_text() == "b.jpg"
    page.locator("path.gm-pred").nth(0).dispatch_event("click")
    page.wait_for_timeout(400)  # the other photo's popup fades out
    popup = page.locator(".leaflet-popup-content").last.inner_text()
    assert EVIL in popup and "<b>r</b>" in popup and "<i>k</i>" in popup and "${alert(2)}" in popup
    assert _fills(page) == probability_scale().colours(probs[0])
    assert page.locator("#gm-follow-name").inner_text() == EVIL
    labels = page.locator(".gm-region-label").all_inner_texts()
    assert "<img src=x onerror=alert(5)>" in labels and page.locator(".gm-region-label img").count() == 0
    # The parent page selects a photo by index (a top-level page is its own parent); nothing else is obeyed.
    for bad in ("{gmSelect: '1'}", "{gmSelect: 7}", "{gmSelect: -1}", "'<img src=x onerror=alert(6)>'"):
        page.evaluate(f"window.postMessage({bad}, '*')")
    page.wait_for_timeout(100)
    assert _fills(page) == probability_scale().colours(probs[0])
    page.evaluate("window.postMessage({gmSelect: 1}, '*')")
    page.wait_for_timeout(100)
    assert _fills(page) == probability_scale().colours(probs[1])
    assert page.dialogs == [] and page.errors == []
    page.close()


@pytest.mark.slow
def test_in_chromium_a_region_click_shows_its_popup_and_the_legend_follows_the_layer(browser):
    from demo.colours import accuracy_scale, error_scale

    fills = [RegionFill("Accuracy", [0.5] * 6, accuracy_scale(), popups=[f"<b>Region {i}</b> row" for i in range(6)]),
             RegionFill("Median error", [1.0, 2, 3, 4, 5, 6], error_scale([1, 6], "m"))]
    page = _open(browser, render_map(_points(), frame="planar", regions=_campus(6), region_fills=fills))
    assert page.locator("path.gm-region").count() == 6
    page.locator("path.gm-region").nth(3).dispatch_event("click")
    assert page.locator(".leaflet-popup-content").inner_text() == "Region 3 row"
    assert page.locator("#gm-fill-0").is_visible() and not page.locator("#gm-fill-1").is_visible()
    page.get_by_text("Regions: Median error").click()
    assert _fills(page) == error_scale([1, 6], "m").colours([1.0, 2, 3, 4, 5, 6])
    assert page.locator("#gm-fill-1").is_visible() and not page.locator("#gm-fill-0").is_visible()
    assert page.errors == []
    page.close()


def test_thumbnail_folder_writes_small_jpegs_with_servable_urls(tmp_path):
    from demo.thumbnails import ThumbnailFolder

    folder = ThumbnailFolder(tmp_path / "cache with space", max_px=32)
    url = folder.add(Image.new("RGBA", (300, 100), (255, 0, 0, 128)))
    path = next(folder.folder.iterdir())
    assert path.parent.parent == (tmp_path / "cache with space").resolve()
    assert url.startswith("gradio_api/file=") and url.endswith("/000001.jpg") and "%20" in url
    img = Image.open(path)
    assert img.format == "JPEG" and max(img.size) == 32
    assert MapPoint("a.jpg", 1.0, 2.0, thumbnail=url).thumbnail == url  # a URL the maps accept
    assert len(folder) == 1
    folder.remove()
    assert not folder.folder.exists()
