"""The two training stages, assembled from data, models, loops and checkpoints.

Files written to the model directory, per stage NAME ("region", "coords"):
  NAME.pt (best, for inference) · NAME_last.pt (resumable) · NAME_history.csv ·
  NAME_config.json (the resolved configs) · NAME_metrics.json (final validation metrics)
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from geomodel.config import DataConfig, ModelConfig, TrainConfig, to_dict
from geomodel.data.dataset import GeoDataset, check_images
from geomodel.data.images import load_image
from geomodel.data.labels import (CoordStats, apply_exclusions, check_regions_present, drop_outliers,
                                  neighbour_targets, read_labels, region_centroids, region_spreads, stratified_split)
from geomodel.data.paths import image_paths
from geomodel.data.transforms import build_transforms
from geomodel.engine import distributed as dist
from geomodel.engine.checkpoint import atomic_save, load_checkpoint, make_checkpoint
from geomodel.engine.features import FeatureCache, extract_features
from geomodel.engine.fusion import choose_weight, fusion_table, reported_weights
from geomodel.engine.gallery import (GALLERY_FILE, BuiltGallery, build_gallery, gallery_intact, gallery_key,
                                     gallery_transforms)
from geomodel.engine.loop import (Stage, cosine_with_warm_restarts, fit, resolve_device, seed_everything,
                                  to_device)
from geomodel.errors import CheckpointError, DataError
from geomodel.metrics import angular_error, coord_metrics, region_metrics
from geomodel.models import model_from_checkpoint
from geomodel.models.coords import CoordRegressor, heading_targets, stage2_loss
from geomodel.models.region import RegionClassifier


@dataclass
class Prepared:
    """Validated, split and cleaned data with statistics fitted on the training split only."""

    train: pd.DataFrame
    val: pd.DataFrame
    train_images: Path
    val_images: Path
    stats: CoordStats
    num_regions: int
    region_names: list[str]
    data_cfg: DataConfig
    warnings: list[str] = field(default_factory=list)  # for the caller to show (e.g. regions without photos)


def prepare_data(csv: str | Path, images: str | Path, *, data_cfg: DataConfig, seed: int = 0,
                 val_csv: str | Path | None = None, val_images: str | Path | None = None,
                 check: bool = True, allow_outside_images: bool = False) -> Prepared:
    """Read, validate, split (stratified, when no validation CSV), exclude, fit stats, drop outliers.

    Every image path must resolve inside its image folder unless `allow_outside_images`;
    `check` also decodes every image once (training would otherwise fail on one hours in).
    """
    df = read_labels(csv, num_regions=data_cfg.num_regions, frame=data_cfg.frame)
    n_rows = len(df)
    df = apply_exclusions(df, data_cfg.exclude)
    if df.empty:
        raise DataError(f"{csv}: no rows left: the exclusion list removed all {n_rows} of them")
    if val_csv is not None:
        val = read_labels(val_csv, num_regions=data_cfg.num_regions, frame=data_cfg.frame)
        train = df
        val_images = Path(val_images) if val_images is not None else Path(images)
    else:
        train, val = stratified_split(df, data_cfg.val_fraction, seed)
        val_images = Path(images)
    num_regions = data_cfg.num_regions or int(max(train["Region_ID"].max(), val["Region_ID"].max()))
    warnings = check_regions_present(csv, train, num_regions, explicit=data_cfg.num_regions is not None)
    stats = CoordStats.fit(train, data_cfg.outlier_low_pct, data_cfg.outlier_high_pct)
    train = drop_outliers(train, stats, csv)
    # The same (train-fitted) bounds clean the early-stopping set: one mislabelled photo 30 km
    # away would otherwise decide which epoch is "best". Reported test metrics keep every photo.
    val = val.loc[stats.inliers(val)].reset_index(drop=True) if stats.inliers(val).any() else val
    if len(val) == 0:
        raise DataError(f"{val_csv or csv}: the validation set is empty")
    names = data_cfg.region_names or [f"Region {i + 1}" for i in range(num_regions)]
    if len(names) != num_regions:
        raise DataError(f"{len(names)} region names given for {num_regions} regions")
    image_paths(train, images, csv, allow_outside=allow_outside_images)
    image_paths(val, val_images, val_csv or csv, allow_outside=allow_outside_images)
    if check:
        check_images(train, images, csv)
        check_images(val, val_images, val_csv or csv)
    return Prepared(train, val, Path(images), val_images, stats, num_regions, list(names), data_cfg, warnings)


class _Rows(Dataset):
    """Rows of precomputed tensors as batch dicts (features may have several augmented views)."""

    def __init__(self, views: torch.Tensor, **columns: torch.Tensor) -> None:
        self.views = views if views.dim() == 3 else views.unsqueeze(0)  # (V, N, D)
        self.columns = columns
        self.view_of = torch.zeros(self.views.shape[1], dtype=torch.long)

    def resample_views(self, generator: torch.Generator) -> None:
        self.view_of = torch.randint(self.views.shape[0], (self.views.shape[1],), generator=generator)

    def __len__(self) -> int:
        return self.views.shape[1]

    def __getitem__(self, i: int) -> dict:
        return {"features": self.views[self.view_of[i], i], **{k: v[i] for k, v in self.columns.items()}}


def _loader(dataset: Dataset, cfg: TrainConfig, *, shuffle: bool, epoch: int = 0, shard: bool = True) -> DataLoader:
    """`shard`: under torchrun each rank reads its own part (training); validation reads everything."""
    generator = torch.Generator().manual_seed(cfg.seed * 1009 + epoch)
    if isinstance(dataset, _Rows) and shuffle:
        dataset.resample_views(generator)
    sampler = None
    if shard and dist.is_enabled():
        sampler = torch.utils.data.DistributedSampler(dataset, shuffle=shuffle, seed=cfg.seed, drop_last=False)
        sampler.set_epoch(epoch)
        shuffle = False
    return DataLoader(dataset, batch_size=cfg.batch_size, shuffle=shuffle, sampler=sampler, generator=generator,
                      num_workers=cfg.num_workers if not isinstance(dataset, _Rows) else 0)


def _paths(df: pd.DataFrame, images: Path) -> list[Path]:
    return [images / f for f in df["filename"]]


def _features(backbone: nn.Module, df: pd.DataFrame, images: Path, image_size: int, cfg: TrainConfig,
              device: torch.device, *, views: int = 0, desc: str) -> torch.Tensor:
    """(V, N, D): the eval view, then `views` fixed augmented views."""
    stats = (backbone.mean, backbone.std)
    cache = FeatureCache(cfg.cache_dir) if cfg.cache_features else None
    paths = _paths(df, images)
    out = None
    # under torchrun every rank extracts its share of the photos and receives the others'
    for k in range(-1, views):  # -1: the plain evaluation view
        feats = extract_features(backbone, paths, build_transforms(stats, image_size, train=k >= 0), device=device,
                                 batch_size=cfg.batch_size, cache=cache, policy="eval" if k < 0 else f"aug{k}",
                                 image_size=image_size, view_seed=None if k < 0 else k, num_workers=cfg.num_workers,
                                 desc=desc if k < 0 else f"{desc} view {k + 1}/{views}")
        if out is None:  # filled view by view: never a second copy of every view
            out = torch.empty(views + 1, *feats.shape)
        out[k + 1] = feats
        del feats
    return out


class _HeadOnly(nn.Module):
    """Calls `forward_head` through `forward`, so DDP's forward (which arms its gradient hooks) runs.

    Frozen-trunk training feeds cached features to the heads; calling `forward_head`
    on the bare model would skip DDP and leave every rank's gradients unsynchronised.
    Named `module` so `unwrap_model` reaches the model for checkpoints.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.module = model

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        return self.module.forward_head(*args)


