"""Scale: fit time, peak memory, model size, prediction speed and accuracy as the collection grows.

    python bench/scale.py [--sizes 650,6500] [--tile 10] [--work-dir DIR] [--reuse]

For every size N, a synthetic campus (`geomodel.synthetic`, 12 regions, 256 px photos)
of N labelled photos is trained with the `cpu-small` recipe (`python -m train fit
--preset cpu-small`, in its own process: wall time, peak RSS, user/system CPU time), and
each model directory is measured in a fresh process: load time and memory, and region
accuracy on 300 held-out photos with and without matching. Speed (photos/s at the
Predictor's default batch of 4, and one photo per call) is measured afterwards in one process
holding every model, interleaved round by round with the order rotated (A B C, B C A,
C A B, ...; same threads, a warm-up for each), so that load from other processes on a shared
machine falls on every size alike: the median per model is reported, and for each growth the
ratio within each round and their median; `matching_s_per_batch` times the matching step
alone (shortlist, codes read and decoded, matching) for a batch of 4, the part that depends on
the gallery. `accuracy_head` / `accuracy_fused` are the
validation split's (what `fit` chose the fusion weight on); `test_*` the held-out photos'.
Matching is kept on (`--match-weight`: the best of 0.1 ... 1 on validation) so that the
gallery's cost is what is measured; `auto_weight` / `accuracy_auto` say what `fit`'s default
`--match-weight auto` would have chosen from the same validation scores (0: the head alone).
The largest model's gallery is also tiled `--tile` times (the same photos repeated: size
and speed alone, no accuracy). `extraction` measures the trunk's feature extraction with
glibc's default allocator and with `geomodel.runtime.keep_freed_memory` (the allocator
churn: system time and page faults), each in its own process.

Photos are rendered in blocks of 500 (deterministic, reused) under --work-dir, outside
the repository; so are the models and each size's feature cache (`--reuse` takes a size's
earlier fit made with the same flags instead of fitting again, e.g. to split a long run by size). Prints one JSON
object with a `sizes` list and the growth factors between consecutive sizes.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import machine  # noqa: E402
from geomodel.config import MATCH_WEIGHTS  # noqa: E402

BLOCK = 500  # photos rendered per block
TEST_SEED = 999_999
MATCH_ON = tuple(w for w in MATCH_WEIGHTS if w > 0)  # fit's candidate weights, matching kept on


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="650,6500", help="comma-separated collection sizes (labelled photos)")
    p.add_argument("--tile", type=int, default=10, help="also measure the largest gallery tiled this many times "
                   "(0: skip)")
    p.add_argument("--work-dir", type=Path, default=Path.home() / ".cache" / "geomodel" / "scale",
                   help="photos, models and feature caches (reused between runs; outside the repository)")
    p.add_argument("--reuse", action="store_true", help="take a size's earlier fit from --work-dir when present")
    p.add_argument("--regions", type=int, default=12)
    p.add_argument("--image-size", type=int, default=256, help="rendered photo size in pixels")
    p.add_argument("--test-photos", type=int, default=300, help="held-out photos for test accuracy")
    p.add_argument("--predict-photos", type=int, default=64, help="photos per speed round (batch 4)")
    p.add_argument("--single-photos", type=int, default=12, help="photos predicted one per call")
    p.add_argument("--rounds", type=int, default=6, help="speed rounds; every model is timed once per round, "
                   "in rotated order (the median is reported)")
    p.add_argument("--extraction-photos", type=int, default=96, help="allocator measurement (0: skip)")
    p.add_argument("--match-weight", default=",".join(str(w) for w in MATCH_ON),
                   help="fit's --match-weight; the default keeps matching on (the best non-zero weight on "
                        "validation) so that the gallery's cost is measured; `auto` may turn it off")
    p.add_argument("--fit-args", default="", help="extra flags for `python -m train fit`")
    p.add_argument("--render-only", action="store_true", help="render the photos the sizes need, then stop")
    p.add_argument("--measure", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)  # internal: child processes
    return p


# ----------------------------------------------------------------------------- data


def _render(work: Path, name: str, n: int, seed: int, regions: int, size: int) -> Path:
    from geomodel.synthetic import make_campus, make_dataset

    folder = work / "photos" / name
    csv = folder / "labels.csv"
    if not csv.is_file():
        tmp = folder.with_name(name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        make_dataset(make_campus(n_regions=regions, seed=0), tmp, n_images=n, image_size=size, seed=seed,
                     filename_prefix=name, image_format="jpg")
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)  # a block is complete or absent
    return csv


def collection(work: Path, n: int, args: argparse.Namespace) -> Path:
    """A labels CSV of the first `n` photos of the training blocks (paths relative to work/photos)."""
    import pandas as pd

    parts = []
    for b in range(-(-n // BLOCK)):
        csv = _render(work, f"b{b:03d}", BLOCK, b, args.regions, args.image_size)
        df = pd.read_csv(csv)
        parts.append(df.assign(filename=f"b{b:03d}/images/" + df["filename"]))
    out = work / f"collection-{n}.csv"
    pd.concat(parts).head(n).to_csv(out, index=False)
    return out


def test_set(work: Path, args: argparse.Namespace) -> Path:
    import pandas as pd

    csv = _render(work, "test", args.test_photos, TEST_SEED, args.regions, args.image_size)
    df = pd.read_csv(csv)
    out = work / "test.csv"
    df.assign(filename="test/images/" + df["filename"]).to_csv(out, index=False)
    return out


# ----------------------------------------------------------------------------- fit


def _run(cmd: list[str], env: dict | None = None) -> dict:
    """Run a child process; its wall time and resource use (peak RSS, CPU times, page faults)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, **(env or {})})
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} ... failed with exit code {code}:\n{output[-4000:]}")
    return {"wall_s": round(time.perf_counter() - start, 1), "peak_rss_mb": round(usage.ru_maxrss / 1024),
            "user_s": round(usage.ru_utime, 1), "sys_s": round(usage.ru_stime, 1),
            "minor_faults": usage.ru_minflt, "output": output}


