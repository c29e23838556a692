"""`python -m demo.screenshot`: the README's picture of the app, taken in headless Chromium.

Launches the app on a free port, locates every bundled example photo, and saves a PNG of the
Predict tab (and, with `--validation`, one of the Validation explorer).
"""
from __future__ import annotations

import argparse
import socket
import sys
from pathlib import Path
from typing import Sequence

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-dev-shm-usage"]


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m demo.screenshot", description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshot.png")
    p.add_argument("--validation", type=Path, help="also save the Validation explorer here")
    p.add_argument("--chromium", default="/usr/bin/chromium", help="browser executable")
    p.add_argument("--width", type=int, default=1400)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    sys.path.insert(0, str(ROOT))
    import app
    from demo.settings import BUNDLED_EXAMPLES, list_images
    from playwright.sync_api import expect, sync_playwright

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    blocks, config = app.build(["--port", str(port)])
    url = app.launch(blocks, config, prevent_thread_lock=True, quiet=True)
    examples = [str(p) for p in list_images(BUNDLED_EXAMPLES)]
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=args.chromium, headless=True, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": args.width, "height": 1000})
            page.goto(url, wait_until="domcontentloaded")
            page.locator("#photos input[type=file]").set_input_files(examples)
            expect(page.locator("#photos a[href*='/gradio_api/file=']")).to_have_count(len(examples), timeout=60_000)
            page.locator("#locate").click()
            expect(page.locator("#results")).to_contain_text(Path(examples[-1]).name, timeout=120_000)
            frame = page.frame_locator("#prediction-map iframe")
            expect(frame.locator("path.gm-pred")).to_have_count(len(examples), timeout=30_000)
            markers = frame.locator("path.gm-pred")
            markers.nth(min(4, len(examples) - 1)).dispatch_event("click")  # a low dot: its popup fits
            page.wait_for_timeout(500)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(args.out), full_page=True)
            print(f"saved {args.out}")
            if args.validation:
                page.get_by_role("tab", name="Validation explorer").click()
                expect(page.frame_locator("#validation-map iframe").locator("path.gm-pred").first
                       ).to_be_visible(timeout=30_000)
                page.wait_for_timeout(500)
                page.screenshot(path=str(args.validation), full_page=True)
                print(f"saved {args.validation}")
            browser.close()
    finally:
        blocks.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