def _maybe_ddp(model: nn.Module, device: torch.device, *, heads_only: bool = False) -> nn.Module:
    """The model to train: wrapped in DDP under torchrun. `heads_only`: its forward takes features."""
    if heads_only:
        model = _HeadOnly(model)
    if not dist.is_enabled() or not any(p.requires_grad for p in model.parameters()):
        return model
    # A frozen trunk's BatchNorm buffers never change: no need to broadcast them every step.
    return nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                               broadcast_buffers=not heads_only, find_unused_parameters=True)


def _autocast_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    if not cfg.amp or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def _write_json(path: Path, obj: dict) -> None:
    if dist.is_main():
        tmp = path.with_suffix(path.suffix + ".tmp")
        try:
            tmp.write_text(json.dumps(obj, indent=2, default=str))
            tmp.replace(path)
        except BaseException:  # Ctrl-C mid-write included: no half-written file is left behind
            tmp.unlink(missing_ok=True)
            raise


def _resume_state(out_dir: Path, name: str, resume: bool, log: Callable) -> dict | None:
    path = out_dir / f"{name}_last.pt"
    if not resume:
        return None
    if not path.is_file():
        log(f"[{name}] --resume: no {path.name} in {out_dir}; starting from scratch")
        return None
    ckpt = load_checkpoint(path, kind=name)
    if not ckpt.get("resume"):
        raise CheckpointError(f"{path}: holds no training state to resume from; delete it or train without --resume")
    return ckpt