def fit(work: Path, n: int, csv: Path, args: argparse.Namespace) -> dict:
    out, cache, record = work / f"model-{n}", work / f"cache-{n}", work / f"fit-{n}.json"
    flags = ["--preset", "cpu-small", "--csv", str(csv), "--images", str(work / "photos"), "--out", str(out),
             "--cache-dir", str(cache), "--match-weight", args.match_weight, *args.fit_args.split()]
    if args.reuse and record.is_file() and (out / "region.pt").is_file():
        earlier = json.loads(record.read_text())
        if earlier.get("flags") == flags:
            return {**earlier, "reused": True}
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(cache, ignore_errors=True)  # from scratch: no feature of an earlier run
    run = _run([sys.executable, "-m", "train", "fit", *flags])
    result = {k: v for k, v in run.items() if k != "output"}
    result["flags"] = flags
    result["log_tail"] = [line for line in run["output"].splitlines() if "local matching" in line][-1:]
    record.write_text(json.dumps(result, indent=2))
    return {**result, "reused": False}


def model_bytes(model_dir: Path) -> dict:
    """Bytes of what prediction loads: region.pt, coords.pt and the gallery file when there is one."""
    from geomodel.engine.gallery import GALLERY_FILE

    files = {name: (model_dir / name).stat().st_size for name in ("region.pt", "coords.pt", GALLERY_FILE)
             if (model_dir / name).is_file()}
    return {"model_bytes": sum(files.values()), "files": files}


