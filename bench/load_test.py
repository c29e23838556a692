"""Load test: N concurrent gradio_client clients, M requests each, against a freshly launched app.

    python bench/load_test.py --clients 8 --requests 5
    python bench/load_test.py --scenario pixel-heavy      # one request of 32 near-limit 16-bit PNGs

`--scenario pixel-heavy` (see `run_pixel_heavy`): one client sends 32 copies of an
8000 x 7999 16-bit PNG (142 KB each, just under the 64-megapixel limit) in one request while
`--clients` (default 4) clients send one normal photo per request, `--requests` times each; it
reports the normal requests' latency, the server's resident memory when idle, at its peak and
after the load, and whether the targets (p95 <= 3 s, peak <= 1.5 GB, after within 200 MB of
idle) were met.

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
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Sequence

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import start_app, status_kb, stop_app  # noqa: E402


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, help="concurrent clients (N; default 8, pixel-heavy: 4)")
    p.add_argument("--requests", type=int, help="requests per client (M; default 5, pixel-heavy: 3)")
    p.add_argument("--photos", type=int, default=3, help="good photos per request")
    p.add_argument("--photo-px", type=int, default=0, help="resize the example photos to this side first "
                   "(e.g. 4000 for phone-sized photos; 0: as bundled, 128 px)")
    p.add_argument("--bad-every", type=int, default=3, help="every k-th request also carries bad files (0: never)")
    p.add_argument("--app-args", default="", help="extra flags for app.py, e.g. '--concurrency 2'")
    p.add_argument("--startup-timeout", type=float, default=300.0, help="seconds to wait for the app")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scenario", choices=("mixed", "pixel-heavy"), default="mixed",
                   help="mixed: the clients above; pixel-heavy: 32 near-limit 16-bit PNGs in one request while "
                        "--clients clients (default there: 4) send one normal photo per request")
    p.add_argument("--heavy-photos", type=int, default=32, help="pixel-heavy: PNGs in the heavy request")
    p.add_argument("--heavy-lead", type=float, default=2.0,
                   help="pixel-heavy: seconds between sending the heavy request and starting the normal clients")
    p.add_argument("--settle", type=float, default=5.0,
                   help="pixel-heavy: seconds to wait after the load before reading the memory 'after'")
    return p


PIXEL_HEAVY_TARGETS = {"normal_p95_s": 3.0, "server_peak_rss_mb": 1536.0, "rss_after_minus_idle_mb": 200.0}


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


def near_limit_png(path: Path) -> Path:
    """The issue's recipe: 8000 x 7999 16-bit grayscale (just under 64 megapixels), a 142 KB file."""
    import numpy as np
    from PIL import Image

    if not path.is_file():
        Image.fromarray(np.repeat(np.arange(7999, dtype=np.uint16)[:, None] * 8, 8000, 1)).save(path,
                                                                                             compress_level=9)
    return path


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
    latencies: list[float] = []
    failures: list[str] = []
    counts = {"photos_predicted": 0, "bad_files_reported": 0}
    lock = threading.Lock()

    def client_loop(url: str, ci: int) -> None:
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
        server = Server(work, args.app_args, args.startup_timeout)
    except RuntimeError as exc:
        failures.append(str(exc))
        return _result(args, latencies, failures, counts, wall, idle_rss, peak, alive)
    try:
        idle_rss = server.rss_kb()
        t0 = time.perf_counter()
        threads = [threading.Thread(target=client_loop, args=(server.url, i)) for i in range(args.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        alive = server.alive()
        peak = server.peak_kb() if alive else max((kb for _, kb in server.samples), default=None)
    finally:
        server.close()
    return _result(args, latencies, failures, counts, wall, idle_rss, peak, alive)


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


class Server:
    """`python app.py` on a free port as its own process, with its resident memory sampled every 0.1 s."""

    def __init__(self, work: Path, app_args: str, startup_timeout: float) -> None:
        # Its own upload folder: Gradio names uploads by content, so in a shared /tmp/gradio this server's
        # clean-up at exit would delete an identical file (an example photo) another app is still using.
        env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1",
               "GRADIO_TEMP_DIR": str(work / "gradio")}
        app = start_app(ROOT, app_args.split(), env, work / "server.log", startup_timeout, poll=0.5)
        self.proc, self.url = app.proc, app.url
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()

    def _sample(self) -> None:
        while not self._stop.is_set():
            kb = status_kb(self.proc.pid, "VmRSS")
            if kb:
                self.samples.append((time.perf_counter(), kb))
            self._stop.wait(0.1)

    def rss_kb(self) -> int | None:
        return status_kb(self.proc.pid, "VmRSS")

    def peak_kb(self) -> int | None:
        return status_kb(self.proc.pid, "VmHWM")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        self._stop.set()
        stop_app(self.proc, timeout=60)


def _explorer_ready(client: object, timeout: float) -> float | None:
    """Wait until the app's explorer has predicted its validation set in the background (its memory is
    then part of the idle size, and its CPU use is over before the load starts); seconds waited, or
    None for an app without an explorer."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        try:
            summary = client.predict("All regions", api_name="/validation_view")[0]  # type: ignore[attr-defined]
        except Exception:  # noqa: BLE001 - no explorer endpoint: nothing to wait for
            return None
        if "Predicting" not in str(summary):
            return time.perf_counter() - t0
        time.sleep(0.5)
    return None


def run_pixel_heavy(args: argparse.Namespace) -> dict:
    """One request of `--heavy-photos` near-limit 16-bit PNGs while `--clients` clients send one normal photo
    per request (`--requests` each, starting `--heavy-lead` s after it): the normal requests must not starve,
    and the server's memory must stay bounded and come back."""
    from gradio_client import Client, handle_file

    from demo.settings import BUNDLED_EXAMPLES, list_images

    work = Path(tempfile.mkdtemp(prefix="geomodel-load-"))
    big = near_limit_png(work / "big16.png")
    normal = list_images(BUNDLED_EXAMPLES)
    out: dict = {"scenario": "pixel-heavy", "heavy_photos": args.heavy_photos, "heavy_png": "8000x7999 16-bit",
                 "heavy_png_bytes": big.stat().st_size, "clients": args.clients, "requests_per_client": args.requests,
                 "app_args": args.app_args, "app_root": str(ROOT), "cpu_count": os.cpu_count(),
                 "load_avg_before": [round(x, 2) for x in os.getloadavg()]}
    failures: list[str] = []
    server = Server(work, args.app_args, args.startup_timeout)
    try:
        warm = Client(server.url, verbose=False, download_files=False)
        out["explorer_ready_s"] = _round(_explorer_ready(warm, args.startup_timeout))
        warm.predict([handle_file(str(normal[0]))], api_name="/predict")  # torch's first-call allocations
        time.sleep(args.settle)
        idle = server.rss_kb()
        heavy: dict = {}

        def send_heavy() -> None:
            t0 = time.perf_counter()
            try:
                client = Client(server.url, verbose=False, download_files=False)
                table, _ = client.predict([handle_file(str(big))] * args.heavy_photos, api_name="/predict")
                problem = table["headers"].index("Problem")
                heavy.update(ok=True, predicted=sum(1 for r in table["data"] if not r[problem]),
                             refused=[r[problem] for r in table["data"] if r[problem]])
            except Exception as exc:  # noqa: BLE001 - recorded and reported
                heavy.update(ok=False, error=f"{type(exc).__name__}: {exc}"[:300])
            heavy["s"] = time.perf_counter() - t0

        latencies: list[float] = []
        lock = threading.Lock()

        def send_normal(ci: int) -> None:
            client = Client(server.url, verbose=False, download_files=False)
            for ri in range(args.requests):
                photo = normal[(ci + ri) % len(normal)]
                t0 = time.perf_counter()
                try:
                    table, _ = client.predict([handle_file(str(photo))], api_name="/predict")
                    if not table["data"][0][1]:
                        raise RuntimeError(f"no prediction: {table['data'][0]}")
                    with lock:
                        latencies.append(time.perf_counter() - t0)
                except Exception as exc:  # noqa: BLE001 - recorded and reported
                    with lock:
                        failures.append(f"client {ci} request {ri}: {type(exc).__name__}: {exc}"[:300])

        t0 = time.perf_counter()
        heavy_thread = threading.Thread(target=send_heavy)
        heavy_thread.start()
        time.sleep(args.heavy_lead)
        clients = [threading.Thread(target=send_normal, args=(i,)) for i in range(args.clients)]
        for t in clients:
            t.start()
        for t in clients:
            t.join()
        normal_done = time.perf_counter() - t0
        heavy_thread.join()
        time.sleep(args.settle)
        after = server.rss_kb()
        peak = server.peak_kb()
        out.update({
            "normal_requests": args.clients * args.requests, "normal_ok": len(latencies),
            "normal_p50_s": _round(_percentile(latencies, 0.5)), "normal_p95_s": _round(_percentile(latencies, 0.95)),
            "normal_max_s": _round(max(latencies) if latencies else None),
            "normal_all_done_s": round(normal_done, 2),
            "heavy_ok": heavy.get("ok"), "heavy_s": _round(heavy.get("s")), "heavy_predicted": heavy.get("predicted"),
            "heavy_refused": len(heavy.get("refused", [])),
            "heavy_refusal_example": (heavy.get("refused") or [heavy.get("error")])[0],
            "server_idle_rss_mb": _mb(idle), "server_peak_rss_mb": _mb(peak), "server_rss_after_mb": _mb(after),
            "rss_after_minus_idle_mb": _mb(after - idle) if after and idle else None,
            "server_alive": server.alive(), "load_avg_after": [round(x, 2) for x in os.getloadavg()],
            "errors": failures[:5] + ([heavy["error"]] if heavy.get("error") else []),
        })
    finally:
        server.close()
    measured = {k: out.get(k) for k in PIXEL_HEAVY_TARGETS}
    out["targets"] = PIXEL_HEAVY_TARGETS
    out["met"] = {k: v is not None and v <= PIXEL_HEAVY_TARGETS[k] for k, v in measured.items()}
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    heavy = args.scenario == "pixel-heavy"
    args.clients = args.clients or (4 if heavy else 8)
    args.requests = args.requests or (3 if heavy else 5)
    if heavy:
        result = run_pixel_heavy(args)
        print(json.dumps(result))
        ok = result.get("heavy_ok") and result.get("normal_ok") == result.get("normal_requests")
        return 0 if ok and result.get("server_alive") else 1
    result = run(args)
    print(json.dumps(result))
    return 0 if result["failed"] == 0 and result["server_alive"] else 1


if __name__ == "__main__":
    sys.exit(main())
