"""Automatic regions on the real campus photos: which partitioning trains the better model?

    python bench/partitions.py [--k 15] [--seeds 0 1] [--methods original kd balanced-kmeans]

The README's fixed split (`train split --fraction 0.3 --seed 0`, stratified by the original
labels) holds out 72 photos. For each method the training photos' positions are partitioned
into K regions (`geomodel.regions.auto_regions`; "original" keeps the collection's own
Region_IDs), train and test photos are relabelled with those regions (a photo outside every
polygon, such as a label outlier, gets the nearest region), the `cpu-small` recipe is trained
with the regions given as `--regions`, and the model is evaluated on the held-out photos.

Region accuracy means something different for every partition (how often the model names the
photo's cell); the errors in coordinates are comparable across partitions. Prints one JSON
object. Needs ../shared/data/campus.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import CAMPUS, machine, train as train_command  # noqa: E402


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--k", type=int, default=15, help="regions (the campus has 15)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds")
    p.add_argument("--methods", nargs="+", default=["original", "kd", "balanced-kmeans"])
    p.add_argument("--work-dir", type=Path, help="keep CSVs, regions and models here (default: a temp folder)")
    p.add_argument("--figure", type=Path, help="also draw the partitions of the training photos into this PNG")
    p.add_argument("--no-train", action="store_true", help="only the partitions (and --figure), no training")
    return p


def figure(train, k: int, path: Path) -> Path:
    """The original labels' derived regions and both automatic partitions of the training photos."""
    from geomodel.charts import regions_figure, save_png
    from geomodel.regions import AUTO_METHODS, auto_regions, derive_regions

    lat, lon = train["latitude"].to_numpy(float), train["longitude"].to_numpy(float)
    ids = train["Region_ID"].to_numpy()
    derived = derive_regions(lat, lon, ids, frame="planar", names=[f"Region {i}" for i in range(1, ids.max() + 1)])
    panels = [("original labels, derived polygons", derived, lat, lon, derived.assign(lat, lon))]
    for method in AUTO_METHODS:
        auto, regions = auto_regions(lat, lon, k, frame="planar", method=method)
        panels.append((f"auto regions: {method}, K={k}", regions, lat, lon, auto))
    return save_png(regions_figure(panels), path)


def relabel(method: str, train, test, k: int, work: Path):
    """(train, test, regions file or None) with Region_IDs from `method`'s partition of the training positions."""
    from geomodel.regions import auto_regions

    if method == "original":
        return train, test, None
    _, regions = auto_regions(train["latitude"], train["longitude"], k, frame="planar", method=method)
    train, test = train.copy(), test.copy()
    for df in (train, test):
        df["Region_ID"] = regions.assign(df["latitude"], df["longitude"], nearest=True)
    return train, test, regions.write(work / f"{method}.geojson")


def run(method: str, seed: int, train_csv: Path, test_csv: Path, regions: Path | None, work: Path) -> dict:
    from geomodel.data.labels import read_labels
    from geomodel.predictor import Predictor, evaluate_frame

    out = work / f"{method}-seed{seed}"
    argv = ["fit", "--preset", "cpu-small", "--csv", train_csv, "--images", CAMPUS / "images",
            "--out", out, "--seed", seed, "--device", "cpu"]
    started = time.perf_counter()
    train_command(*argv, *(["--regions", regions] if regions else []))
    seconds = time.perf_counter() - started
    predictor = Predictor.from_dir(out, device="cpu")
    stats = predictor.coords_ckpt["coord_stats"]
    pred = predictor.predict_frame(read_labels(test_csv), CAMPUS / "images", progress=False)
    m = evaluate_frame(pred, predictor.num_regions, "planar", (stats["low"], stats["high"]))
    keep = ("region_accuracy", "median_error", "mean_error", "coord_mse", "coord_mse_inliers",
            "median_error_inliers", "n_label_outliers")
    return {"method": method, "seed": seed, "train_seconds": round(seconds, 1), **{k: m[k] for k in keep}}


def main(args: argparse.Namespace) -> dict:
    import pandas as pd

    from geomodel.data.labels import read_labels, stratified_split

    if not (CAMPUS / "labels.csv").is_file():
        raise SystemExit(f"needs the campus photos in {CAMPUS}")
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-partitions-") as tmp:
        work = args.work_dir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        df = read_labels(CAMPUS / "labels.csv")
        train, test = stratified_split(df, 0.3, 0)  # the README's fixed split
        columns = [c for c in df.columns if c not in ("row", "region")]
        if args.figure:
            print(f"figure: {figure(train, args.k, args.figure)}", file=sys.stderr)
        if args.no_train:
            return {"benchmark": "partitions", "figure": str(args.figure)}
        runs, sizes = [], {}
        for method in args.methods:
            tr, te, regions = relabel(method, train[columns], test[columns], args.k, work)
            sizes[method] = pd.Series(tr["Region_ID"]).value_counts().sort_index().tolist()
            tr.to_csv(work / f"{method}-train.csv", index=False)
            te.to_csv(work / f"{method}-test.csv", index=False)
            for seed in args.seeds:
                runs.append(run(method, seed, work / f"{method}-train.csv", work / f"{method}-test.csv", regions,
                                work))
                print(json.dumps(runs[-1]), file=sys.stderr, flush=True)
    summary = {}
    for method in args.methods:
        mine = [r for r in runs if r["method"] == method]
        summary[method] = {k: round(statistics.mean(r[k] for r in mine), 4)
                           for k in ("region_accuracy", "median_error", "mean_error", "coord_mse_inliers",
                                     "median_error_inliers")}
        summary[method]["train_photos_per_region"] = sizes[method]
    return {"benchmark": "partitions", "k": args.k, "seeds": args.seeds, "test_photos": len(test),
            "summary": summary, "runs": runs, "seconds": round(time.perf_counter() - began, 1), **machine()}


if __name__ == "__main__":
    print(json.dumps(main(get_args_parser().parse_args()), indent=2))