def tile(model_dir: Path, factor: int, dst: Path) -> Path:
    """A copy of `model_dir` whose gallery repeats every photo `factor` times (to measure size and speed)."""
    import numpy as np

    from geomodel.engine.checkpoint import atomic_save, load_checkpoint
    from geomodel.engine.gallery import GALLERY_FILE, BuiltGallery

    shutil.rmtree(dst, ignore_errors=True)
    dst.mkdir(parents=True)
    shutil.copy(model_dir / "coords.pt", dst / "coords.pt")
    ckpt = load_checkpoint(model_dir / "region.pt", kind="region")
    codes = np.load(model_dir / GALLERY_FILE, mmap_mode="r", allow_pickle=False)
    partial = dst / (GALLERY_FILE + ".partial")
    out = np.lib.format.open_memmap(partial, mode="w+", dtype=np.uint8, shape=(len(codes) * factor, *codes.shape[1:]))
    for k in range(factor):
        out[k * len(codes):(k + 1) * len(codes)] = codes
    out.flush()
    del out
    state = ckpt["state_dict"]
    state["matcher.global_desc"] = state["matcher.global_desc"].repeat(factor, 1)
    state["matcher.regions"] = state["matcher.regions"].repeat(factor)
    built = BuiltGallery(partial, np.load(partial, mmap_mode="r"), state["matcher.global_desc"],
                         state["matcher.regions"], ckpt["gallery"]["positions"])
    ckpt["gallery"] = built.publish(dst / GALLERY_FILE)
    ckpt["metrics"] = {**ckpt["metrics"], "gallery_size": len(state["matcher.regions"])}
    atomic_save(ckpt, dst / "region.pt")
    return dst


def _auto_choice(metrics: dict) -> dict:
    """What `--match-weight auto` would have chosen from the same validation scores (weight 0 = the head)."""
    from geomodel.engine.fusion import choose_weight

    table = metrics.get("fusion", [])
    if not any(r["weight"] == 0 for r in table):  # a fit from before the head's row was always reported
        return {}
    row = choose_weight(table)
    return {"auto_weight": row["weight"], "accuracy_auto": row["accuracy"]}


# ----------------------------------------------------------------------------- child measurements


def _measure_predict(model_dir: str, test_csv: str, images: str, accuracy: str) -> dict:
    """In a fresh process: load time and memory, the matching step's time and held-out accuracy."""
    from bench import status_kb
    from geomodel.runtime import keep_freed_memory

    keep_freed_memory()  # as app.py and `python -m train` do
    import pandas as pd

    from geomodel.predictor import Predictor

    start = time.perf_counter()
    predictor = Predictor.from_dir(model_dir, device="cpu")
    load_s = time.perf_counter() - start
    rss_loaded = status_kb(os.getpid(), "VmRSS")
    df = pd.read_csv(test_csv)
    paths = [Path(images) / f for f in df["filename"]]
    out = {"load_s": round(load_s, 2), "rss_after_load_mb": round(rss_loaded / 1024),
           "matching": predictor.region_model.matching, "matching_s_per_batch": _matching_time(predictor, paths[:4])}
    if accuracy == "1":
        truth = df["Region_ID"].to_numpy()
        fused = [r["region_id"] for r in predictor.predict(paths)]
        out["test_accuracy_fused"] = round(float((truth == fused).mean()), 4)
        predictor.region_model.cfg.match_weight = 0.0  # the head alone, same model
        head = [r["region_id"] for r in predictor.predict(paths)]
        out["test_accuracy_head"] = round(float((truth == head).mean()), 4)
    out["peak_rss_mb"] = round(status_kb(os.getpid(), "VmHWM") / 1024)
    return out


def _measure_speed(test_csv: str, images: str, predict_photos: str, single_photos: str, rounds: str,
                   *model_dirs: str) -> dict:
    """In one process, every model loaded: photos/s at batch 4 and one photo per call, the models
    interleaved round by round (A B C, B C A, C A B, ...) so that load from other processes on a
    shared machine falls on all of them alike instead of on whichever was timed in its own block."""
    from geomodel.runtime import keep_freed_memory

    keep_freed_memory()
    import pandas as pd
    import torch

    from geomodel.predictor import Predictor

    predictors = [Predictor.from_dir(d, device="cpu") for d in model_dirs]
    paths = [Path(images) / f for f in pd.read_csv(test_csv)["filename"]]
    batch = paths[:int(predict_photos)]
    singles = paths[int(predict_photos):int(predict_photos) + int(single_photos)]
    for predictor in predictors:  # warm-up: first calls allocate and pick kernels
        predictor.predict(batch[:4])
        predictor.predict(singles[:1])
    n = len(predictors)
    rates = [[0.0] * n for _ in range(int(rounds))]  # [round][model]
    single: list[list[float]] = [[] for _ in range(n)]
    for r in range(int(rounds)):
        for i in [(r + k) % n for k in range(n)]:
            t = time.perf_counter()
            predictors[i].predict(batch)
            rates[r][i] = len(batch) / (time.perf_counter() - t)
            for p in singles:
                t = time.perf_counter()
                predictors[i].predict([p])
                single[i].append(time.perf_counter() - t)
    return {"threads": torch.get_num_threads(),
            "photos_per_s": [round(statistics.median(row[i] for row in rates), 2) for i in range(n)],
            "single_photo_s": [round(statistics.median(s), 4) for s in single],
            "photos_per_s_by_round": [[round(x, 2) for x in row] for row in rates]}