def _restore(model: nn.Module, model_cfg: ModelConfig, image_size: int, ckpt: dict, path: Path) -> None:
    """Load a resumable checkpoint's weights, refusing one written with other model settings."""
    saved = {**ckpt["model_config"], "image_size": ckpt["image_size"]}
    changed = [f"{k} {saved.get(k)!r} -> {v!r}" for k, v in {**to_dict(model_cfg), "image_size": image_size}.items()
               if saved.get(k) != v]
    if changed:
        raise CheckpointError(f"{path}: cannot resume: the run was started with other settings ({'; '.join(changed)}). "
                              "Resume with the original settings, or start over in a new --out folder")
    omitted = ckpt.get("backbone_weights") == "pretrained"  # a frozen pretrained trunk is rebuilt, not stored
    missing, unexpected = model.load_state_dict(ckpt["state_dict"], strict=False)
    missing = [k for k in missing if not (omitted and k.startswith("backbone.trunk."))]
    if missing or unexpected:
        raise CheckpointError(f"{path}: cannot resume: its weights do not fit the model "
                              f"(missing {missing[:3]}, unexpected {unexpected[:3]})")


def _start_stage(prep: Prepared, model_cfg: ModelConfig, cfg: TrainConfig,
                 out_dir: str | Path) -> tuple[Path, torch.device, int]:
    """What every stage does first: make the output folder, seed, resolve the device, size the model."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(cfg.seed)
    model_cfg.num_regions = prep.num_regions
    return out_dir, resolve_device(cfg.device), prep.data_cfg.image_size


# --------------------------------------------------------------------------- stage 1


def train_region(prep: Prepared, model_cfg: ModelConfig, cfg: TrainConfig, out_dir: str | Path, *,
                 resume: bool = False, log: Callable[[str], None] = print) -> dict:
    """Train the region classifier; returns its final validation metrics."""
    out_dir, device, image_size = _start_stage(prep, model_cfg, cfg, out_dir)
    model = RegionClassifier(model_cfg, image_size=image_size)
    resumed = _resume_state(out_dir, "region", resume, log)
    if resumed is not None:
        _restore(model, model_cfg, image_size, resumed, out_dir / "region_last.pt")
    norm = (model.backbone.mean, model.backbone.std)
    frozen = cfg.freeze_backbone
    if frozen:
        model.backbone.requires_grad_(False)
    model.to(device)

    counts = np.bincount(prep.train["region"], minlength=prep.num_regions).astype(np.float64)
    weights = np.where(counts > 0, counts.sum() / (prep.num_regions * np.maximum(counts, 1)), 0.0)
    class_weights = torch.tensor(weights, dtype=torch.float32, device=device)
    if cfg.smooth_by_distance:
        soft = torch.tensor(neighbour_targets(region_centroids(prep.train, prep.num_regions), prep.data_cfg.frame,
                                              cfg.label_smoothing), dtype=torch.float32, device=device)
        cross_entropy = nn.CrossEntropyLoss(weight=class_weights)
        criterion = lambda logits, y: cross_entropy(logits, soft[y])  # noqa: E731
    else:
        criterion = nn.CrossEntropyLoss(weight=class_weights, label_smoothing=cfg.label_smoothing)
    y_train = torch.tensor(prep.train["region"].to_numpy(np.int64))
    y_val = torch.tensor(prep.val["region"].to_numpy(np.int64))

    if frozen:
        f_train = _features(model.backbone, prep.train, prep.train_images, image_size, cfg, device,
                            views=cfg.aug_views, desc="train features")
        model.set_feature_stats(f_train.flatten(0, 1))  # all views: (V * N, D)
        train_set: Dataset = _Rows(f_train, region=y_train)
        val_set: Dataset = _Rows(_features(model.backbone, prep.val, prep.val_images, image_size, cfg, device,
                                           desc="val features"), region=y_val)
        logits_of = lambda m, b: m(b["features"])  # noqa: E731  (m: the _HeadOnly-wrapped model)
    else:
        train_set = GeoDataset(prep.train, prep.train_images, build_transforms(norm, image_size, train=True))
        val_set = GeoDataset(prep.val, prep.val_images, build_transforms(norm, image_size, train=False))
        logits_of = lambda m, b: m(b["image"])  # noqa: E731

    @torch.no_grad()
    def evaluate(m: nn.Module, loader: Iterable) -> dict:
        m.eval()
        preds, trues, loss = [], [], 0.0
        for batch in loader:
            batch = to_device(batch, device)
            logits = logits_of(m, batch)
            loss += criterion(logits, batch["region"]).item() * len(logits)
            preds.append(logits.argmax(1).cpu())
            trues.append(batch["region"].cpu())
        p, t = torch.cat(preds).numpy(), torch.cat(trues).numpy()
        out = region_metrics(t, p, prep.num_regions)
        return {"accuracy": out["region_accuracy"], "loss": loss / max(len(t), 1),
                "per_region_accuracy": out["per_region_accuracy"]}

    stage = Stage("region", lambda m, b: criterion(logits_of(m, b), b["region"]), evaluate, "accuracy", "max")
    ddp_model = _maybe_ddp(model, device, heads_only=frozen)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr or 1e-3, weight_decay=cfg.weight_decay)
    scheduler = cosine_with_warm_restarts(optimizer)
    describe = dict(kind="region", model_config=to_dict(model_cfg), data_config=to_dict(prep.data_cfg),
                    image_size=image_size, norm=norm, frame=prep.data_cfg.frame, region_names=prep.region_names,
                    train_size=len(prep.train), omit_pretrained_trunk=frozen and model_cfg.pretrained)
    final = _run_stage(model, ddp_model, stage, train_set, val_set, optimizer=optimizer, scheduler=scheduler,
                       cfg=cfg, prep=prep, model_cfg=model_cfg, out_dir=out_dir, describe=describe, resumed=resumed,
                       device=device, log=log)
    if model_cfg.match_layers:
        final = _add_gallery(prep, cfg, out_dir, device, describe, final, log, resume=resume)
        dist.barrier()
    return final


def _add_gallery(prep: Prepared, cfg: TrainConfig, out_dir: Path, device: torch.device, describe: dict,
                 final: dict, log: Callable[[str], None], *, resume: bool = False) -> dict:
    """Give the best region model its matching gallery, choose the fusion weight on validation,
    and report head-only and fused validation accuracy.

    The head's training picked the epoch; matching has nothing to train, so it joins afterwards.
    The validation photos are scored against the training photos only, then join the gallery
    themselves: with tens of photos per region every labelled photo is worth keeping. With
    weight 0 (matching does not help on validation) no gallery is stored.
    """
    model, ckpt = load_region_model(out_dir, device)
    views = gallery_transforms(model, ckpt["image_size"])
    n = len(prep.train)
    regions = torch.tensor(np.concatenate([prep.train["region"].to_numpy(np.int64),
                                           prep.val["region"].to_numpy(np.int64)]))
    paths = _paths(prep.train, prep.train_images) + _paths(prep.val, prep.val_images)
    key = gallery_key(model, paths, regions, views, n)
    done = ckpt.get("metrics", {})
    if (resume and done.get("gallery_key") == key and gallery_intact(ckpt, out_dir)
            and [r["weight"] for r in done.get("fusion", [])] == reported_weights(cfg.match_weights)):
        # this head's gallery and weight were finished before the run stopped (e.g. in stage 2)
        log(f"[region] local matching: kept from the interrupted run (weight {done['match_weight']:g})")
        final = {**final, **_matching_summary(done)}
        _write_json(out_dir / "region_metrics.json", final)
        return final
    if any(w > 0 for w in cfg.match_weights):
        built = build_gallery(model, paths, regions, views, partial=out_dir / (GALLERY_FILE + ".partial"),
                              device=device, batch_size=cfg.batch_size, fit_photos=n, resume=resume, key=key, log=log)
        if built is None:  # torchrun: rank 0 scores, chooses and writes
            return final
        model.matcher.attach_codes(built.codes[:n], built.global_desc[:n], regions[:n])  # the training photos only
    elif not dist.is_main():
        return final
    else:  # --match-weight 0: matching is off whatever validation says, so no gallery is built
        built = None
    head, matching = _validation_probabilities(model, prep, views[0], device, cfg.batch_size,
                                               matching=built is not None)
    truth = torch.tensor(prep.val["region"].to_numpy(np.int64))
    table = fusion_table(head, matching, truth, reported_weights(cfg.match_weights))
    chosen = choose_weight([r for r in table if r["weight"] in cfg.match_weights])
    weight, fused = chosen["weight"], chosen["accuracy"]
    head_accuracy = table[0]["accuracy"]  # weight 0: the head alone, always scored
    best = {**ckpt.get("metrics", {}), "accuracy": fused, "head_accuracy": head_accuracy, "match_weight": weight,
            "fusion": table, "gallery_size": len(regions) if weight > 0 else 0, "gallery_key": key}
    state = _keep_or_drop(model, built, weight, out_dir, describe, best)
    tried = ", ".join(f"{r['weight']:g}: {r['accuracy']:.3f} / {r['log_loss']:.3f}" for r in table)
    log(f"[region] local matching: validation accuracy {head_accuracy:.3f} (head) -> {fused:.3f} "
        f"(head + matching against the {n} training photos: the most accurate weight, ties by log loss; "
        f"accuracy / log loss by weight {tried}); {state}")
    final = {**final, **_matching_summary(best)}
    _write_json(out_dir / "region_metrics.json", final)
    return final


def _keep_or_drop(model: RegionClassifier, built: BuiltGallery | None, weight: float, out_dir: Path, describe: dict,
                  metrics: dict) -> str:
    """Save region.pt with the chosen weight: with its gallery (weight > 0) or without any; says which."""
    model.cfg.match_weight = weight
    describe = {**describe, "model_config": {**describe["model_config"], "match_weight": weight}}
    extra = {}
    if weight > 0:
        extra["gallery"] = built.publish(out_dir / GALLERY_FILE)
        model.matcher.attach_codes(built.codes, built.global_desc, built.regions)
        n = len(built.regions)
        state = f"weight {weight:g}; gallery: {n} photos, {extra['gallery']['bytes'] / n / 1024:.1f} KB each"
    else:
        if built is not None:
            built.discard()
        (out_dir / GALLERY_FILE).unlink(missing_ok=True)  # an earlier run's: a model without matching has none
        model.matcher.clear_gallery()
        state = ("off: it did not beat the head alone on validation; no gallery stored" if built is not None
                 else "off (--match-weight 0): no gallery built")
    atomic_save({**make_checkpoint(model, **describe, metrics=metrics), **extra}, out_dir / "region.pt")
    return state


def _matching_summary(metrics: dict) -> dict:
    """The stage's final metrics about matching, from the region checkpoint's metrics."""
    return {"val_accuracy": metrics["accuracy"], "val_head_accuracy": metrics["head_accuracy"],
            "match_weight": metrics["match_weight"], "gallery_size": metrics["gallery_size"],
            "fusion": metrics["fusion"]}


@torch.no_grad()
def _validation_probabilities(model: RegionClassifier, prep: Prepared, transform: Callable, device: torch.device,
                              batch_size: int, *, matching: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, R) head and matching probabilities of every validation photo, a batch at a time
    (`matching=False`: the head's only; zeros stand for matching's)."""
    head, scores = [], []
    for start in range(0, len(prep.val), batch_size):
        rows = prep.val.iloc[start:start + batch_size]
        x = torch.stack([transform(load_image(p)) for p in _paths(rows, prep.val_images)]).to(device)
        feats, maps = model.forward_features_and_maps(x)
        head.append(model.forward_head(feats).float().softmax(1).cpu())
        if matching:
            scores.append(model.matcher([m.float() for m in maps], feats).cpu())
    heads = torch.cat(head)
    return heads, torch.cat(scores) if matching else torch.zeros_like(heads)


