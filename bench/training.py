"""Training speed: fine-tuning the trunk against a frozen trunk with the feature cache, in one run.

    python bench/training.py [--photos 128] [--finetune-epochs 2] [--frozen-epochs 5] [--aug-views 2]

Trains stage 1 (the region classifier, EfficientNet-Lite0) on the same photos
three ways, through the library's own `train_region`/`train_coords`:

* fine-tuned: every epoch runs the trunk forward and backward on every photo;
* frozen + cache, cold: the first epoch computes the trunk features once (the
  plain view plus --aug-views fixed augmented views); later epochs train the
  heads on the cached features;
* frozen + cache, warm: the same run again (a new run, stage 2, another seed)
  finds every feature in the cache, and stage 2 (shared layout) reuses them too.

Epoch times come from the training log's timestamps; the first epoch's time
starts when `train_region` is called, so it includes model building and feature
extraction. Photos/s = training photos / epoch time. Prints one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import CAMPUS, machine  # noqa: E402


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--photos", type=int, default=128, help="photos used (train + validation), 0: all")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--finetune-epochs", type=int, default=2)
    p.add_argument("--frozen-epochs", type=int, default=5)
    p.add_argument("--aug-views", type=int, default=2, help="augmented views cached per photo (frozen runs)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default, one per core)")
    p.add_argument("--omp-wait-policy", choices=("passive", "active", "env"), default="passive",
                   help="see bench/inference.py; env: leave OMP_WAIT_POLICY as it is")
    return p


def _dataset(n: int, workdir: Path) -> tuple[Path, Path, str]:
    """(labels CSV, images folder, description): a subset of the campus photos, else a synthetic set."""
    import pandas as pd

    if (CAMPUS / "labels.csv").is_file():
        df = pd.read_csv(CAMPUS / "labels.csv")
        if n and n < len(df):  # every region keeps photos: take the same share of each
            df = df.groupby("Region_ID").sample(frac=n / len(df), random_state=0)
        csv = workdir / "labels.csv"
        df.to_csv(csv, index=False)
        return csv, CAMPUS / "images", f"campus ({len(df)} real photos)"
    from geomodel.synthetic import make_campus, make_dataset

    csv = make_dataset(make_campus(n_regions=6, seed=0), workdir / "synthetic", n_images=n or 128, image_size=128,
                       seed=0, image_format="jpg")
    return csv, csv.parent / "images", f"synthetic ({n or 128} photos; no campus photos found)"


class EpochClock:
    """A `log` callback that timestamps the per-epoch lines `fit` writes."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.stamps: list[float] = []

    def __call__(self, message: str) -> None:
        if "] epoch " in message:
            self.stamps.append(time.perf_counter())

    def epochs(self) -> list[float]:
        edges = [self.start, *self.stamps]
        return [round(b - a, 2) for a, b in zip(edges, edges[1:])]


def main(args: argparse.Namespace) -> dict:
    if args.omp_wait_policy != "env":  # read once, when torch loads OpenMP: set it before the import
        os.environ["OMP_WAIT_POLICY"] = args.omp_wait_policy.upper()
    import torch

    from geomodel.config import DataConfig, ModelConfig, TrainConfig
    from geomodel.engine.stages import prepare_data, train_coords, train_region

    if args.threads:
        torch.set_num_threads(args.threads)
    began = time.perf_counter()
    info = machine()
    with tempfile.TemporaryDirectory(prefix="bench-training-") as tmp:
        tmp = Path(tmp)
        csv, images, source = _dataset(args.photos, tmp)
        prep = prepare_data(csv, images, data_cfg=DataConfig(image_size=args.image_size), seed=0)
        n_train = len(prep.train)

        def run(name: str, epochs: int, **train: object) -> list[float]:
            clock = EpochClock()
            cfg = TrainConfig(epochs=epochs, patience=epochs, batch_size=args.batch_size, device="cpu",
                              cache_dir=str(tmp / "cache"), **train)
            train_region(prep, ModelConfig(kind="region", backbone="efficientnet_lite0"), cfg, tmp / name, log=clock)
            return clock.epochs()

        finetune = run("finetune", args.finetune_epochs)
        cold = run("frozen", args.frozen_epochs, freeze_backbone=True, aug_views=args.aug_views)
        warm = run("frozen_again", args.frozen_epochs, freeze_backbone=True, aug_views=args.aug_views, seed=1)
        clock = EpochClock()
        train_coords(prep, ModelConfig(kind="coords", backbone="efficientnet_lite0"),
                     TrainConfig(epochs=2, batch_size=args.batch_size, device="cpu", freeze_backbone=True,
                                 aug_views=args.aug_views, cache_dir=str(tmp / "cache")), tmp / "frozen", log=clock)
        coords = clock.epochs()

    def per_s(seconds: float) -> float:
        return round(n_train / seconds, 1)

    ft_epoch = statistics.median(finetune)
    later = statistics.median(cold[1:]) if len(cold) > 1 else float("nan")
    return {
        "benchmark": "training",
        "photos": source,
        "train_photos": n_train,
        "val_photos": len(prep.val),
        "backbone": "efficientnet_lite0",
        "image_size": args.image_size,
        "finetune": {"epoch_s": finetune, "train_images_per_s": per_s(ft_epoch)},
        "frozen_cached": {
            "aug_views": args.aug_views,
            "epoch_s": cold,
            "first_epoch_s": cold[0],
            "later_epoch_s": round(later, 3),
            "first_epoch_train_images_per_s": per_s(cold[0]),
            "later_epoch_train_images_per_s": per_s(later),
            "later_over_first": round(later / cold[0], 4),
        },
        "frozen_warm_cache_first_epoch_s": warm[0],
        "coords_stage_on_cached_features_first_epoch_s": coords[0],
        "later_frozen_epoch_speedup_vs_finetune": round(ft_epoch / later, 1),
        "machine": {**info, "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
                    "load_avg_end": machine()["load_avg"]},
        "wall_s": round(time.perf_counter() - began, 1),
    }


if __name__ == "__main__":
    print(json.dumps(main(get_args_parser().parse_args()), indent=2))