def _matching_time(predictor, paths: list[Path], repeats: int = 20) -> float | None:
    """Seconds the matching step alone (shortlist, reading and decoding the shortlisted photos'
    codes, matching) takes for one batch: the part of prediction that depends on the gallery."""
    import torch

    from geomodel.data.images import load_image

    model = predictor.region_model
    if not model.matching:
        return None
    with torch.inference_mode():
        # the maps exactly as prediction makes them (channels-last on the CPU, float32)
        feats, maps = predictor._trunk(model, [predictor._tf_region(load_image(p)) for p in paths], maps=True)
        model.matcher(maps, feats)  # warm-up
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            model.matcher(maps, feats)
            times.append(time.perf_counter() - t)
    return round(statistics.median(times), 5)


def _measure_extraction(allocator: str, n: str, images_csv: str, images: str) -> dict:
    """In a fresh process: the cpu-small trunk's features of `n` photos (batch 32, no cache)."""
    import resource

    if allocator == "keep":
        from geomodel.runtime import keep_freed_memory

        keep_freed_memory()
    import pandas as pd
    import torch

    from geomodel.data.transforms import build_transforms
    from geomodel.engine.features import extract_features
    from geomodel.models.backbones import build_backbone

    backbone = build_backbone("efficientnet_lite0", pool="gem", image_size=256, layers=("14", "15", "head"))
    paths = [Path(images) / f for f in pd.read_csv(images_csv)["filename"][:int(n)]]
    tf = build_transforms((backbone.mean, backbone.std), 256, train=False)
    extract_features(backbone, paths[:32], tf, device=torch.device("cpu"), image_size=256)  # warm-up
    before, t = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    extract_features(backbone, paths, tf, device=torch.device("cpu"), batch_size=32, image_size=256)
    wall, after = time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF)
    return {"photos_per_s": round(len(paths) / wall, 2), "user_s": round(after.ru_utime - before.ru_utime, 2),
            "sys_s": round(after.ru_stime - before.ru_stime, 2), "minor_faults": after.ru_minflt - before.ru_minflt}


def _child(*argv: str) -> dict:
    run = _run([sys.executable, str(Path(__file__).resolve()), "--measure", *argv])
    return json.loads(run["output"].strip().splitlines()[-1])


# ----------------------------------------------------------------------------- main