def _run_stage(model: nn.Module, ddp_model: nn.Module, stage: Stage, train_set: Dataset, val_set: Dataset, *,
               optimizer: torch.optim.Optimizer, scheduler: object, cfg: TrainConfig, prep: Prepared,
               model_cfg: ModelConfig, out_dir: Path, describe: dict, resumed: dict | None, device: torch.device,
               log: Callable[[str], None], extra_fields: dict | None = None) -> dict:
    """Fit one stage, writing NAME.pt (best), NAME_last.pt, NAME_config.json and NAME_metrics.json."""
    name = stage.name
    _write_json(out_dir / f"{name}_config.json", {"model": to_dict(model_cfg), "data": to_dict(prep.data_cfg),
                                                  "train": to_dict(cfg)})

    def checkpoint(m: nn.Module, **extra: object) -> dict:
        return {**make_checkpoint(m, **describe, **extra), **(extra_fields or {})}

    def save_best(m: nn.Module, metrics: dict) -> None:
        atomic_save(checkpoint(m, metrics=metrics), out_dir / f"{name}.pt")

    def save_last(state: dict) -> None:
        atomic_save(checkpoint(model, resume={**state, "train_config": to_dict(cfg)}), out_dir / f"{name}_last.pt")

    result = fit(ddp_model, stage, lambda e: _loader(train_set, cfg, shuffle=True, epoch=e),
                 _loader(val_set, cfg, shuffle=False, shard=False), optimizer=optimizer, scheduler=scheduler,
                 epochs=cfg.epochs, patience=cfg.patience, grad_clip=cfg.grad_clip, device=device, out_dir=out_dir,
                 save_best=save_best, save_last=save_last, resume_state=resumed and resumed["resume"],
                 seed=cfg.seed, autocast_dtype=_autocast_dtype(cfg, device), log=log)
    final = {**result.best, "best_epoch": result.best_epoch, "stopped_early": result.stopped_early,
             "interrupted": result.interrupted, "train_size": len(prep.train), "val_size": len(prep.val)}
    _write_json(out_dir / f"{name}_metrics.json", final)
    if result.interrupted:
        raise KeyboardInterrupt
    return final


