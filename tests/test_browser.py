"""The app in a real browser: Debian's headless Chromium driven by Playwright (no browser download)."""
from __future__ import annotations

import csv
import io
import socket
from pathlib import Path

import pytest

from demo.settings import BUNDLED_EXAMPLES

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-dev-shm-usage"]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.is_file(), reason=f"{CHROMIUM} not found (apt-get install chromium)"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app_url(private_upload_folder):
    import app

    blocks, config = app.build(["--port", str(_free_port())])
    url = app.launch(blocks, config, prevent_thread_lock=True, quiet=True)
    yield url
    blocks.close()


@pytest.fixture(scope="module")
def page(app_url):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        page.dialogs = []  # any alert() would mean markup ran where text belonged
        page.on("dialog", lambda d: (page.dialogs.append(d.message), d.dismiss()))
        page.goto(app_url, wait_until="domcontentloaded")
        page.locator("#photos").wait_for(timeout=60_000)
        yield page
        browser.close()


def test_upload_predict_and_see_markers_on_the_map(page, tmp_path):
    from playwright.sync_api import expect

    ARTIFACTS.mkdir(exist_ok=True)
    example = sorted(BUNDLED_EXAMPLES.glob("*.jpg"))[0]
    xss = tmp_path / "x' onmouseover='alert(1)' <img src=x onerror=alert(2)>.jpg"
    xss.write_bytes(example.read_bytes())
    bad = tmp_path / "notes.jpg"
    bad.write_text("not a photo")
    formula = tmp_path / "=1+2.jpg"  # a spreadsheet formula if the CSV wrote it as is
    formula.write_bytes(example.read_bytes())

    page.locator("#photos input[type=file]").set_input_files([str(example), str(xss), str(bad), str(formula)])
    expect(page.locator("#photos a[href*='/gradio_api/file=']")).to_have_count(4, timeout=60_000)  # uploaded
    page.locator("#locate").click()

    results = page.locator("#results")
    expect(results).to_contain_text(example.name, timeout=120_000)
    expect(results).to_contain_text("onmouseover='alert(1)'")  # the name, shown as text
    expect(results).to_contain_text("this is a text file, not an image")
    expect(page.locator("#problems")).to_contain_text("1 of 4 photos could not be used")

    frame = page.frame_locator("#prediction-map iframe")
    markers = frame.locator("path.gm-pred")
    expect(markers).to_have_count(3, timeout=30_000)  # three photos predicted, the text file is not on the map
    expect(frame.locator(".leaflet-image-layer")).to_have_count(1)  # the campus plan under the points
    markers.last.dispatch_event("click")
    popup = frame.locator(".leaflet-popup-content")
    expect(popup).to_be_visible()
    assert "Predicted region" in popup.inner_text()
    expect(page.get_by_role("button", name="Download CSV")).to_be_visible()
    page.screenshot(path=str(ARTIFACTS / "predict.png"), full_page=True)
    with page.expect_download() as download:
        page.get_by_role("button", name="Download CSV").click()
    rows = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text(encoding="utf-8"))))
    assert [r["file"] for r in rows][-1] == "'=1+2.jpg"  # text in a spreadsheet, not a formula
    assert not rows[0]["latitude"].startswith("'") and isinstance(float(rows[0]["latitude"]), float)  # a number
    assert page.dialogs == []


FILLS = "paths => paths.map(p => p.getAttribute('fill'))"


