"""App speed: cold start, per-photo latency through gradio_client, and the server's peak memory.

    python bench/app.py [--requests 10] [--app-args "--model DIR"]
    python bench/app.py --explorer-sizes 300,3000

With `--explorer-sizes`, measures instead the Validation explorer's cost per validation-set
size: synthetic validation photos of the bundled campus (64 px JPEGs) are rendered, `python
app.py --val-csv ...` is started on them, and for each size it reports the seconds from launch
until the app answers and until the explorer has its map, the bytes of `/config` (the page's
initial state), the bytes of the explorer's first map (as the page receives it), how many
thumbnails are inlined in it, whether a served thumbnail URL from it answers with a JPEG, and
the server's peak memory.

Measures, with the app's own settings (default: the bundled demo model):

* cold start, in a fresh process: importing the app (Gradio, torch, geomodel), loading
  the model, building the app's context (the model plus, with a validation set, its
  predictions) and the Blocks; and, separately, `python app.py` from launch until its
  API answers;
* latency of `/predict` through `gradio_client`, one client, requests in sequence: one
  photo per request (median and 90th percentile), then one request of --multi photos
  (seconds per photo); beside it, in the same fresh process as the cold start, the
  Predictor alone and the app's whole handler (Predictor, results table, map HTML)
  on the same photos, so the differences show where the time goes;
* the server's resident memory when idle after start and its peak (VmHWM) at the end.

Photos: the real campus photos when present (mixed sizes up to 1280 px), else synthetic.
Prints one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import machine, photos, running_app, status_kb  # noqa: E402

# Runs in a fresh interpreter: argv[1] = JSON list of app flags, argv[2] = JSON list of photo paths.
_COLD = r"""
import json, sys, time
t0 = time.perf_counter()
sys.path.insert(0, ROOT_PATH)
import app  # noqa: F401
from demo.settings import config_from_args
from demo.ui import build_app, load_context, predict
from geomodel.predictor import Predictor
t1 = time.perf_counter()
config = config_from_args(json.loads(sys.argv[1]))
predictor = Predictor.from_dir(config.model, device=config.device, threads=config.threads)
t2 = time.perf_counter()
ctx = load_context(config)
t3 = time.perf_counter()
build_app(ctx)
t4 = time.perf_counter()
paths = json.loads(sys.argv[2])
predictor.predict(paths[:1])
per = []
for p in paths:
    s = time.perf_counter()
    predictor.predict([p])
    per.append(time.perf_counter() - s)
handler = []
for p in paths:
    s = time.perf_counter()
    predict(ctx, [p])
    handler.append(time.perf_counter() - s)
