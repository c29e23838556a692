"""`python -m demo.bundle`: regenerate the offline demo bundle in `assets/` from scratch.

Everything is synthetic (no real photo may be committed): a 6-region campus from
`geomodel.synthetic`, a validation set and example photos rendered into `assets/`, and a demo
model trained on a separate synthetic training set rendered into a temporary folder (not
committed). The model is the `cpu-small` recipe: a frozen, pretrained EfficientNet-Lite0 trunk
(rebuilt from its pip package on load, so it is not stored) with trained heads, shared layout.

Written under OUT (default `assets/`):

    model/    region.pt, coords.pt, *_config.json, *_metrics.json, *_history.csv,
              plan.png + plan.json (the map's background and its bounds),
              regions.geojson (the campus's true region rectangles, with the region names)
    val/      labels.csv + images/ (validation photos the app's explorer tab shows)
    examples/ labels.csv + one photo per region (the Predict tab's examples)
    bundle.json  how the bundle was made and the model's scores on val/

Same arguments give the same photos and CSVs; the trained weights are reproducible on the
same machine and thread count (float reductions may differ across CPUs).
"""
from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "assets"
_MODEL_FILES = ("region.pt", "coords.pt", "region_config.json", "coords_config.json", "region_metrics.json",
                "coords_metrics.json", "region_history.csv", "coords_history.csv")


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m demo.bundle", description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="bundle folder to (re)write")
    p.add_argument("--regions", type=int, default=6, help="number of campus regions")
    p.add_argument("--campus-seed", type=int, default=0, help="seed of the synthetic campus")
    p.add_argument("--train-images", type=int, default=900, help="synthetic training photos (not committed)")
    p.add_argument("--val-images", type=int, default=60, help="validation photos written to OUT/val")
    p.add_argument("--photo-size", type=int, default=128, help="side of the rendered photos in pixels")
    p.add_argument("--image-size", type=int, default=128, help="model input size in pixels")
    p.add_argument("--epochs", type=int, default=60, help="region-stage epochs")
    p.add_argument("--coords-epochs", type=int, default=150, help="coordinate-stage epochs")
    p.add_argument("--aug-views", type=int, default=2, help="augmented views cached per training photo")
    p.add_argument("--seed", type=int, default=0, help="training seed")
    p.add_argument("--work-dir", type=Path, help="keep the training set and logs here (default: a temp folder)")
    return p


