"""`python -m train SUBCOMMAND`: argument parsing only; all work is done by `geomodel`."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from train import check, collect
from train.presets import PRESETS, apply_preset

STAGES = ("region", "coords", "fit")


def _add_data_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--csv", required=True, type=Path, help="labels CSV (filename, latitude, longitude, Region_ID)")
    g.add_argument("--images", required=True, type=Path, help="folder holding the CSV's image files")
    g.add_argument("--val-csv", type=Path, help="validation CSV; default: a stratified hold-out of --csv")
    g.add_argument("--val-images", type=Path, help="validation image folder (default: --images)")
    _add_outside_flag(g)
    g.add_argument("--val-fraction", type=float, default=0.15, help="hold-out share when no --val-csv")
    g.add_argument("--frame", choices=("planar", "wgs84"), default="planar",
                   help="coordinate frame: wgs84 degrees (metres) or planar (any unit)")
    g.add_argument("--image-size", type=int, default=224, help="square input size in pixels")
    g.add_argument("--num-regions", type=int, help="number of regions (default: largest Region_ID)")
    g.add_argument("--region-names", type=Path, help="text file with one region name per line, region 1 first")
    g.add_argument("--regions", type=Path, help="regions GeoJSON (polygons with properties region_id 1..N and "
                   "name): copied into the model, names taken from it (default: polygons derived from the "
                   "training photos' positions)")
    g.add_argument("--exclude", default="", help="comma-separated filenames or 0-based row indices to drop, "
                   "or @FILE with one per line")
    g.add_argument("--outlier-pct", type=float, nargs=2, default=(1.0, 99.0), metavar=("LOW", "HIGH"),
                   help="drop training rows with lat/lon outside these percentiles (fitted on train only)")


def _add_outside_flag(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    p.add_argument("--allow-outside-images", action="store_true",
                   help="read CSV rows whose file lies outside the image folder (../ paths, absolute paths, "
                        "links pointing elsewhere); refused by default")


def _add_train_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model and training")
    g.add_argument("--preset", choices=sorted(PRESETS), help="a named recipe; explicit flags override it")
    g.add_argument("--out", required=True, type=Path, help="model directory to write")
    g.add_argument("--backbone", default="efficientnet_lite0", help="backbone name (see geomodel.BACKBONES)")
    g.add_argument("--pretrained", choices=("imagenet", "none"), default="imagenet", help="initial weights")
    g.add_argument("--pool", choices=("avg", "gem"), default="avg", help="backbone pooling")
    g.add_argument("--feature-layers", default="head",
                   help="EfficientNet-Lite layers to pool and concatenate, e.g. 14,15,head (mid-level + final)")
    g.add_argument("--match-layers", default="",
                   help="region stage: also match these feature layers' local descriptors against every "
                        "training photo and fuse with the head, e.g. 14,head (must be among --feature-layers)")
    g.add_argument("--match-weight", default="auto",
                   help="share of local matching in the fused region probabilities (with --match-layers): "
                        "auto chooses it on the validation split (0 = off: no gallery is stored), a number, "
                        "or comma-separated weights to choose from (e.g. 0.1,0.2,0.5: matching stays on)")
    g.add_argument("--match-per-region", type=int, default=3,
                   help="gallery photos matched per query photo in each region: the region's most similar "
                        "by global descriptor (the cost grows with the regions, not the gallery)")
    g.add_argument("--match-code-bytes", type=int, default=16,
                   help="bytes per stored local descriptor: product-quantised codes (a divisor of 64), or 0 to "
                        "store the float16 descriptors themselves (128 bytes each: exact, 8x the gallery size)")
    g.add_argument("--match-mode", choices=("region", "photo"), default="region",
                   help="local matching: a query descriptor's best match among all of a region's photos, "
                        "or the region's single best-matching photo")
    g.add_argument("--layout", choices=("shared", "separate"), default="shared",
                   help="shared: stage 2 reuses stage 1's trunk (one backbone pass per photo)")
    g.add_argument("--attention", choices=("features", "scalar"), default="features",
                   help="stage-2 attention: per-feature weights, or the original scalar gate")
    g.add_argument("--coord-target", choices=("absolute", "offset"), default="absolute",
                   help="stage 2 outputs the position, or an offset from the region's centroid scaled by "
                        "the region's spread (a photo it knows nothing about lands on the centroid)")
    g.add_argument("--region-input", choices=("predicted", "true"), default="predicted",
                   help="region fed to stage 2 in training: stage 1's prediction (original) or the truth")
    g.add_argument("--head-hidden", type=int, default=0, help="region head hidden width (0: linear)")
    g.add_argument("--epochs", type=int, default=15)
    g.add_argument("--coords-epochs", type=int, help="epochs for stage 2 (default: --epochs)")
    g.add_argument("--batch-size", type=int, default=32)
    g.add_argument("--lr", type=float, help="learning rate (default: 1e-3 region; 1e-4 coords, 1e-3 if frozen)")
    g.add_argument("--patience", type=int, default=5, help="early-stopping patience in epochs")
    g.add_argument("--freeze-backbone", action="store_true", help="train heads only on cached features")
    g.add_argument("--label-smoothing", type=float, default=0.1, help="region stage: label smoothing")
    g.add_argument("--smooth-by-distance", action="store_true",
                   help="region stage: spread the label smoothing over nearby regions (by the distance between "
                        "region centroids) instead of uniformly")
    g.add_argument("--aug-views", type=int, default=0, help="frozen backbone: augmented views cached per image")
    g.add_argument("--no-cache", action="store_true", help="do not keep backbone features on disk")
    g.add_argument("--cache-dir", type=Path, help="feature cache folder (default ~/.cache/geomodel)")
    g.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    g.add_argument("--amp", action="store_true", help="mixed precision on CUDA")
    g.add_argument("--num-workers", type=int, default=0, help="data-loading worker processes")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out")


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m train", description="Train, evaluate and run geomodel models.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (("region", "train stage 1, the region classifier"),
                       ("coords", "train stage 2, the coordinate regressor (needs stage 1 in --out)"),
                       ("fit", "train both stages")):
        p = sub.add_parser(name, help=text, description=text)
        _add_data_args(p)
        _add_train_args(p)
    p = sub.add_parser("evaluate", help="metrics of a model directory on a labelled CSV")
    p.add_argument("--model", required=True, type=Path, help="model directory (region.pt + coords.pt)")
    p.add_argument("--csv", required=True, type=Path)
    p.add_argument("--images", required=True, type=Path)
    _add_outside_flag(p)
    p.add_argument("--json", type=Path, help="write all metrics to this JSON file")
    p.add_argument("--report", type=Path, help="write a failure report (per-region table, confusion matrix "
                   "picture, worst photos) into this folder")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, help="photos per forward pass (default: the Predictor's, 4 on CPU)")
    p.add_argument("--coord-regions", type=int, default=1,
                   help="stage 2 over the K most probable regions, weighted by probability (1: argmax)")
    p = sub.add_parser("split", help="write a stratified train/test split of a labels CSV (fixed seed)")
    p.add_argument("--csv", required=True, type=Path)
    p.add_argument("--out-dir", required=True, type=Path, help="writes train.csv and test.csv here")
    p.add_argument("--fraction", type=float, default=0.3, help="share of each region held out as test")
    p.add_argument("--seed", type=int, default=0)
    p = sub.add_parser("learning-curve", help="how many photos per region? leave-one-out matching accuracy "
                       "for growing shares of a labelled collection (no training)")
    p.add_argument("--csv", required=True, type=Path)
    p.add_argument("--images", required=True, type=Path)
    _add_outside_flag(p)
    p.add_argument("--out", required=True, type=Path, help="writes curve.json and curve.png here")
    p.add_argument("--backbone", default="efficientnet_lite0", help="an efficientnet_lite* backbone")
    p.add_argument("--pretrained", choices=("imagenet", "none"), default="imagenet", help="initial weights")
    p.add_argument("--image-size", type=int, default=256, help="square input size (cpu-small's: 256)")
    p.add_argument("--match-layers", default="14,head", help="layers whose local descriptors are matched")
    p.add_argument("--num-regions", type=int, help="number of regions (default: largest Region_ID)")
    p.add_argument("--shares", default="0.2,0.35,0.5,0.7,0.85,1",
                   help="comma-separated shares of each region's photos in the gallery")
    p.add_argument("--repeats", type=int, default=5, help="random galleries drawn per share below 1")
    p.add_argument("--target", type=float, default=0.7, help="region accuracy to extrapolate to")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=16)
    check.add_arguments(sub.add_parser("check", help="is a model directory (or hf:// model repo) complete and "
                                       "loadable; its size and what it was trained on"))
    p = sub.add_parser("predict", help="predict region and coordinates for images")
    p.add_argument("--model", required=True, type=Path, help="model directory")
    p.add_argument("images", nargs="+", type=Path, help="image files")
    p.add_argument("--csv-out", type=Path, help="write predictions to this CSV")
    p.add_argument("--top-k", type=int, default=3)
    p.add_argument("--device", default="auto")
    collect.add_parser(sub)
    return parser


def _configs(args: argparse.Namespace):
    from geomodel.config import MATCH_WEIGHTS, DataConfig, ModelConfig, TrainConfig

    exclude = args.exclude
    if exclude.startswith("@"):
        exclude = Path(exclude[1:]).read_text().split()
    else:
        exclude = [e.strip() for e in exclude.split(",") if e.strip()]
    names = args.region_names.read_text().splitlines() if args.region_names else None
    names = [n.strip() for n in names if n.strip()] if names else None
    data = DataConfig(frame=args.frame, image_size=args.image_size, outlier_low_pct=args.outlier_pct[0],
                      outlier_high_pct=args.outlier_pct[1], exclude=exclude, val_fraction=args.val_fraction,
                      num_regions=args.num_regions, region_names=names)
    model = dict(backbone=args.backbone, pretrained=args.pretrained == "imagenet", pool=args.pool,
                 feature_layers=[x.strip() for x in args.feature_layers.split(",") if x.strip()],
                 head_hidden=args.head_hidden, attention=args.attention, layout=args.layout,
                 coord_target=args.coord_target)
    train = dict(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, patience=args.patience,
                 freeze_backbone=args.freeze_backbone, cache_features=not args.no_cache,
                 label_smoothing=args.label_smoothing, smooth_by_distance=args.smooth_by_distance,
                 cache_dir=str(args.cache_dir) if args.cache_dir else None, aug_views=args.aug_views,
                 region_input=args.region_input, seed=args.seed, device=args.device, num_workers=args.num_workers,
                 amp=args.amp)
    if args.match_weight == "auto":
        weights = list(MATCH_WEIGHTS)
    else:
        try:
            weights = [float(w) for w in args.match_weight.split(",")]
        except ValueError:
            raise ValueError(f"--match-weight must be 'auto' or numbers in [0, 1], got {args.match_weight!r}") from None
    train["match_weights"] = weights
    matching = dict(match_layers=[x.strip() for x in args.match_layers.split(",") if x.strip()],
                    match_weight=weights[0] if len(weights) == 1 else 0.7, match_mode=args.match_mode,
                    match_per_region=args.match_per_region, match_code_bytes=args.match_code_bytes)
    region = (ModelConfig(kind="region", **model, **matching), TrainConfig(**train))
    coords_train = {**train, "epochs": args.coords_epochs or args.epochs}
    coords = (ModelConfig(kind="coords", **model), TrainConfig(**coords_train))
    return data, region, coords


def _given_regions(args: argparse.Namespace, data_cfg):
    """`--regions FILE`: read and checked against the CSVs; its names and count become the data config's."""
    if args.regions is None:
        return None
    from geomodel.regions import regions_for_labels

    if args.region_names is not None:
        raise ValueError("--regions carries the region names: drop --region-names")
    regions = regions_for_labels(args.regions, frame=args.frame, csvs=[c for c in (args.csv, args.val_csv) if c])
    if args.num_regions not in (None, len(regions)):
        raise ValueError(f"--num-regions {args.num_regions} but {args.regions} has {len(regions)} regions")
    data_cfg.num_regions, data_cfg.region_names = len(regions), regions.names
    return regions


