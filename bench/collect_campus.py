"""The real campus photos as a phone would have taken them: GPS in their EXIF, then collect, fit, evaluate.

    python bench/collect_campus.py [--k 15] [--out DIR]

Copies the campus photos (`../shared/data/campus`) into a temporary folder (never the repo),
writing each one's position into its EXIF GPS tags (and its heading into GPSImgDirection) with
the same fixed planar -> WGS84 mapping the synthetic campus uses (`geomodel.geo.planar_to_wgs84`,
1 planar unit = 1 metre, so errors in metres read as the planar figures' units). Then, exactly as
a user would:

    python -m train collect photos/ --auto-regions 15 --out c
    python -m train split --csv c/labels.csv --out-dir c/split --fraction 0.3 --seed 0
    python -m train fit --preset cpu-small --frame wgs84 --csv c/split/train.csv --images c/images --out m
    python -m train evaluate --model m --csv c/split/test.csv --images c/images --json m/test.json

and prints what each step gave as one JSON object. JPEGs are re-saved with Pillow's
``quality="keep"`` (their own quantisation tables) to carry the new EXIF; PNGs are lossless.
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

from bench import CAMPUS, machine, train  # noqa: E402

PLANAR_ORIGIN = (220000.0, 143000.0)  # near the middle of the campus's planar coordinates
QUICK = ("--image-size", 128, "--aug-views", 1, "--epochs", 5, "--coords-epochs", 5)


def geotag_copies(labels_csv: Path, images: Path, out: Path) -> int:
    """Copies of the photos with GPS (and heading) in EXIF; returns how many were written."""
    import pandas as pd
    from PIL import Image

    from geomodel.collect.exif import write_photo_meta
    from geomodel.geo import planar_to_wgs84

    out.mkdir(parents=True, exist_ok=True)
    df = pd.read_csv(labels_csv, dtype={"filename": str})
    lat, lon = planar_to_wgs84(df["latitude"].to_numpy(), df["longitude"].to_numpy(), planar_origin=PLANAR_ORIGIN)
    n = 0
    for name, la, lo, angle in zip(df["filename"], lat, lon, df.get("angle", [None] * len(df))):
        src = images / name
        with Image.open(src) as im:
            keep = {"quality": "keep", "subsampling": "keep"} if im.format == "JPEG" else {}
            write_photo_meta(im, out / name, latitude=float(la), longitude=float(lo),
                             angle=None if pd.isna(angle) else float(angle), **keep)
        n += 1
    return n


def main(argv: list[str] | None = None) -> int:

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--k", type=int, default=15, help="--auto-regions K")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, help="keep everything here (default: a temporary folder)")
    p.add_argument("--quick", action="store_true", help="a short fit (128 px, 1 view, 5 + 5 epochs): shows that "
                   "fit/evaluate accept the collection, not what the recipe reaches")
    args = p.parse_args(argv)
    if not (CAMPUS / "labels.csv").is_file():
        print(json.dumps({"skipped": f"campus photos not found at {CAMPUS}"}))
        return 0
    work = args.out or Path(tempfile.mkdtemp(prefix="bench-campus-"))


    timings = {}
    t0 = time.perf_counter()
    n = geotag_copies(CAMPUS / "labels.csv", CAMPUS / "images", work / "photos")
    timings["geotag_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    train("collect", work / "photos", "--auto-regions", args.k, "--seed", args.seed, "--out", work / "c")
    timings["collect_s"] = time.perf_counter() - t0
    summary = json.loads((work / "c" / "summary.json").read_text())
    train("split", "--csv", work / "c" / "labels.csv", "--out-dir", work / "c" / "split", "--fraction", 0.3,
        "--seed", args.seed)
    t0 = time.perf_counter()
    train("fit", "--preset", "cpu-small", "--frame", "wgs84", "--csv", work / "c" / "split" / "train.csv",
        "--images", work / "c" / "images", "--regions", work / "c" / "regions.geojson", "--out", work / "m",
        "--seed", args.seed, "--device", "cpu", *QUICK * args.quick)
    timings["fit_s"] = time.perf_counter() - t0
    train("evaluate", "--model", work / "m", "--csv", work / "c" / "split" / "test.csv", "--images",
        work / "c" / "images", "--json", work / "m" / "test.json")
    metrics = json.loads((work / "m" / "test.json").read_text())
    keep = ("n_images", "region_accuracy", "median_error", "mean_error", "coord_mse", "n_label_outliers",
            "median_error_inliers", "coord_mse_inliers", "heading_mae")
    print(json.dumps({
        "benchmark": "collect_campus",
        "photos_geotagged": n,
        "collection": {"photos": summary["photos"], "left_out": len(summary["left_out"]),
                       "photos_per_region": [r["photos"] for r in summary["regions"]]},
        "test": {k: metrics[k] for k in keep if k in metrics},
        "error_unit": metrics.get("error_unit"),
        "fit": "quick: " + " ".join(map(str, QUICK)) if args.quick else "fit --preset cpu-small",
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
        "machine": machine(),
        "work_dir": str(work) if args.out else None,
    }, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
