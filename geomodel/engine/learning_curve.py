"""How many photos per region does a collection need? A learning curve of local matching.

Nothing is trained: the frozen trunk's descriptor maps of every labelled photo are
computed once, and so is every query descriptor's best match in every photo. Then for
growing random shares of the photos (each region keeps at least one) every photo is
scored against that gallery with its own photo left out (leave-one-out), as stage 1's
local matching would score a new photo. Accuracy against photos per region, fitted as
a straight line in log2(photos per region), says roughly how many more photos a
target accuracy needs. Matching alone is measured (stage 1 fuses it with its head:
on the campus a few points above matching alone). The whitening is fitted once on all
photos (no labels are involved), where stage 1 fits it on its training photos.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from geomodel.data.labels import stratified_pick
from geomodel.engine.gallery import gallery_transforms, photo_maps
from geomodel.models.matching import LocalMatcher
from geomodel.models.region import RegionClassifier


@torch.no_grad()
def all_matches(matcher: LocalMatcher, maps: Sequence[torch.Tensor], regions: torch.Tensor, queries: np.ndarray, *,
                batch_size: int = 32) -> list[torch.Tensor]:
    """Per layer (Q, N, P) float16: each query descriptor's best match in every photo (whitened on all photos)."""
    matcher.fit(maps, regions)
    parts = []
    for start in range(0, len(queries), batch_size):
        rows = torch.as_tensor(queries[start:start + batch_size])
        parts.append([m.to(torch.float16) for m in matcher.descriptor_matches([m[rows, 0].float() for m in maps])])
    return [torch.cat(layer) for layer in zip(*parts)]


def log2_fit(photos_per_region: Sequence[float], accuracy: Sequence[float]) -> tuple[float, float] | None:
    """(intercept, slope) of accuracy = intercept + slope * log2(photos per region), least squares;
    None with fewer than two different gallery sizes (no line to fit)."""
    x = np.log2(np.asarray(photos_per_region, dtype=np.float64))
    if len(np.unique(x)) < 2:
        return None
    slope, intercept = np.polyfit(x, np.asarray(accuracy, dtype=np.float64), 1)
    return float(intercept), float(slope)


def photos_needed(fit: tuple[float, float] | None, target: float) -> float | None:
    """Photos per region at which the fitted line reaches `target`; None if it never rises."""
    if fit is None:
        return None
    intercept, slope = fit
    if slope <= 0:
        return None
    return float(2 ** ((target - intercept) / slope))


