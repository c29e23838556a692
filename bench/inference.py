"""Inference speed: photos/s of the full two-stage Predictor, new layouts against the original one.

    python bench/inference.py [--configs lite0@224,lite0@224+bf16,lite0@384] [--threads 1]

Every configuration is a real `Predictor` loaded from checkpoints written to a
temporary folder (random weights: speed does not depend on them). Each photo goes
the whole way: file decode, resize/normalise, backbone(s), both heads. Measured:

* the configurations named by --configs: `BACKBONE@SIZE` (lite0/1/2 = EfficientNet-Lite,
  shared layout: one trunk pass feeds both stages), `+bf16` for bfloat16 autocast, `+match`
  for the cpu-small recipe's stage 1 with local matching against a 162-photo gallery (the
  compact gallery `fit` writes: each photo's shortlist of 3 photos per region, product-quantised codes);
* the original-style pipeline ("seed_style"): ViT-B/16 region classifier, then a
  ResNet-101 coordinate model with its own backbone (separate layout), 224 px.

at batch 1 (one photo per call, as in the app), batch 4 (the Predictor's default
on CPU) and batch 32 (32 photos per forward pass), in interleaved rounds, reporting each figure's median over rounds. Prints one JSON
object; `images_per_s` is the recommended configuration (--recommended),
`speedup` its ratio to `seed_style_images_per_s`, both from this run.
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

from bench import machine, photos  # noqa: E402

SEED_STYLE = "seed_style"
ALIASES = {"lite0": "efficientnet_lite0", "lite1": "efficientnet_lite1", "lite2": "efficientnet_lite2"}
NUM_REGIONS = 15
GALLERY_PHOTOS = 162  # +match: a local-matching gallery the size of the campus recipe's (4 views each)


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", default="lite0@224,lite0@224+bf16,lite0@256,lite0@256+match,lite2@260",
                   help="comma-separated BACKBONE@SIZE[+bf16][+match] (shared layout; +match: the cpu-small "
                        "recipe's stage 1 with a 162-photo matching gallery); the original-style pipeline "
                        "is always measured too")
    p.add_argument("--recommended", default="lite0@224", help="the configuration `images_per_s` reports")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default, one per core)")
    p.add_argument("--omp-wait-policy", choices=("passive", "active", "env"), default="passive",
                   help="OpenMP idle threads sleep (passive) or spin (active, libgomp's default); spinning "
                        "threads slow everything down badly when other processes share the cores. "
                        "env: leave OMP_WAIT_POLICY as it is")
    p.add_argument("--allocator", choices=("keep", "default"), default="keep",
                   help="keep: glibc reuses freed memory (geomodel.runtime.keep_freed_memory, as app.py and "
                        "`python -m train` set it); default: glibc's own (every big batch faults in fresh pages)")
    p.add_argument("--batch", type=int, default=32, help="the large batch size (photos per round)")
    p.add_argument("--mid-batch", type=int, default=4, help="also measured: the Predictor's default on CPU (0: skip)")
    p.add_argument("--single-photos", type=int, default=12, help="photos predicted one by one per round")
    p.add_argument("--rounds", type=int, default=2, help="interleaved measurement rounds (median reported)")
    return p


def parse_config(name: str) -> dict:
    spec, *options = name.split("+")
    backbone, _, size = spec.partition("@")
    if not size or set(options) - {"bf16", "match"}:
        raise SystemExit(f"bad configuration {name!r}: expected BACKBONE@SIZE[+bf16][+match], e.g. lite0@224")
    return {"backbone": ALIASES.get(backbone, backbone), "image_size": int(size),
            "precision": "bf16" if "bf16" in options else "fp32",
            "match_gallery": GALLERY_PHOTOS if "match" in options else 0}


def write_model(out: Path, *, region_backbone: str, coords_backbone: str, image_size: int, layout: str,
                match_gallery: int = 0) -> Path:
    """A model directory (region.pt + coords.pt) with random weights, as `python -m train fit` writes it.

    `match_gallery` > 0: stage 1 as the cpu-small recipe builds it (GeM of blocks 14, 15 and the
    head; matching blocks 14 and head) with a gallery of that many photos of random descriptors.
    """
    import torch

    from geomodel.config import DataConfig, ModelConfig, to_dict
    from geomodel.engine.checkpoint import atomic_save, make_checkpoint
    from geomodel.models.coords import CoordRegressor
    from geomodel.models.region import RegionClassifier

    torch.manual_seed(0)
    names = [f"Region {i + 1}" for i in range(NUM_REGIONS)]
    data = to_dict(DataConfig(image_size=image_size))
    matching = (dict(pool="gem", feature_layers=["14", "15", "head"], match_layers=["14", "head"])
                if match_gallery else {})
    rcfg = ModelConfig(kind="region", backbone=region_backbone, pretrained=False, num_regions=NUM_REGIONS,
                       **matching)
    region = RegionClassifier(rcfg, image_size=image_size).eval()
    extra = {}
    if match_gallery:  # speed does not depend on the descriptors' values, only on their number
        extra["gallery"] = _random_gallery(region, match_gallery, image_size, out)
    common = dict(data_config=data, image_size=image_size, frame="planar", region_names=names)
    atomic_save({**make_checkpoint(region, kind="region", model_config=to_dict(rcfg),
                                   norm=(region.backbone.mean, region.backbone.std), **common), **extra},
                out / "region.pt")
    ccfg = ModelConfig(kind="coords", backbone=coords_backbone, pretrained=False, num_regions=NUM_REGIONS,
                       layout=layout, attention="scalar" if layout == "separate" else "features")
    coords = CoordRegressor(ccfg, feature_dim=region.feature_dim if layout == "shared" else None,
                            image_size=image_size)
    coords.coord_mean.fill_(1000.0)
    norm = (coords.backbone.mean, coords.backbone.std) if coords.backbone is not None else (
        region.backbone.mean, region.backbone.std)
    ckpt = make_checkpoint(coords, kind="coords", model_config=to_dict(ccfg), norm=norm,
                           coord_stats={"mean": [1000.0, 1000.0], "std": [1.0, 1.0]}, **common)
    ckpt["feature_dim"] = coords.feature_dim
    atomic_save(ckpt, out / "coords.pt")
    return out


def _random_gallery(region, photos: int, image_size: int, out: Path) -> dict:
    """A compact matching gallery of `photos` random photos (4 views each) in `out`, as `fit` writes it."""
    import numpy as np
    import torch

    from geomodel.engine.gallery import GALLERY_FILE, BuiltGallery

    with torch.no_grad():
        _, maps = region.forward_features_and_maps(torch.zeros(1, 3, image_size, image_size))
    maps = [torch.randn(photos, 4, *m.shape[1:]) for m in maps]
    feats = torch.randn(photos, region.feature_dim)
    matcher = region.matcher
    matcher.fit_whitening([m[:, 0] for m in maps])
    encoded = matcher.encode(maps)
    matcher.fit_codebooks(encoded)
    matcher.fit_global(feats)
    codes = matcher.quantise(encoded).numpy()
    partial = out / (GALLERY_FILE + ".partial")
    out.mkdir(parents=True, exist_ok=True)
    np.lib.format.open_memmap(partial, mode="w+", dtype=np.uint8, shape=codes.shape)[:] = codes
    built = BuiltGallery(partial, np.load(partial, mmap_mode="r"), matcher.describe(feats).half(),
                         torch.arange(photos) % NUM_REGIONS, [m.shape[3] * m.shape[4] for m in maps])
    meta = built.publish(out / GALLERY_FILE)
    matcher.attach_codes(built.codes, built.global_desc, built.regions)
    region.cfg.match_weight = 0.7
    return meta


def _rate(fn, n: int) -> float:
    start = time.perf_counter()
    fn()
    return n / (time.perf_counter() - start)


def main(args: argparse.Namespace) -> dict:
    if args.omp_wait_policy != "env":  # read once, when torch loads OpenMP: set it before the import
        os.environ["OMP_WAIT_POLICY"] = args.omp_wait_policy.upper()
    import torch

    from geomodel.runtime import keep_freed_memory

    if args.allocator == "keep":
        keep_freed_memory()
    from geomodel.data.images import load_image
    from geomodel.data.transforms import build_transforms
    from geomodel.predictor import Predictor

    if args.threads:
        torch.set_num_threads(args.threads)
    names = [c.strip() for c in args.configs.split(",") if c.strip()]
    if args.recommended not in names:
        names.insert(0, args.recommended)
    began = time.perf_counter()
    info = machine()
    with tempfile.TemporaryDirectory(prefix="bench-inference-") as tmp:
        tmp = Path(tmp)
        paths, source = photos(args.batch, tmp)
        singles = paths[:args.single_photos]
        predictors, described = {}, {}
        for name in names:
            cfg = parse_config(name)
            folder = write_model(tmp / name.replace("+", "_").replace("@", "_"), region_backbone=cfg["backbone"],
                                 coords_backbone=cfg["backbone"], image_size=cfg["image_size"], layout="shared",
                                 match_gallery=cfg["match_gallery"])
            predictors[name] = Predictor.from_dir(folder, device="cpu", precision=cfg["precision"])
            described[name] = {**cfg, "layout": "shared"}
        folder = write_model(tmp / SEED_STYLE, region_backbone="vit_b_16", coords_backbone="resnet101",
                             image_size=224, layout="separate")
        predictors[SEED_STYLE] = Predictor.from_dir(folder, device="cpu")
        described[SEED_STYLE] = {"region_backbone": "vit_b_16", "coords_backbone": "resnet101", "image_size": 224,
                                 "layout": "separate", "precision": "fp32"}
        for p in predictors.values():  # warm-up: first calls allocate and pick kernels
            p.predict(paths[:1])
            p.predict(paths[:4], batch_size=4)

        tf = build_transforms(((0.5,) * 3, (0.5,) * 3), 224, train=False)
        preprocess = _rate(lambda: [tf(load_image(p)) for p in paths], len(paths))

        batches = [b for b in (args.mid_batch, args.batch) if b > 1]
        rates: dict[str, dict[str, list[float]]] = {n: {} for n in predictors}
        for _ in range(args.rounds):
            for name, p in predictors.items():
                rates[name].setdefault("batch_1", []).append(
                    _rate(lambda: [p.predict([x]) for x in singles], len(singles)))
                for b in batches:
                    rates[name].setdefault(f"batch_{b}", []).append(
                        _rate(lambda: p.predict(paths, batch_size=b), len(paths)))
        # Same photo, same answer: batching and the memory format change nothing but speed.
        rec = predictors[args.recommended]
        alone, batched = rec.predict(singles[:1])[0], rec.predict(singles, batch_size=args.batch)[0]
        consistent = (alone["region_id"] == batched["region_id"]
                      and abs(alone["latitude"] - batched["latitude"]) < 1e-3)

    med = {n: {k: round(statistics.median(v), 2) for k, v in r.items()} for n, r in rates.items()}
    for n in med:
        described[n]["images_per_s"] = med[n]
    ips, seed = med[args.recommended], med[SEED_STYLE]
    return {
        "benchmark": "inference",
        "recommended": args.recommended,
        "images_per_s": ips,
        "seed_style_images_per_s": seed,
        "speedup": {k: round(ips[k] / seed[k], 1) for k in ips},
        "configs": described,
        "preprocess_images_per_s": round(preprocess, 1),
        "batch_consistent": consistent,
        "photos": source,
        "rounds": args.rounds,
        "allocator": args.allocator,
        "machine": {**info, "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
                    "load_avg_end": machine()["load_avg"]},
        "wall_s": round(time.perf_counter() - began, 1),
    }


if __name__ == "__main__":
    print(json.dumps(main(get_args_parser().parse_args()), indent=2))