def test_regions_are_shaded_by_the_selected_photos_probabilities(page):
    """Dot click (inside the map) and table-row click (the page tells the map) both reshade the regions."""
    from playwright.sync_api import expect

    page.get_by_role("button", name="Locate all examples").click()
    expect(page.locator("#results")).to_contain_text("campus_photo_6.jpg", timeout=120_000)
    frame = page.frame_locator("#prediction-map iframe")
    regions = frame.locator("path.gm-region")
    expect(regions).to_have_count(6, timeout=30_000)  # the bundle's six campus regions
    expect(frame.locator(".gm-region-label")).to_have_count(6)
    expect(frame.locator("body")).to_have_attribute("data-gm-selected", "0")  # the first photo to begin with
    first = regions.evaluate_all(FILLS)
    assert len(set(first)) > 1  # shaded by probability, not one flat colour
    frame.locator("path.gm-pred").nth(3).dispatch_event("click")
    expect(frame.locator("body")).to_have_attribute("data-gm-selected", "3")
    after_dot = regions.evaluate_all(FILLS)
    assert after_dot != first
    expect(frame.locator("#gm-follow-name")).to_have_text("campus_photo_4.jpg")
    page.locator('#results [data-testid="cell-5-0"]').click()
    expect(frame.locator("body")).to_have_attribute("data-gm-selected", "5", timeout=10_000)
    after_row = regions.evaluate_all(FILLS)
    assert after_row not in (first, after_dot)
    expect(frame.locator("#gm-follow-name")).to_have_text("campus_photo_6.jpg")
    # The most probable region of the selected photo is the darkest: its row's predicted region.
    predicted = page.locator('#results [data-testid="cell-5-1"]').inner_text().strip()
    names = frame.locator(".gm-region-label").all_inner_texts()
    darkest = min(range(6), key=lambda i: sum(int(after_row[i][k:k + 2], 16) for k in (1, 3, 5)))
    assert names[darkest] == predicted
    page.screenshot(path=str(ARTIFACTS / "predict_shading.png"), full_page=True)
    assert page.dialogs == []


def test_validation_explorer_shows_every_photo_and_filters(page):
    from playwright.sync_api import expect

    page.get_by_role("tab", name="Validation explorer").click()
    frame = page.frame_locator("#validation-map iframe")
    lines_and_dots = frame.locator("path.gm-pred, path.gm-truth, path.gm-line")
    expect(lines_and_dots).to_have_count(60 * 3, timeout=30_000)  # per photo: truth, prediction, error line
    # Built while its tab was hidden, the map must still fit the campus once shown (not stay zoomed out).
    plan = frame.locator(".leaflet-image-layer")
    expect(plan).to_be_visible()
    assert plan.bounding_box()["width"] > 300
    # Regions are shaded by accuracy; clicking one shows its confusion row and median error.
    regions = frame.locator("path.gm-region")
    expect(regions).to_have_count(6)
    assert len(set(regions.evaluate_all(FILLS))) > 1
    from demo.screenshot import open_region_popup

    text = open_region_popup(page, frame, 1)  # clicked where region 1's name is written
    assert text.startswith("1 · ")
    assert "photos · accuracy" in text and "median error" in text
    assert "Mistaken for:" in text or "All recognised." in text
    frame.get_by_text("Regions: Median error").click()
    expect(frame.locator("#gm-fill-1")).to_be_visible()
    expect(frame.locator("#gm-fill-0")).to_be_hidden()
    page.locator("#region-filter input").click()
    page.get_by_role("option", name="2 · ").click()
    expect(page.locator("#validation-map")).to_be_visible()
    frame = page.frame_locator("#validation-map iframe")
    expect(frame.locator(".gm-title")).to_contain_text("Region 2", timeout=30_000)
    assert 0 < frame.locator("path.gm-pred, path.gm-truth, path.gm-line").count() < 60 * 3
    page.screenshot(path=str(ARTIFACTS / "validation.png"), full_page=True)
    assert page.dialogs == []


def test_clicking_an_example_locates_it_and_the_model_tab_describes_the_model(page):
    from playwright.sync_api import expect

    page.get_by_role("tab", name="Predict").click()
    page.get_by_role("button", name="Thumbnail 1 of 6").click()
    results = page.locator("#results")
    expect(results).to_contain_text("campus_photo_1.jpg", timeout=120_000)
    expect(results).not_to_contain_text("notes.jpg")  # the new request replaced the old results
    expect(page.frame_locator("#prediction-map iframe").locator("path.gm-pred")).to_have_count(1)
    page.get_by_role("tab", name="Model").click()
    expect(page.get_by_text("efficientnet_lite0 (shared with region)")).to_be_visible()
    expect(page.get_by_text("bundled synthetic demo")).to_be_visible()
    assert page.dialogs == []