def write_examples(plan, out: Path, photo_size: int, seed: int) -> list[dict]:
    """One photo per region, saved as JPEG, with their true labels in `out/labels.csv`."""
    from PIL import Image

    from geomodel.synthetic import make_dataset

    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        labels = make_dataset(plan, tmp, n_images=8 * plan.n_regions, image_size=photo_size, seed=seed,
                              filename_prefix="ex")
        rows = list(csv.DictReader(labels.open()))
        chosen: dict[int, dict] = {}
        for row in rows:
            chosen.setdefault(int(row["Region_ID"]), row)
        out_rows = []
        for region in sorted(chosen):
            row = dict(chosen[region])
            name = f"campus_photo_{region}.jpg"
            Image.open(Path(tmp) / "images" / row["filename"]).convert("RGB").save(out / name, quality=92)
            row["filename"] = name
            out_rows.append(row)
    with (out / "labels.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(out_rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(out_rows)
    return out_rows


def write_regions(plan, model_dir: Path) -> Path:
    """The campus's true region rectangles as `model_dir/regions.geojson` (planar, the plan's names)."""
    from geomodel.regions import FILE_NAME, Regions

    return Regions.from_boxes("planar", plan.region_names, plan.region_rectangles()).write(model_dir / FILE_NAME)


def training_argv(train_csv: Path, train_images: Path, model_dir: Path, names_file: Path, args: argparse.Namespace,
                  cache_dir: Path) -> list[str]:
    """The `cpu-small` recipe's command line, with the settings the bundle pins."""
    return ["fit", "--preset", "cpu-small", "--csv", str(train_csv), "--images", str(train_images),
            "--out", str(model_dir), "--frame", "planar", "--image-size", str(args.image_size),
            "--region-names", str(names_file), "--epochs", str(args.epochs),
            "--coords-epochs", str(args.coords_epochs), "--aug-views", str(args.aug_views),
            # pinned, so the bundle does not change when the real-photo preset is retuned
            "--feature-layers", "head", "--pool", "avg", "--match-layers", "",
            "--seed", str(args.seed), "--cache-dir", str(cache_dir), "--device", "cpu"]


def train_model(train_csv: Path, train_images: Path, model_dir: Path, names_file: Path, args: argparse.Namespace,
                cache_dir: Path) -> None:
    """The `cpu-small` recipe through the training CLI, so the bundle is made exactly as users train."""
    from train.cli import main as train_main

    code = train_main(training_argv(train_csv, train_images, model_dir, names_file, args, cache_dir))
    if code != 0:
        raise SystemExit(f"training failed (exit code {code})")


def evaluate(model_dir: Path, val_csv: Path, val_images: Path) -> dict:
    from geomodel.data.labels import read_labels
    from geomodel.predictor import Predictor, evaluate_frame

    predictor = Predictor.from_dir(model_dir, device="cpu")
    pred = predictor.predict_frame(read_labels(val_csv), val_images, progress=False)
    m = evaluate_frame(pred, predictor.num_regions, predictor.frame)
    keep = ("n_images", "n_failed", "region_accuracy", "coord_mse", "mean_error", "median_error", "error_unit",
            "per_region_accuracy", "per_region_median_error")
    return {k: m[k] for k in keep}


def main(argv: Sequence[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    from geomodel.synthetic import make_campus, make_dataset

    started = time.perf_counter()
    out: Path = args.out
    plan = make_campus(n_regions=args.regions, seed=args.campus_seed)
    for sub in ("model", "val", "examples"):
        shutil.rmtree(out / sub, ignore_errors=True)
    model_dir = out / "model"
    model_dir.mkdir(parents=True)

    # Seeds differ per set, so training, validation and example photos are different views.
    print(f"rendering {args.val_images} validation photos ...", flush=True)
    val_csv = make_dataset(plan, out / "val", n_images=args.val_images, image_size=args.photo_size,
                           seed=1000 + args.campus_seed, filename_prefix="val", image_format="jpg")
    for name in ("plan.png", "plan.json"):  # the map background belongs with the model
        (out / "val" / name).replace(model_dir / name)
    write_examples(plan, out / "examples", args.photo_size, seed=2000 + args.campus_seed)
    write_regions(plan, model_dir)

    work = Path(tempfile.mkdtemp(prefix="geomodel-bundle-")) if args.work_dir is None else args.work_dir
    try:
        print(f"rendering {args.train_images} training photos into {work} ...", flush=True)
        train_csv = make_dataset(plan, work / "train", n_images=args.train_images, image_size=args.photo_size,
                                 seed=args.campus_seed, filename_prefix="train")
        names = work / "region_names.txt"
        names.write_text("\n".join(plan.region_names) + "\n")
        trained = work / "model"
        train_model(train_csv, work / "train" / "images", trained, names, args, cache_dir=work / "cache")
        for name in _MODEL_FILES:  # not *_last.pt (resume state) nor args.json (temp paths)
            shutil.copy2(trained / name, model_dir / name)
    finally:
        if args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)

    metrics = evaluate(model_dir, val_csv, out / "val" / "images")
    settings = {k: v for k, v in vars(args).items() if k not in ("out", "work_dir")}
    bundle = {"command": "python -m demo.bundle", "settings": settings, "region_names": plan.region_names,
              "frame": "planar", "validation": metrics, "seconds": round(time.perf_counter() - started, 1)}
    (out / "bundle.json").write_text(json.dumps(bundle, indent=2) + "\n")
    print(f"validation ({metrics['n_images']} photos): region accuracy {metrics['region_accuracy']:.1%}, "
          f"median error {metrics['median_error']:.1f} {metrics['error_unit']}")
    print(f"bundle written to {out} in {bundle['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
