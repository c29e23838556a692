"""What longer walks buy: accuracy on held-out photos after 1, 2 and 5 minutes of walking per region.

    python bench/walk.py [--minutes 1,2,5] [--regions 6] [--out DIR]

On `geomodel.synthetic`'s demo campus (6 regions, 1 km across), a walker films a walk in every
region at walking speed (1.4 m/s, with pauses) while a GPS app records the track with realistic,
slowly wandering GPS error (3 m). Everything goes through the real pipeline: the videos and
the GPX track through `python -m train collect --regions` (frames every 2 m walked), then
`python -m train fit --preset cpu-small` on the frames of the first 1, 2, 5 minutes of each
walk, then `evaluate` on held-out photos taken at *other* random places in each region, facing
random directions (not frames of the walks), collected with the same regions.

Also reported: how many frames per minute of walking `--every 2` keeps, counted on the same
tracks for a 30 fps phone video (the rendered videos use a lower frame rate to save rendering
time; `FramePicker` decides from the track alone, so the count needs no pixels). Prints JSON.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import machine, train  # noqa: E402


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", default="1,2,5", help="minutes of walking per region to compare")
    p.add_argument("--regions", type=int, default=6, help="regions of the synthetic campus")
    p.add_argument("--test", type=int, default=20, help="held-out photos per region")
    p.add_argument("--size", type=int, default=96, help="video frame and photo size in pixels")
    p.add_argument("--fps", type=float, default=5.0, help="frame rate of the rendered videos")
    p.add_argument("--every", type=float, default=2.0, help="collect: a frame every this many metres")
    p.add_argument("--image-size", type=int, default=96, help="training input size (the rendered size: no upscaling)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, help="keep the material, collections and models here (default: a temp dir)")
    return p


def frames_at_30fps(gpx: Path, starts: list[float], seconds: float, every: float) -> list[int]:
    """Frames `--every` keeps from a 30 fps video of each walk, decided from the track alone."""
    from geomodel.collect.tracks import Tracks, read_gpx
    from geomodel.collect.video import FramePicker, Uncovered

    tracks = Tracks([read_gpx(gpx)])
    counts = []
    for start in starts:
        picker, kept = FramePicker(tracks, every_m=every), 0
        for i in range(int(seconds * 30)):
            try:
                kept += picker.pick(start + i / 30, i / 30) is not None
            except Uncovered:
                pass
        counts.append(kept)
    return counts


def main(argv: list[str] | None = None) -> int:
    import pandas as pd

    from geomodel.collect.walk import Sample, make_sample
    from geomodel.synthetic import make_campus

    args = get_args_parser().parse_args(argv)
    minutes = sorted(float(m) for m in args.minutes.split(","))
    work = args.out or Path(tempfile.mkdtemp(prefix="bench-walk-"))
    work.mkdir(parents=True, exist_ok=True)
    timings = {}

    t0 = time.perf_counter()
    plan = make_campus(n_regions=args.regions, seed=args.seed)
    made = dict(minutes=max(minutes), photos_per_region=0, untagged_per_region=0, test_per_region=args.test,
                size=args.size, fps=args.fps, seed=args.seed)
    marker = work / "material" / "made.json"  # rendering takes minutes: a rerun with --out reuses it
    saved = json.loads(marker.read_text()) if marker.is_file() else {}
    if saved.get("settings") == {**made, "regions": args.regions}:
        sample = Sample.at(work / "material", saved["walk_starts"])
    else:
        sample = make_sample(work / "material", plan, **made)
        marker.write_text(json.dumps({"settings": {**made, "regions": args.regions},
                                      "walk_starts": sample.walk_starts}))
    timings["render_s"] = time.perf_counter() - t0


    t0 = time.perf_counter()
    train("collect", sample.videos, "--gpx", sample.gpx, "--regions", sample.regions, "--every", args.every,
        "--out", work / "walks", "--overwrite")
    timings["collect_s"] = time.perf_counter() - t0
    train("collect", sample.test, "--regions", sample.regions, "--out", work / "test", "--overwrite")

    labels = pd.read_csv(work / "walks" / "labels.csv", dtype={"filename": str})
    # frames are named walk_<region>_<milliseconds into the video>ms.jpg
    parts = labels["filename"].str.extract(r"^walk_(\d+)_(\d+)ms\.jpg$").astype(float)
    labels["walk"], labels["seconds"] = parts[0], parts[1] / 1000
    results = []
    for m in minutes:
        subset = labels[labels["seconds"] < m * 60]
        csv = work / f"walks_{m:g}min.csv"
        subset.drop(columns=["walk", "seconds"]).to_csv(csv, index=False)
        model = work / f"model_{m:g}min"
        t0 = time.perf_counter()
        train("fit", "--preset", "cpu-small", "--frame", "wgs84", "--csv", csv, "--images", work / "walks" / "images",
            "--out", model, "--image-size", args.image_size, "--seed", args.seed, "--device", "cpu")
        fit_s = time.perf_counter() - t0
        train("evaluate", "--model", model, "--csv", work / "test" / "labels.csv", "--images", work / "test" / "images",
            "--json", model / "test.json")
        metrics = json.loads((model / "test.json").read_text())
        per_region = subset.groupby("Region_ID").size()
        results.append({
            "minutes_per_region": m,
            "photos": len(subset),
            "photos_per_region": round(len(subset) / args.regions, 1),
            "photos_per_region_min": int(per_region.min()),
            "region_accuracy": round(metrics["region_accuracy"], 4),
            "median_error_m": round(metrics["median_error"], 1),
            "mean_error_m": round(metrics["mean_error"], 1),
            "fit_s": round(fit_s, 1),
        })
        print(json.dumps(results[-1]), file=sys.stderr)

    thirty = frames_at_30fps(sample.gpx, sample.walk_starts, max(minutes) * 60, args.every)
    rendered = labels.groupby("walk").size()
    summary = {
        "benchmark": "walk",
        "campus": f"synthetic, {args.regions} regions, 1000 x 1000 m",
        "walk": "1.4 m/s with pauses (about 6 s per minute), GPS error 3 m (correlated over 30 s)",
        "video": f"{args.size} px at {args.fps:g} fps (rendered)",
        "collect": f"--every {args.every:g} (metres)",
        "held_out": f"{args.test} photos per region at other random places, random headings "
                    f"({len(pd.read_csv(work / 'test' / 'labels.csv'))} in all)",
        "recipe": f"fit --preset cpu-small --frame wgs84 --image-size {args.image_size}",
        "results": results,
        "frames_per_minute_per_region": {
            f"rendered_{args.fps:g}fps": round(float(rendered.mean()) / max(minutes), 1),
            "phone_30fps": round(sum(thirty) / len(thirty) / max(minutes), 1),
        },
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
        "machine": machine(),
        "work_dir": str(work) if args.out else None,
    }
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