def run_training(args: argparse.Namespace) -> int:
    from geomodel.engine import distributed as dist
    from geomodel.engine.loop import install_sigterm_as_interrupt
    from geomodel.engine.stages import prepare_data, train_coords, train_region

    try:
        data_cfg, (region_m, region_t), (coords_m, coords_t) = _configs(args)
        given = _given_regions(args, data_cfg)
    except ValueError as exc:  # settings that contradict each other: say which, no traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2
    log = print if dist.is_main() else (lambda *_: None)
    prep = prepare_data(args.csv, args.images, data_cfg=data_cfg, seed=args.seed, val_csv=args.val_csv,
                        val_images=args.val_images, allow_outside_images=args.allow_outside_images)
    for warning in prep.warnings if dist.is_main() else []:
        print(f"warning: {warning}", file=sys.stderr)
    log(f"data: {len(prep.train)} training photos, {len(prep.val)} validation photos, {prep.num_regions} regions")
    args.out.mkdir(parents=True, exist_ok=True)
    if dist.is_main():
        (args.out / "args.json").write_text(json.dumps({k: str(v) if isinstance(v, Path) else v
                                                        for k, v in vars(args).items()}, indent=2, default=str))
    if dist.is_main() and args.command in ("region", "fit"):  # stage 1 defines the model's regions
        from geomodel.regions import write_model_regions

        log(write_model_regions(args.out, args.csv, frame=args.frame, names=prep.region_names,
                                exclude=data_cfg.exclude, given=given))
    install_sigterm_as_interrupt()
    summary = {}
    if args.command in ("region", "fit"):
        summary["region"] = train_region(prep, region_m, region_t, args.out, resume=args.resume, log=log)
    if args.command in ("coords", "fit"):
        summary["coords"] = train_coords(prep, coords_m, coords_t, args.out, resume=args.resume, log=log)
    for stage, m in summary.items():
        shown = {k: round(v, 4) if isinstance(v, float) else v for k, v in m.items()
                 if k.startswith("val_") and not isinstance(v, (list, dict))}
        log(f"{stage}: best epoch {m['best_epoch']}: {shown}")
    log(f"model written to {args.out}")
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    from geomodel.data.labels import check_region_count, read_labels
    from geomodel.predictor import Predictor, evaluate_frame

    predictor = Predictor.from_dir(args.model, device=args.device, coord_regions=args.coord_regions)
    df = read_labels(args.csv, frame=predictor.frame)
    check_region_count(args.csv, df, predictor.num_regions)
    pred = predictor.predict_frame(df, args.images, batch_size=args.batch_size, csv=args.csv,
                                   allow_outside=args.allow_outside_images)
    if pred["error"].notna().all():
        from geomodel.errors import DataError

        shown = "\n  ".join(f"line {int(r) + 2}: {e}" for r, e in zip(pred["row"][:5], pred["error"][:5]))
        raise DataError(f"{args.csv}: none of the {len(pred)} images could be used, so there is nothing to "
                        f"evaluate:\n  {shown}")
    stats = predictor.coords_ckpt.get("coord_stats") or {}
    bounds = (stats["low"], stats["high"]) if "low" in stats else None
    metrics = {**evaluate_frame(pred, predictor.num_regions, predictor.frame, bounds), "model": str(args.model),
               "csv": str(args.csv)}
    unit = metrics["error_unit"]
    print(f"images: {metrics['n_images']} ({metrics['n_failed']} could not be read)")
    print(f"region accuracy: {metrics['region_accuracy']:.1%}")
    print(f"coordinate MSE: {metrics['coord_mse']:,.1f} (0.5*(MSE_lat+MSE_lon), {unit}^2)")
    print(f"mean error: {metrics['mean_error']:,.1f} {unit}   median error: {metrics['median_error']:,.1f} {unit}")
    if "heading_mae" in metrics:
        print(f"camera heading: mean absolute error {metrics['heading_mae']:.1f} degrees "
              f"(median {metrics['heading_median_error']:.1f})")
    if metrics.get("n_label_outliers"):
        print(f"without the {metrics['n_label_outliers']} photo(s) whose labels lie outside the training bounds "
              f"({', '.join(metrics['label_outliers'][:5])}): coordinate MSE {metrics['coord_mse_inliers']:,.1f}, "
              f"median error {metrics['median_error_inliers']:,.1f} {unit}")
    for row in metrics["failed"]:
        print(f"  skipped {row['filename']}: {row['error']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(metrics, indent=2))
        print(f"metrics written to {args.json}")
    if args.report:
        from geomodel.report import write_report

        write_report(pred, metrics, predictor.region_names, args.report, images_dir=args.images)
        print(f"report written to {args.report / 'index.html'}")
    return 0


def run_split(args: argparse.Namespace) -> int:
    from geomodel.data.labels import read_labels, stratified_split

    df = read_labels(args.csv)
    train, test = stratified_split(df, args.fraction, args.seed)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    columns = [c for c in df.columns if c not in ("row", "region")]
    train[columns].to_csv(args.out_dir / "train.csv", index=False)
    test[columns].to_csv(args.out_dir / "test.csv", index=False)
    print(f"{len(train)} training rows -> {args.out_dir / 'train.csv'}; {len(test)} test rows -> "
          f"{args.out_dir / 'test.csv'} (stratified, fraction {args.fraction}, seed {args.seed})")
    return 0


def run_learning_curve(args: argparse.Namespace) -> int:
    from geomodel.config import ModelConfig
    from geomodel.charts import learning_curve_figure, save_png
    from geomodel.engine.learning_curve import measure
    from geomodel.engine.loop import resolve_device
    from geomodel.models.region import RegionClassifier

    try:
        layers = [x.strip() for x in args.match_layers.split(",") if x.strip()]
        if not layers:
            raise ValueError("--match-layers: name the layers to match, e.g. 14,head")
        cfg = ModelConfig(kind="region", backbone=args.backbone, pretrained=args.pretrained == "imagenet",
                          feature_layers=layers, match_layers=layers)
        model = RegionClassifier(cfg, image_size=args.image_size)  # a wrong backbone or layer fails here
        try:
            shares = [float(x) for x in args.shares.split(",") if x.strip()]
        except ValueError:
            shares = []
        if not shares or any(not 0 < x <= 1 for x in shares):  # before minutes of feature extraction
            raise ValueError(f"--shares: gallery shares must be in (0, 1], got {args.shares!r}")
        if args.repeats < 1:
            raise ValueError(f"--repeats must be at least 1, got {args.repeats}")
        if not 0 < args.target <= 1:
            raise ValueError(f"--target must be in (0, 1], got {args.target}")
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    result, problems = measure(args.csv, args.images, model, image_size=args.image_size,
                               device=resolve_device(args.device), num_regions=args.num_regions,
                               batch_size=args.batch_size, fractions=shares, repeats=args.repeats,
                               seed=args.seed, target=args.target,
                               allow_outside_images=args.allow_outside_images)
    for problem in problems:
        print(f"  left out {problem}", file=sys.stderr)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "curve.json").write_text(json.dumps({**result, "problems": problems}, indent=2))
    save_png(learning_curve_figure(result), args.out / "curve.png")
    sampled = f" ({result['queries']} of them as queries)" if result["queries"] < result["photos"] else ""
    print(f"{result['photos']} photos{sampled}, {result['regions']} regions; leave-one-out matching accuracy "
          f"(largest region alone: {result['chance_accuracy']:.0%}):")
    print("  photos/region  accuracy        top-3")
    for p in result["points"]:
        print(f"  {p['photos_per_region']:>13.1f}  {p['accuracy']:>6.1%} ± {p['accuracy_std']:.1%}  "
              f"{p['top3_accuracy']:>6.1%}")
    needed = result["photos_per_region_for_target"]
    if result["fit"] is None:
        print("one gallery size only: give --shares two or more values for a trend")
    elif needed is None:
        print(f"accuracy does not rise with more photos here ({result['fit']['slope_per_doubling']:+.1%} per "
              "doubling): more photos of the same kind will not help; look at the regions and the photos")
    else:
        how = "an extrapolation beyond the measured range" if result["extrapolated"] else "within the measured range"
        print(f"{result['fit']['slope_per_doubling']:+.1%} per doubling of the photos per region: "
              f"{args.target:.0%} needs about {needed:.0f} photos per region ({how})")
    print(f"written: {args.out / 'curve.json'}, {args.out / 'curve.png'}")
    return 0


