"""`python -m demo.screenshot`: the README's pictures of the app, taken in headless Chromium.

Launches the app on a free port (the bundled demo, or the model given with `--app-args`),
locates every example photo, and saves a PNG of the Predict tab with the regions shaded for one
photo; with `--validation`, also one of the Validation explorer with a region's popup open (its
accuracy, median error and confusion row). PNGs are saved with a 256-colour palette: a fraction
of the bytes, which keeps the repository light.
"""
from __future__ import annotations

import argparse
import io
import shlex
import socket
import sys
from pathlib import Path
from typing import Sequence

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-dev-shm-usage"]


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m demo.screenshot", description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshot.png", help="the Predict tab's picture")
    p.add_argument("--validation", type=Path, help="also save the Validation explorer here")
    p.add_argument("--no-predict", action="store_true", help="only the explorer (e.g. a model without examples)")
    p.add_argument("--app-args", default="", help="flags for app.py, e.g. '--model DIR --val-csv CSV --val-images DIR'")
    p.add_argument("--select", type=int, default=4, help="which located photo (0-based) shades the Predict map")
    p.add_argument("--region", type=int, default=0,
                   help="region (1-based) whose popup the explorer shows (default: the first with mistakes)")
    p.add_argument("--chromium", default="/usr/bin/chromium", help="browser executable")
    p.add_argument("--width", type=int, default=1400)
    p.add_argument("--height", type=int, default=1000)
    return p


def save_png(png: bytes, path: Path) -> None:
    """Save a screenshot with a 256-colour palette (no dithering: flat UI colours stay flat)."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.open(io.BytesIO(png)).convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT,
                                                              dither=Image.Dither.NONE)
    img.save(path, optimize=True)
    print(f"saved {path} ({path.stat().st_size / 1024:.0f} KB)")


def predict_tab(page, examples: list[str], select: int) -> bytes:
    from playwright.sync_api import expect

    page.locator("#photos input[type=file]").set_input_files(examples)
    expect(page.locator("#photos a[href*='/gradio_api/file=']")).to_have_count(len(examples), timeout=60_000)
    page.locator("#locate").click()
    expect(page.locator("#results")).to_contain_text(Path(examples[-1]).name, timeout=120_000)
    frame = page.frame_locator("#prediction-map iframe")
    markers = frame.locator("path.gm-pred")
    expect(markers).to_have_count(len(examples), timeout=30_000)
    select = min(select, len(examples) - 1)
    page.locator(f'#results [data-testid="cell-{select}-0"]').click()  # shade the regions for this photo
    expect(frame.locator("body")).to_have_attribute("data-gm-selected", str(select), timeout=10_000)
    markers.nth(select).dispatch_event("click")  # and show its popup
    page.evaluate("window.scrollTo(0, 0)")  # Chromium leaves iframes out of view blank in full-page pictures
    page.wait_for_function("[...document.querySelectorAll('img')].every(i => i.complete)", timeout=30_000)
    page.wait_for_timeout(500)
    return page.screenshot(full_page=True)


def explorer_tab(page, region: int) -> bytes:
    from playwright.sync_api import expect

    page.get_by_role("tab", name="Validation explorer").click()
    frame = page.frame_locator("#validation-map iframe")
    expect(frame.locator("path.gm-pred").first).to_be_attached(timeout=600_000)  # predicted in the background
    n = frame.locator(".gm-region-label").count()
    for r in ([region] if region else range(1, n + 1)):
        if r <= n and "Mistaken for:" in open_region_popup(page, frame, r):
            break
    page.wait_for_timeout(800)
    return page.screenshot(full_page=True)


def open_region_popup(page, frame, region: int) -> str:
    """Click region `region` (1-based) where its name is written; its popup's text."""
    from playwright.sync_api import expect

    label = frame.locator(".gm-region-label").nth(region - 1).bounding_box()  # page coordinates
    iframe = page.locator("#validation-map iframe").bounding_box()
    at = {"clientX": label["x"] + label["width"] / 2 - iframe["x"],
          "clientY": label["y"] + label["height"] / 2 - iframe["y"]}
    frame.locator("path.gm-region").nth(region - 1).dispatch_event("click", at)  # the popup opens where clicked
    popup = frame.locator(".leaflet-popup-content").last
    expect(popup).to_contain_text(f"{region} · ")
    return popup.inner_text()


def main(argv: Sequence[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    sys.path.insert(0, str(ROOT))
    import app
    from playwright.sync_api import sync_playwright

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    blocks, config = app.build(["--port", str(port), *shlex.split(args.app_args)])
    url = app.launch(blocks, config, prevent_thread_lock=True, quiet=True)
    examples = [str(p) for p in config.examples or []]
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=args.chromium, headless=True, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": args.width, "height": args.height})
            page.goto(url, wait_until="domcontentloaded")
            page.locator("#photos").wait_for(timeout=60_000)
            if not args.no_predict:
                if not examples:
                    raise SystemExit("no example photos to locate: give --app-args '--examples DIR' or --no-predict")
                save_png(predict_tab(page, examples, args.select), args.out)
            if args.validation:
                save_png(explorer_tab(page, args.region), args.validation)
            browser.close()
    finally:
        blocks.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