per.sort()
handler.sort()
print(json.dumps({"import_s": t1 - t0, "model_load_s": t2 - t1, "context_s": t3 - t2, "build_s": t4 - t3,
                  "predictor_s_per_photo": per[len(per) // 2], "handler_s_per_photo": handler[len(handler) // 2]}))
"""


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=10, help="one-photo requests, in sequence")
    p.add_argument("--multi", type=int, default=8, help="photos in the one multi-photo request")
    p.add_argument("--app-args", default="", help="extra flags for app.py, e.g. '--model DIR --threads 1'")
    p.add_argument("--omp-wait-policy", choices=("passive", "active", "env"), default="env",
                   help="OMP_WAIT_POLICY for the app processes (env: as this shell has it, i.e. as users run "
                        "the app); see bench/inference.py")
    p.add_argument("--startup-timeout", type=float, default=300.0, help="seconds to wait for the app")
    p.add_argument("--explorer-sizes", default="", help="comma-separated validation-set sizes: measure the "
                   "Validation explorer's page weight and start-up time for each (nothing else is measured)")
    p.add_argument("--app-root", type=Path, default=ROOT, help="checkout whose app.py to start (to compare "
                   "with an older version)")
    return p


def _mb(kb: int | None) -> float | None:
    return None if kb is None else round(kb / 1024, 1)


def _call(client, files: list[Path]) -> float:
    from gradio_client import handle_file

    start = time.perf_counter()
    table, _map = client.predict([handle_file(str(f)) for f in files], api_name="/predict")
    elapsed = time.perf_counter() - start
    problem = table["headers"].index("Problem")
    if len(table["data"]) != len(files) or any(row[problem] for row in table["data"]):
        raise RuntimeError(f"unexpected answer: {table['data']}")
    return elapsed


def main(args: argparse.Namespace) -> dict:
    from gradio_client import Client

    began = time.perf_counter()
    app_args = shlex.split(args.app_args)
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1"}
    if args.omp_wait_policy != "env":
        env["OMP_WAIT_POLICY"] = args.omp_wait_policy.upper()
    with tempfile.TemporaryDirectory(prefix="bench-app-") as tmp:
        tmp = Path(tmp)
        paths, source = photos(max(args.requests, args.multi), tmp)
        singles, multi = paths[:args.requests], paths[:args.multi]

        script = _COLD.replace("ROOT_PATH", repr(str(ROOT)))
        cold = subprocess.run([sys.executable, "-c", script, json.dumps(app_args), json.dumps([str(p) for p in singles])],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=args.startup_timeout)
        if cold.returncode != 0:
            raise SystemExit(f"cold-start measurement failed:\n{cold.stderr[-3000:]}")
        cold_s = {k: round(v, 3) for k, v in json.loads(cold.stdout.strip().splitlines()[-1]).items()}

        with running_app(ROOT, app_args, env, tmp / "server.log", args.startup_timeout) as (proc, url, _, ready_s):
            idle_mb = _mb(status_kb(proc.pid, "VmRSS"))
            client = Client(url, verbose=False, download_files=False)
            _call(client, singles[:1])  # warm-up: first request sets up the queue and kernels
            one = sorted(_call(client, [p]) for p in singles)
            multi_s = _call(client, multi)
            peak_mb = _mb(status_kb(proc.pid, "VmHWM"))

    p50 = statistics.median(one)
    predictor_s, handler_s = cold_s.pop("predictor_s_per_photo"), cold_s.pop("handler_s_per_photo")
    return {
        "benchmark": "app",
        "app_args": app_args,
        "photos": source,
        "cold_start_s": {**cold_s, "import_plus_model_load_s": round(cold_s["import_s"] + cold_s["model_load_s"], 2),
                         "launch_to_ready_s": round(ready_s, 2)},
        "latency_s": {
            "one_photo_p50": round(p50, 3),
            "one_photo_p90": round(one[min(len(one) - 1, int(0.9 * len(one)))], 3),
            f"per_photo_in_{len(multi)}_photo_request": round(multi_s / len(multi), 3),
            "predictor_alone_per_photo": predictor_s,
            "handler_alone_per_photo": handler_s,  # Predictor + results table + map HTML
            "transport_overhead_one_photo": round(p50 - handler_s, 3),  # upload, queue, events
        },
        "server_rss_mb": {"idle_after_start": idle_mb, "peak": peak_mb},
        "machine": {**machine(), "omp_wait_policy": env.get("OMP_WAIT_POLICY")},
        "wall_s": round(time.perf_counter() - began, 1),
    }


def explorer(args: argparse.Namespace) -> dict:
    """Start-up time and page weight of the app with validation sets of each size."""
    import re
    from html import unescape

    import httpx

    from geomodel.synthetic import make_campus, make_dataset

    began = time.perf_counter()
    sizes = [int(x) for x in args.explorer_sizes.split(",") if x.strip()]
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1"}
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-explorer-") as tmp:
        tmp = Path(tmp)
        env["GRADIO_TEMP_DIR"] = str(tmp / "gradio")  # thumbnails and uploads die with the benchmark
        plan = make_campus(n_regions=6, seed=0)  # the bundled model's campus
        for n in sizes:
            t0 = time.perf_counter()
            csv = make_dataset(plan, tmp / f"val{n}", n_images=n, image_size=64, seed=7000 + n,
                               filename_prefix="val", image_format="jpg")
            render_s = time.perf_counter() - t0
            app_args = ["--val-csv", str(csv), "--val-images", str(csv.parent / "images")]
            with running_app(args.app_root, app_args, env, tmp / f"server{n}.log",
                             args.startup_timeout) as (proc, url, start, ready_s):
                config = httpx.get(url + "/config", timeout=60).text
                values = [c.get("props", {}).get("value") for c in json.loads(config).get("components", [])]
                val_html = next((v for v in values if isinstance(v, str) and "Validation: All regions"
                                 in unescape(v)), None)
                explorer_s = ready_s
                if val_html is None:  # computed in the background: ask the explorer until it has its map
                    from gradio_client import Client

                    client = Client(url, verbose=False, download_files=False)
                    while True:
                        _, val_html, _ = client.predict("All regions", api_name="/validation_view")
                        if "srcdoc=" in val_html:
                            break
                        if time.perf_counter() - start > args.startup_timeout:
                            raise SystemExit(f"the explorer was not ready within {args.startup_timeout} s")
                        time.sleep(0.2)
                    explorer_s = time.perf_counter() - start
                val_map = unescape(re.search(r'srcdoc="([^"]*)"', val_html).group(1))
                thumb_urls = re.findall(r"gradio_api/file=[^\"\\]+?\.jpg", val_map)
                served = None
                if thumb_urls:
                    r = httpx.get(f"{url}/{thumb_urls[0]}", timeout=30)
                    served = {"status": r.status_code, "content_type": r.headers.get("content-type"),
                              "bytes": len(r.content)}
                results.append({
                    "validation_photos": n,
                    "ready_s": round(ready_s, 2),  # the app answers (the Predict tab works)
                    "explorer_ready_s": round(explorer_s, 2),  # the explorer has its map
                    "config_bytes": len(config.encode("utf-8")),
                    "validation_map_bytes": len(val_html.encode("utf-8")),
                    "inlined_thumbnails": val_map.count("data:image/jpeg;base64,"),
                    "served_thumbnail_urls": len(set(thumb_urls)),
                    "served_thumbnail": served,
                    "server_peak_rss_mb": _mb(status_kb(proc.pid, "VmHWM")),
                    "render_photos_s": round(render_s, 1),
                })
    return {"benchmark": "app-explorer", "app_root": str(args.app_root), "explorer": results,
            "machine": {**machine(), "omp_wait_policy": env.get("OMP_WAIT_POLICY")},
            "wall_s": round(time.perf_counter() - began, 1)}


if __name__ == "__main__":
    arguments = get_args_parser().parse_args()
    print(json.dumps(explorer(arguments) if arguments.explorer_sizes else main(arguments), indent=2))