def main(args: argparse.Namespace) -> dict:
    import pandas as pd

    began = time.perf_counter()
    work = args.work_dir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    sizes = sorted(int(s) for s in args.sizes.split(",") if s.strip())
    test_csv = test_set(work, args)
    images = work / "photos"
    if args.render_only:
        return {"rendered": [str(collection(work, n, args)) for n in sizes], "test": str(test_csv)}
    entries = []
    for n in sizes:
        csv = collection(work, n, args)
        fitted = fit(work, n, csv, args)
        out = work / f"model-{n}"
        metrics = json.loads((out / "region_metrics.json").read_text())
        measured = _child("predict", str(out), str(test_csv), str(images), "1")
        size = model_bytes(out)
        gallery = metrics.get("gallery_size", 0)
        entries.append({
            "collection_photos": n, "gallery_photos": gallery, "match_weight": metrics.get("match_weight"),
            "model_dir": str(out), **size, "bytes_per_gallery_photo": round(size["model_bytes"] / gallery) if gallery else None,
            "fit_s": fitted["wall_s"], "peak_rss_mb": fitted["peak_rss_mb"],
            "fit_user_s": fitted["user_s"], "fit_sys_s": fitted["sys_s"], "fit_reused": fitted["reused"],
            "accuracy_head": metrics.get("val_head_accuracy", metrics.get("val_accuracy")),
            "accuracy_fused": metrics.get("val_accuracy"), "val_photos": metrics.get("val_size"),
            "fusion": metrics.get("fusion"), **_auto_choice(metrics),
            **{k: measured[k] for k in ("matching_s_per_batch", "test_accuracy_head", "test_accuracy_fused",
                                        "load_s", "rss_after_load_mb")},
            "predict_peak_rss_mb": measured["peak_rss_mb"]})
    if args.tile > 1 and entries and entries[-1]["gallery_photos"]:
        n = sizes[-1]
        tiled = tile(work / f"model-{n}", args.tile, work / f"model-{n}-x{args.tile}")
        measured = _child("predict", str(tiled), str(test_csv), str(images), "0")
        size = model_bytes(tiled)
        gallery = entries[-1]["gallery_photos"] * args.tile
        entries.append({"collection_photos": None, "gallery_photos": gallery, "tiled_from": n,
                        "match_weight": entries[-1]["match_weight"], "model_dir": str(tiled),
                        "matching_s_per_batch": measured["matching_s_per_batch"], **size,
                        "bytes_per_gallery_photo": round(size["model_bytes"] / gallery), "fit_s": None,
                        "peak_rss_mb": None, "accuracy_head": None, "accuracy_fused": None,
                        "load_s": measured["load_s"], "rss_after_load_mb": measured["rss_after_load_mb"],
                        "predict_peak_rss_mb": measured["peak_rss_mb"]})
    speed = _child("speed", str(test_csv), str(images), str(args.predict_photos), str(args.single_photos),
                   str(args.rounds), *(e.pop("model_dir") for e in entries))
    for i, e in enumerate(entries):
        e.update(photos_per_s=speed["photos_per_s"][i], single_photo_s=speed["single_photo_s"][i],
                 photos_per_s_by_round=[row[i] for row in speed["photos_per_s_by_round"]])
    growth = []
    for a, b in zip(entries, entries[1:]):
        def ratio(key: str) -> float | None:
            return round(b[key] / a[key], 3) if a.get(key) and b.get(key) else None

        growth.append({"from": a["gallery_photos"], "to": b["gallery_photos"], "photos": ratio("gallery_photos"),
                       **{k: ratio(k) for k in ("photos_per_s", "single_photo_s", "matching_s_per_batch",
                                                "model_bytes", "fit_s",
                                                "peak_rss_mb", "load_s", "rss_after_load_mb")}})
        # the same round's rates: both models timed within seconds of each other, under the same load
        by_round = [round(y / x, 3) for x, y in zip(a["photos_per_s_by_round"], b["photos_per_s_by_round"])]
        growth[-1].update(photos_per_s_by_round=by_round, photos_per_s_median_of_rounds=statistics.median(by_round))
    extraction = {}
    if args.extraction_photos:
        n = min(args.extraction_photos, len(pd.read_csv(test_csv)))
        extraction = {alloc: _child("extract", alloc, str(n), str(test_csv), str(images))
                      for alloc in ("default", "keep")}
        extraction["photos"] = n
    return {"benchmark": "scale", "recipe": "cpu-small", "regions": args.regions, "image_size": args.image_size,
            "match_weight": args.match_weight, "fit_args": args.fit_args, "predict_photos": args.predict_photos,
            "single_photos": args.single_photos, "rounds": args.rounds, "speed_threads": speed["threads"],
            "test_photos": args.test_photos, "sizes": entries, "growth": growth,
            "extraction": extraction,
            "machine": {**machine(), "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")},
            "wall_s": round(time.perf_counter() - began, 1)}


if __name__ == "__main__":
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as app.py and `python -m train` set it
    parsed = get_args_parser().parse_args()
    if parsed.measure:
        kind, *rest = parsed.measure
        measure = {"predict": _measure_predict, "speed": _measure_speed, "extract": _measure_extraction}[kind]
        print(json.dumps(measure(*rest)))
    else:
        print(json.dumps(main(parsed), indent=2))