def run_predict(args: argparse.Namespace) -> int:
    from geomodel.export import write_csv
    from geomodel.predictor import Predictor

    predictor = Predictor.from_dir(args.model, device=args.device)
    results = predictor.predict(args.images, top_k=args.top_k, progress=True)
    failed = 0
    for r in results:
        if r["error"]:
            failed += 1
            print(f"{r['file']}: ERROR {r['error']}", file=sys.stderr)
        else:
            top = ", ".join(f"{t['region_name']} {t['prob']:.0%}" for t in r["top_k"])
            heading = f" heading={r['heading']:.0f}°" if r.get("heading") is not None else ""
            print(f"{r['file']}: {r['region_name']} ({top}) lat={r['latitude']:.6f} lon={r['longitude']:.6f}{heading}")
    if args.csv_out:
        columns = ("file", "region_id", "region_name", "region_prob", "latitude", "longitude", "heading", "error")
        with open(args.csv_out, "w", newline="") as fh:
            write_csv(fh, columns, ([r.get(k) for k in columns] for r in results))
    return 1 if failed == len(results) else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = get_args_parser()
    args = parser.parse_args(argv)
    if args.command in STAGES and args.preset:
        args = apply_preset(parser, args.command, args.preset, argv if argv is not None else sys.argv[1:])
    from geomodel.errors import GeomodelError

    try:
        if args.command in STAGES:
            from geomodel.engine import distributed as dist

            with dist.maybe_init_process_group(args.device):
                return run_training(args)
        if args.command == "evaluate":
            return run_evaluate(args)
        if args.command == "split":
            return run_split(args)
        if args.command == "learning-curve":
            return run_learning_curve(args)
        if args.command == "check":
            return check.run_check(args)
        if args.command == "collect":
            return collect.run_collect(args)
        return run_predict(args)
    except GeomodelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; rerun the same command with --resume to continue from the last saved epoch",
              file=sys.stderr)
        return 130
