"""The collection's map (map.html): photos coloured by region over the region polygons, offline."""
from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pandas as pd
import pytest

from demo.collection import collection_map
from demo.colours import region_colours
from demo.maps import MapPoint
from geomodel.collect.walk import regions_geojson
from geomodel.geo import planar_to_wgs84
from geomodel.synthetic import make_campus

EVIL = "x' onmouseover='alert(1)' <img src=x onerror=alert(2)>.jpg"


def _labels(plan, n=24, seed=0) -> pd.DataFrame:
    pts = np.random.default_rng(seed).uniform(50, 950, (n, 2))
    lat, lon = planar_to_wgs84(pts[:, 0], pts[:, 1])
    return pd.DataFrame({"filename": [f"p{i:02d}.jpg" for i in range(n)], "latitude": lat, "longitude": lon,
                         "Region_ID": plan.regions_of(pts[:, 0], pts[:, 1]) + 1,
                         "timestamp": "2024-05-01T10:00:00.00Z", "angle": np.r_[[45.0], [np.nan] * (n - 1)]})


def _payload(doc: str) -> dict:
    m = re.search(r"var (\w+) = (\{\"frame\".*?\});\n", doc)
    return json.loads(m.group(2))


def test_points_take_their_regions_colour_and_regions_their_photo_counts():
    plan = make_campus(n_regions=4, seed=3)
    labels = _labels(plan)
    doc = collection_map(labels, regions_geojson(plan), frame="wgs84", title="Collection")
    d = _payload(doc)
    colours = region_colours(4)
    by_name = {p[0]: p for p in d["pts"]}
    for row in labels.itertuples():
        p = by_name[row.filename]
        assert p[9]["colour"] == colours[row.Region_ID - 1]
        assert d["strings"][p[3]] == plan.region_names[row.Region_ID - 1]
        assert p[9]["thumb"] == f"images/{row.filename}"
    assert by_name["p00.jpg"][9]["rows"] == [["Time", "2024-05-01T10:00:00.00Z"], ["Heading", "45°"]]
    counts = np.bincount(labels["Region_ID"], minlength=5)[1:]
    assert d["regions"]["fills"][0]["texts"] == [str(c) for c in counts]
    assert d["words"]["region"] == "Region" and "Predicted" not in d["words"]["coords"]
    for name in plan.region_names:  # the legend names each colour's region
        assert f"</span>{name}</div>" in doc
    assert not re.search(r"<(?:script|link)\b[^>]*\b(?:src|href)=", doc)  # nothing external: opens offline


def test_names_are_text_and_odd_formats_get_no_picture():
    plan = make_campus(n_regions=2, seed=0)
    gj = regions_geojson(plan)
    gj["features"][0]["properties"]["name"] = "<script>alert(3)</script>"
    labels = _labels(plan, n=4)
    labels.loc[0, "filename"] = EVIL
    labels.loc[1, "filename"] = "scan.tif"
    doc = collection_map(labels, gj, frame="wgs84")
    assert "<script>alert(3)" not in doc and "<img src=x" not in doc
    d = _payload(doc)
    thumbs = {p[0]: (p[9] or {}).get("thumb") for p in d["pts"]}
    assert thumbs["scan.tif"] is None and thumbs["p02.jpg"] == "images/p02.jpg"
    evil = next(k for k in thumbs if "onmouseover" in k)
    assert re.fullmatch(r"images/[A-Za-z0-9_.%-]+", thumbs[evil]) and unquote(thumbs[evil]) == f"images/{EVIL}"


def test_point_colours_are_checked():
    with pytest.raises(ValueError, match="colour must be"):
        MapPoint("a.jpg", 1.0, 2.0, colour="red; background:url(x)")


@pytest.mark.slow
def test_map_html_opens_offline_in_chromium(tmp_path):
    chromium = Path("/usr/bin/chromium")
    if not chromium.is_file():
        pytest.skip(f"{chromium} not found (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    plan = make_campus(n_regions=4, seed=3)
    labels = _labels(plan)
    (tmp_path / "map.html").write_text(collection_map(labels, regions_geojson(plan), frame="wgs84"))
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(chromium), headless=True, args=["--no-sandbox"])
        page = browser.new_page()
        errors, remote = [], []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.route(re.compile(r"^https?://"), lambda route: (remote.append(route.request.url), route.abort()))
        page.goto((tmp_path / "map.html").as_uri())
        page.wait_for_selector("path.gm-pred")
        fills = page.eval_on_selector_all("path.gm-pred", "ps => ps.map(p => p.getAttribute('fill'))")
        assert sorted(fills) == sorted(region_colours(4)[r - 1] for r in labels["Region_ID"])
        assert page.locator(".gm-region-label").all_inner_texts() == plan.region_names
        assert errors == [] and all("openstreetmap.org" in u for u in remote)  # only map tiles, and it still draws
        browser.close()