def learning_curve(maps: Sequence[torch.Tensor], regions: torch.Tensor, num_regions: int, *,
                   fractions: Sequence[float] = (0.2, 0.35, 0.5, 0.7, 0.85, 1.0), repeats: int = 5,
                   seed: int = 0, dim: int = 64, mode: str = "region", target: float = 0.7,
                   max_queries: int = 500, progress: bool = True) -> dict:
    """Leave-one-out matching accuracy at each gallery share: a dict of plain types (see module doc).

    `maps`: per matched layer (N, V, C, h, w), view 0 the plain photo; `regions`: (N,) 0-based.
    Each share is drawn `repeats` times (once at 1.0, where the draw is the whole set). At most
    `max_queries` photos (a stratified sample) are queries; every photo can be in the gallery.
    """
    if not fractions or any(not 0 < f <= 1 for f in fractions):
        raise ValueError(f"gallery shares must be in (0, 1], got {list(fractions)}")
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    regions = torch.as_tensor(regions, dtype=torch.long)
    labels = regions.numpy()
    rng = np.random.default_rng(seed)
    queries = (np.arange(len(labels)) if len(labels) <= max_queries
               else np.sort(stratified_pick(labels, max_queries / len(labels), rng)))
    matcher = LocalMatcher(len(maps), num_regions, dim=dim, mode=mode)
    best = all_matches(matcher, maps, regions, queries)  # the expensive part, done once
    own_photo = torch.as_tensor(queries)[:, None] == torch.arange(len(labels))[None]  # (Q, N)
    truth = regions[torch.as_tensor(queries)][:, None]
    jobs = [(f, r) for f in sorted(fractions) for r in range(1 if f == 1 else repeats)]
    runs: dict[float, list[tuple[float, float, float]]] = {}
    for fraction, _ in tqdm(jobs, desc="learning curve", leave=False, disable=None if progress else True):
        in_gallery = np.zeros(len(labels), dtype=bool)
        in_gallery[stratified_pick(labels, fraction, rng)] = True
        left_out = own_photo | ~torch.as_tensor(in_gallery)[None]
        scores = matcher.aggregate([m.float().masked_fill_(left_out[:, :, None], -1.0) for m in best])
        rank = (scores > scores.gather(1, truth)).sum(1)
        # what each query could match: the photos of its own region in the gallery, itself not counted
        own = np.bincount(labels[in_gallery], minlength=num_regions)[labels[queries]] - in_gallery[queries]
        runs.setdefault(fraction, []).append(((rank == 0).float().mean().item(),
                                              (rank < 3).float().mean().item(), float(own.mean())))
    points = []
    for fraction, values in runs.items():
        top1, top3, per_region = np.asarray(values).T
        points.append({"gallery_share": fraction, "photos_per_region": round(float(per_region.mean()), 2),
                       "accuracy": round(float(top1.mean()), 4), "accuracy_std": round(float(top1.std()), 4),
                       "top3_accuracy": round(float(top3.mean()), 4), "draws": len(values)})
    fit = log2_fit([p["photos_per_region"] for p in points], [p["accuracy"] for p in points])
    needed = photos_needed(fit, target)
    measured = max(p["photos_per_region"] for p in points)
    counts = np.bincount(labels, minlength=num_regions)
    return {"photos": len(labels), "queries": len(queries), "regions": int((counts > 0).sum()), "chance_accuracy": round(
        float(counts.max() / counts.sum()), 4), "points": points,
        "fit": None if fit is None else {"intercept": round(fit[0], 4), "slope_per_doubling": round(fit[1], 4)},
        "target_accuracy": target,
        "photos_per_region_for_target": None if needed is None else round(needed, 1),
        "extrapolated": needed is not None and needed > measured}


def measure(csv: str | Path, images: str | Path, model: RegionClassifier, *, image_size: int,
            device: torch.device, num_regions: int | None = None, batch_size: int = 16,
            allow_outside_images: bool = False, **curve: object) -> tuple[dict, list[str]]:
    """The learning curve of a labels CSV: (result of `learning_curve`, problems of photos left out).

    `model` supplies the trunk and which layers are matched (`cfg.match_layers`, as in
    stage 1); its head is not used. Unreadable photos are left out (each named in the
    problems) rather than stopping the measurement. `num_regions`: default the largest Region_ID.
    Every image path must resolve inside `images` unless `allow_outside_images`.
    """
    from geomodel.data.dataset import image_problems
    from geomodel.data.labels import read_labels
    from geomodel.data.paths import image_paths
    from geomodel.errors import DataError

    df = read_labels(csv, num_regions=num_regions)
    image_paths(df, images, csv, allow_outside=allow_outside_images)
    num_regions = num_regions or int(df["Region_ID"].max())
    problems = image_problems(df, images)
    df = df.drop(index=df.index[list(problems)]).reset_index(drop=True)
    if df["region"].nunique() < 2:
        raise DataError(f"{csv}: a learning curve needs photos of at least two regions "
                        f"({len(df)} usable photo(s))")
    cfg = model.cfg
    model = model.to(device).eval()
    with torch.no_grad():
        maps = [m.cpu() for m in photo_maps(model, [Path(images) / f for f in df["filename"]],
                                            gallery_transforms(model, image_size), device=device,
                                            batch_size=batch_size)]
    result = learning_curve(maps, torch.tensor(df["region"].to_numpy()), num_regions,
                            dim=cfg.match_dim, mode=cfg.match_mode, **curve)
    return {**result, "csv": str(csv), "backbone": cfg.backbone, "image_size": image_size,
            "match_layers": cfg.match_layers, "photos_left_out": len(problems)}, list(problems.values())