# --------------------------------------------------------------------------- stage 2


def load_region_model(out_dir: Path, device: torch.device) -> tuple[RegionClassifier, dict]:
    path = out_dir / "region.pt"
    if not path.is_file():
        raise CheckpointError(f"stage 2 needs the region classifier {path}: run `python -m train region` "
                              "first (or `fit` for both stages), or train with --region-input true and "
                              "--layout separate")
    ckpt = load_checkpoint(path, kind="region")
    return model_from_checkpoint(ckpt, path=str(path)).to(device), ckpt


def train_coords(prep: Prepared, model_cfg: ModelConfig, cfg: TrainConfig, out_dir: str | Path, *,
                 resume: bool = False, log: Callable[[str], None] = print) -> dict:
    """Train the region-aware coordinate regressor; returns its final validation metrics."""
    out_dir, device, image_size = _start_stage(prep, model_cfg, cfg, out_dir)
    # the camera heading is learnt too wherever the labels carry it (column `angle`, degrees)
    model_cfg.predict_heading = "angle" in prep.train and bool(prep.train["angle"].notna().any())
    needs_stage1 = model_cfg.layout == "shared" or (cfg.region_input == "predicted"
                                                    and "pred_Region_ID" not in prep.train)
    region_model, region_ckpt = load_region_model(out_dir, device) if needs_stage1 else (None, None)
    if region_ckpt is not None:
        if region_ckpt["num_regions"] != prep.num_regions:
            raise CheckpointError(f"{out_dir / 'region.pt'} was trained with {region_ckpt['num_regions']} regions "
                                  f"but this data has {prep.num_regions}")
        image_size = region_ckpt["image_size"] if model_cfg.layout == "shared" else image_size
        if model_cfg.layout == "shared":
            model_cfg.backbone = region_ckpt["model_config"]["backbone"]
    if model_cfg.layout == "shared":
        trunk = region_model.backbone.requires_grad_(False)
        model = CoordRegressor(model_cfg, feature_dim=trunk.out_dim, image_size=image_size)
        frozen = True
    else:
        model = CoordRegressor(model_cfg, image_size=image_size)
        trunk = model.backbone
        frozen = cfg.freeze_backbone
        if frozen:
            trunk.requires_grad_(False)
    resumed = _resume_state(out_dir, "coords", resume, log)
    if resumed is not None:
        _restore(model, model_cfg, image_size, resumed, out_dir / "coords_last.pt")
    stats = prep.stats
    model.coord_mean.copy_(torch.tensor(stats.mean, dtype=torch.float64))
    model.coord_std.copy_(torch.tensor(stats.std, dtype=torch.float64))
    model.region_centroids.copy_(torch.as_tensor(region_centroids(prep.train, prep.num_regions)))
    model.region_spreads.copy_(torch.as_tensor(region_spreads(prep.train, prep.num_regions)))
    model.to(device)
    norm = (trunk.mean, trunk.std)

    def region_inputs(df: pd.DataFrame, images: Path, feats: torch.Tensor | None, desc: str) -> torch.Tensor:
        if cfg.region_input == "true":
            return torch.tensor(df["region"].to_numpy(np.int64))
        if "pred_Region_ID" in df:
            return torch.tensor(df["pred_Region_ID"].to_numpy(np.int64) - 1)
        if model_cfg.layout == "shared":  # the trunk's features are stage 1's: only its head is left to run
            with torch.inference_mode():
                return region_model.forward_head(feats[0].to(device)).argmax(1).cpu()
        rfeats = _features(region_model.backbone, df, images, region_ckpt["image_size"], cfg, device,
                           desc=f"stage-1 {desc}")[0]
        with torch.inference_mode():
            return region_model.forward_head(rfeats.to(device)).argmax(1).cpu()

    z_train = torch.as_tensor(stats.normalize(prep.train[["latitude", "longitude"]].to_numpy()), dtype=torch.float32)
    z_val = torch.as_tensor(stats.normalize(prep.val[["latitude", "longitude"]].to_numpy()), dtype=torch.float32)
    if frozen:
        f_train = _features(trunk, prep.train, prep.train_images, image_size, cfg, device, views=cfg.aug_views,
                            desc="train features")
        f_val = _features(trunk, prep.val, prep.val_images, image_size, cfg, device, desc="val features")
        model.set_feature_stats(f_train.flatten(0, 1))
        r_train = region_inputs(prep.train, prep.train_images, f_train, "train")
        r_val = region_inputs(prep.val, prep.val_images, f_val, "val")
        extra_train, extra_val = {}, {}
        if model_cfg.predict_heading:
            extra_train["heading"] = heading_targets(prep.train["angle"].to_numpy(np.float64))
            if "angle" in prep.val:
                extra_val["heading"] = heading_targets(prep.val["angle"].to_numpy(np.float64))
        train_set: Dataset = _Rows(f_train, coords=z_train, region_in=r_train, **extra_train)
        val_set: Dataset = _Rows(f_val, coords=z_val, region_in=r_val, **extra_val)
        predict = lambda m, b: m(b["features"], b["region_in"])  # noqa: E731  (m: _HeadOnly-wrapped)
    else:
        r_train = region_inputs(prep.train, prep.train_images, None, "train")
        r_val = region_inputs(prep.val, prep.val_images, None, "val")
        train_set = GeoDataset(prep.train.assign(pred_Region_ID=r_train.numpy() + 1), prep.train_images,
                               build_transforms(norm, image_size, train=True), stats)
        val_set = GeoDataset(prep.val.assign(pred_Region_ID=r_val.numpy() + 1), prep.val_images,
                             build_transforms(norm, image_size, train=False), stats)
        predict = lambda m, b: m(b["image"], b["region_in"])  # noqa: E731

    true_val = prep.val[["latitude", "longitude"]].to_numpy(np.float64)
    true_heading = prep.val["angle"].to_numpy(np.float64) if "angle" in prep.val else None

    @torch.no_grad()
    def evaluate(m: nn.Module, loader: Iterable) -> dict:
        m.eval()
        outs, loss, n = [], 0.0, 0
        for batch in loader:
            batch = to_device(batch, device)
            z = predict(m, batch)
            loss += stage2_loss(z, batch).item() * len(z)
            n += len(z)
            outs.append(z.cpu())
        z = torch.cat(outs)
        pred = stats.denormalize(z[:, :2].double().numpy())
        cm = coord_metrics(true_val[: len(pred)], pred, prep.data_cfg.frame)
        out = {"loss": loss / max(n, 1), "coord_mse": cm["coord_mse"], "median_error": cm["median_error"],
               "mean_error": cm["mean_error"]}
        heading = model.heading(z)
        if heading is not None and true_heading is not None and np.isfinite(true_heading).any():
            err = angular_error(true_heading[: len(z)], heading.numpy())
            out["heading_mae"] = float(np.nanmean(err))
        return out

    stage = Stage("coords", lambda m, b: stage2_loss(predict(m, b), b), evaluate, "loss", "min")
    ddp_model = _maybe_ddp(model, device, heads_only=frozen)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=cfg.lr or (1e-3 if frozen else 1e-4))
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=5)
    describe = dict(kind="coords", model_config=to_dict(model_cfg), data_config=to_dict(prep.data_cfg),
                    image_size=image_size, norm=norm, frame=prep.data_cfg.frame, region_names=prep.region_names,
                    coord_stats=stats.__dict__, train_size=len(prep.train),
                    omit_pretrained_trunk=model_cfg.layout == "separate" and frozen and model_cfg.pretrained)
    return _run_stage(model, ddp_model, stage, train_set, val_set, optimizer=optimizer, scheduler=scheduler,
                      cfg=cfg, prep=prep, model_cfg=model_cfg, out_dir=out_dir, describe=describe, resumed=resumed,
                      device=device, log=log, extra_fields={"feature_dim": model.feature_dim})
