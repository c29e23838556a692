"""Load test: N concurrent gradio_client clients, M requests each, against a freshly launched app.

    python bench/load_test.py --clients 8 --requests 5

Starts `python app.py` on a free port as a separate process (so its memory can be measured),
sends each request a few example photos, every third request with bad files mixed in (an empty
file, a text file named .jpg, a truncated JPEG), and prints one JSON object:

    ok / failed requests, p50 / p95 / max latency in seconds, photos predicted, bad files
    reported, the server's peak resident memory (VmHWM) and whether it was still up at the end.

Exit status 0 only if every request succeeded (good photos predicted, bad files reported with a
reason) and the server stayed up.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Sequence

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import free_port, status_kb, wait_ready  # noqa: E402


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=8, help="concurrent clients (N)")
    p.add_argument("--requests", type=int, default=5, help="requests per client (M)")
    p.add_argument("--photos", type=int, default=3, help="good photos per request")
    p.add_argument("--photo-px", type=int, default=0, help="resize the example photos to this side first "
                   "(e.g. 4000 for phone-sized photos; 0: as bundled, 128 px)")
    p.add_argument("--bad-every", type=int, default=3, help="every k-th request also carries bad files (0: never)")
    p.add_argument("--app-args", default="", help="extra flags for app.py, e.g. '--concurrency 2'")
    p.add_argument("--startup-timeout", type=float, default=300.0, help="seconds to wait for the app")
    p.add_argument("--seed", type=int, default=0)
    return p


def _bad_files(folder: Path, example: Path) -> list[Path]:
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.jpg").write_text("not a photo\n")
    data = example.read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 2])
    return [folder / "empty.jpg", folder / "notes.jpg", folder / "truncated.jpg"]


def _resized(photos: list[Path], px: int, folder: Path) -> list[Path]:
    from PIL import Image

    out = []
    for p in photos:
        target = folder / f"{p.stem}_{px}.jpg"
        Image.open(p).convert("RGB").resize((px, px * 3 // 4), Image.Resampling.BICUBIC).save(target, quality=90)
        out.append(target)
    return out


def _percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    k = (len(s) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def run(args: argparse.Namespace) -> dict:
    from gradio_client import Client, handle_file

    from demo.settings import BUNDLED_EXAMPLES, list_images

    work = Path(tempfile.mkdtemp(prefix="geomodel-load-"))
    examples = list_images(BUNDLED_EXAMPLES)
    if args.photo_px:
        examples = _resized(examples, args.photo_px, work)
    bad = _bad_files(work, examples[0])
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1"}
    log = open(work / "server.log", "w")
    proc = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--port", str(port), *args.app_args.split()],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    rss_samples: list[int] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            kb = status_kb(proc.pid, "VmRSS")
            if kb:
                rss_samples.append(kb)
            stop.wait(0.2)

    latencies: list[float] = []
    failures: list[str] = []
    counts = {"photos_predicted": 0, "bad_files_reported": 0}
    lock = threading.Lock()

    def client_loop(ci: int) -> None:
        rng = random.Random(args.seed * 1000 + ci)
        try:
            client = Client(url, verbose=False, download_files=False)
        except Exception as exc:  # noqa: BLE001 - a client that cannot connect is a failed request
            with lock:
                failures.extend([f"client {ci}: connect: {exc}"] * args.requests)
            return
        for ri in range(args.requests):
            photos = rng.sample(examples, min(args.photos, len(examples)))
            with_bad = args.bad_every > 0 and (ci * args.requests + ri) % args.bad_every == 0
            files = photos + (bad if with_bad else [])
            t0 = time.perf_counter()
            try:
                table, _map = client.predict([handle_file(str(f)) for f in files], api_name="/predict")
                dt = time.perf_counter() - t0
                rows = table["data"]
                problem = table["headers"].index("Problem")
                good_ok = all(r[1] and not r[problem] for r in rows[:len(photos)])
                bad_ok = all(r[problem] for r in rows[len(photos):])
                if len(rows) != len(files) or not good_ok or not bad_ok:
                    raise RuntimeError(f"unexpected rows: {rows}")
                with lock:
                    latencies.append(dt)
                    counts["photos_predicted"] += len(photos)
                    counts["bad_files_reported"] += len(files) - len(photos)
            except Exception as exc:  # noqa: BLE001 - recorded and reported
                with lock:
                    failures.append(f"client {ci} request {ri}: {type(exc).__name__}: {exc}"[:300])

    wall, alive, peak, idle_rss = 0.0, False, None, None
    try:
        try:
            wait_ready(url, proc, args.startup_timeout, poll=0.5)
        except RuntimeError as exc:
            failures.append(f"start-up: {exc}; log: {work / 'server.log'}")
            return _result(args, latencies, failures, counts, wall, idle_rss, peak, alive)
        idle_rss = status_kb(proc.pid, "VmRSS")
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        t0 = time.perf_counter()
        threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(args.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        alive = proc.poll() is None
        peak = status_kb(proc.pid, "VmHWM") if alive else None
    finally:
        stop.set()
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
    return _result(args, latencies, failures, counts, wall, idle_rss, peak or (max(rss_samples) if rss_samples
                                                                              else None), alive)


def _result(args: argparse.Namespace, latencies: list[float], failures: list[str], counts: dict, wall: float,
            idle_rss: int | None, peak_rss: int | None, alive: bool) -> dict:
    total = args.clients * args.requests
    return {
        "clients": args.clients, "requests_per_client": args.requests, "photos_per_request": args.photos,
        "photo_px": args.photo_px or None,
        "requests": total, "ok": len(latencies), "failed": total - len(latencies), **counts,
        "p50_s": _round(_percentile(latencies, 0.5)), "p95_s": _round(_percentile(latencies, 0.95)),
        "max_s": _round(max(latencies) if latencies else None), "wall_s": round(wall, 2),
        "throughput_photos_per_s": round(counts["photos_predicted"] / wall, 2) if wall else None,
        "server_idle_rss_mb": _mb(idle_rss), "server_peak_rss_mb": _mb(peak_rss), "server_alive": alive,
        "cpu_count": os.cpu_count(), "errors": failures[:5],
    }


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


def _mb(kb: int | None) -> float | None:
    return None if kb is None else round(kb / 1024, 1)


def main(argv: Sequence[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    result = run(args)
    print(json.dumps(result))
    return 0 if result["failed"] == 0 and result["server_alive"] else 1


if __name__ == "__main__":
    sys.exit(main())
