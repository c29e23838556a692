"""Speed benchmarks: scripts run as `python bench/NAME.py`, each printing one JSON object.

Shared helpers: where the photos come from and what machine ran the numbers.
Benchmarks report ratios measured in the same run, because absolute figures
move with whatever else the machine is doing (see `machine()["load_avg"]`).
"""
from __future__ import annotations

import contextlib
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]
CAMPUS = ROOT.parent / "shared" / "data" / "campus"


def machine() -> dict:
    """CPU model, core count, torch version and thread count, current load average."""
    import torch

    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "load_avg": [round(x, 2) for x in os.getloadavg()]}


def photos(n: int, workdir: Path) -> tuple[list[Path], str]:
    """`n` photo paths and where they came from: the real campus photos when present, else synthetic ones."""
    import pandas as pd

    if (CAMPUS / "labels.csv").is_file():
        names = pd.read_csv(CAMPUS / "labels.csv")["filename"].tolist()
        paths = [CAMPUS / "images" / f for f in names if (CAMPUS / "images" / f).is_file()]
        if paths:
            return [paths[i % len(paths)] for i in range(n)], f"campus ({len(paths)} real photos)"
    from geomodel.synthetic import make_campus, make_dataset

    csv = make_dataset(make_campus(n_regions=6, seed=0), workdir / "synthetic", n_images=min(n, 64),
                       image_size=256, seed=0, image_format="jpg")
    names = pd.read_csv(csv)["filename"].tolist()
    paths = [csv.parent / "images" / f for f in names]
    return [paths[i % len(paths)] for i in range(n)], "synthetic (no campus photos found)"


def train(*argv: object) -> None:
    """Run `python -m train ARGV` in this process; a non-zero exit stops the benchmark, naming the command."""
    from train.cli import main as train_main

    code = train_main([str(a) for a in argv])
    if code != 0:
        raise SystemExit(f"`python -m train {' '.join(map(str, argv))}` failed with exit code {code}")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def status_kb(pid: int, key: str) -> int | None:
    """A `/proc/PID/status` field in kB (`VmRSS` now, `VmHWM` peak); None where unavailable."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


class RunningApp(NamedTuple):
    proc: subprocess.Popen
    url: str
    launched: float  # time.perf_counter() when the process was started
    ready_s: float  # seconds from the launch until the app answered


def start_app(root: Path, app_args: list[str], env: dict[str, str], log: Path, startup_timeout: float,
              poll: float = 0.1) -> RunningApp:
    """Start `python app.py` from `root` on a free port, its output going to `log`, and wait until it
    answers. A start-up failure stops it and raises RuntimeError with the log's tail."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with open(log, "w") as out:  # the child keeps its own handle
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, str(root / "app.py"), "--port", str(port), *app_args],
                                cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_ready(url, proc, startup_timeout, poll=poll)
    except RuntimeError as exc:
        stop_app(proc)
        raise RuntimeError(f"{exc} (log: {log})\n{log.read_text()[-3000:]}") from None
    return RunningApp(proc, url, start, time.perf_counter() - start)


def stop_app(proc: subprocess.Popen, timeout: float = 20) -> None:
    """Stop the app as `docker stop` does: SIGTERM (it cleans up), SIGKILL after `timeout` seconds."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def running_app(root: Path, app_args: list[str], env: dict[str, str], log: Path, startup_timeout: float):
    """`start_app` as a context: yields the RunningApp, stops it at exit; a start-up failure exits
    the benchmark with the log's tail."""
    try:
        app = start_app(root, app_args, env, log, startup_timeout)
    except RuntimeError as exc:
        raise SystemExit(str(exc)) from None
    try:
        yield app
    finally:
        stop_app(app.proc)


def wait_ready(url: str, proc: subprocess.Popen, timeout: float, poll: float = 0.2) -> None:
    """Wait until the Gradio app at `url` answers, failing early if its process exits."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the app exited with code {proc.returncode} before serving")
        try:
            if httpx.get(url + "/gradio_api/info", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(poll)
    raise RuntimeError(f"the app did not answer within {timeout:.0f} s")
