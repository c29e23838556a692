"""Backbone features computed once per image and reused (frozen-backbone training).

The cache is keyed by the image's content (SHA-256 of its bytes), the backbone's
weights (a fingerprint of its state dict), the input size, the transform itself
(a hash of its description: sizes, augmentation ranges, normalisation) and the
policy (the eval transform, or augmented view k), so a stale entry is never used:
change any of these and the key changes. Each key's features are stored in chunks of
`CHUNK_PHOTOS` photos as they are computed, so a killed extraction resumes where it stopped.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from geomodel.data.images import load_image
from geomodel.engine import distributed as dist
from geomodel.engine.checkpoint import atomic_save


def default_cache_dir() -> Path:
    return Path(os.environ.get("GEOMODEL_CACHE", Path.home() / ".cache" / "geomodel")) / "features"


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


_PLAIN = (str, int, float, bool, type(None))


def _settings(module: nn.Module) -> str:
    """Every submodule's class and plain settings (e.g. which layers a trunk pools), which weights miss."""
    parts = []
    for name, sub in module.named_modules():
        plain = {k: sorted(v) if isinstance(v, (set, frozenset)) else v for k, v in vars(sub).items()
                 if not k.startswith("_") and k != "training"
                 and (isinstance(v, _PLAIN) or (isinstance(v, (tuple, list, set, frozenset))
                                                and all(isinstance(x, _PLAIN) for x in v)))}
        parts.append(f"{name}:{type(sub).__name__}:{sorted(plain.items(), key=lambda kv: kv[0])}")
    return "\n".join(parts)


def module_fingerprint(module: nn.Module) -> str:
    """Hash of a module's parameters, buffers and settings: two trunks share a key only if they compute
    the same function (same weights, and e.g. the same feature layers pooled)."""
    h = hashlib.sha256(_settings(module).encode())
    for name, tensor in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:20]


class _Images(Dataset):
    def __init__(self, paths: Sequence[Path], transform: Callable, seeds: Sequence[int] | None) -> None:
        self.paths, self.transform, self.seeds = list(paths), transform, seeds

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        image = load_image(self.paths[i])
        if self.seeds is None:
            return self.transform(image)
        # Augmented view: the same view every time for this (image, k); torchvision's random
        # transforms draw from the global generator, so seed a forked copy and leave the caller's alone.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seeds[i])
            return self.transform(image)


class FeatureCache:
    """Per (backbone, size, transform, policy) key, a folder of chunk files, each
    {"digests": [n image digests], "features": (n, D) float16}.

    Written a chunk at a time while features are extracted, so a killed run loses at most the
    chunk in progress; the single-file `{key}.pt` of earlier versions is still read.
    """

    def __init__(self, cache_dir: str | Path | None = None) -> None:
        self.dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()

    def _files(self, key: str) -> list[Path]:
        legacy = self.dir / f"{key}.pt"
        return ([legacy] if legacy.is_file() else []) + sorted((self.dir / key).glob("*.pt"))

    def load(self, key: str) -> dict[str, torch.Tensor]:
        """{image digest: (D,) feature} of every readable chunk; a damaged chunk is removed (and rebuilt)."""
        table: dict[str, torch.Tensor] = {}
        for path in self._files(key):
            try:
                chunk = torch.load(path, map_location="cpu", weights_only=True)
                table.update(zip(chunk["digests"], chunk["features"]) if "digests" in chunk else chunk)
            except Exception:  # noqa: BLE001 - a damaged cache is rebuilt, never trusted
                path.unlink(missing_ok=True)  # finished files only: writers' files in progress are *.tmp
        return table

    def add(self, key: str, digests: Sequence[str], features: torch.Tensor) -> None:
        """Store one chunk: (n, D) features of the images with these digests."""
        name = hashlib.sha256("".join(digests).encode()).hexdigest()[:20]
        atomic_save({"digests": list(digests), "features": features.to(torch.float16).contiguous()},
                    self.dir / key / f"{name}.pt")


def transform_fingerprint(transform: Callable) -> str:
    """Hash of a transform's description (torchvision's repr lists every size, range and mean/std)."""
    return hashlib.sha256(repr(transform).encode()).hexdigest()[:12]


CHUNK_PHOTOS = 512  # photos per cache chunk (and per torchrun rank per round)


def _forward(backbone: nn.Module, paths: Sequence[Path], transform: Callable, seeds: Sequence[int] | None, *,
             device: torch.device, batch_size: int, num_workers: int, bar: tqdm) -> torch.Tensor:
    """(n, D) float32 features of `paths`, written batch by batch into one preallocated tensor."""
    loader = DataLoader(_Images(paths, transform, seeds), batch_size=batch_size, num_workers=num_workers,
                        generator=torch.Generator().manual_seed(0))
    out = None
    row = 0
    for x in loader:
        feats = backbone(x.to(device))
        if out is None:
            out = torch.empty(len(paths), feats.shape[1])
        out[row:row + len(feats)] = feats.float()
        row += len(feats)
        bar.update(len(feats))
    return out if out is not None else torch.empty(0, 0)


@torch.no_grad()  # not inference_mode: the features become training inputs that autograd must accept
def extract_features(backbone: nn.Module, paths: Sequence[Path], transform: Callable, *, device: torch.device,
                     batch_size: int = 32, cache: FeatureCache | None = None, policy: str = "eval",
                     image_size: int = 224, view_seed: int | None = None, num_workers: int = 0,
                     desc: str = "features", chunk: int = CHUNK_PHOTOS) -> torch.Tensor:
    """(N, D) float32 features of `paths`, computing only what the cache lacks.

    `policy` names the transform ("eval" or e.g. "aug3"); for augmented views pass
    `view_seed` so each (image, view) gets a fixed random augmentation. Photos are processed
    `chunk` at a time, each chunk stored in the cache as soon as it is done. Under torchrun
    every rank computes its own chunks and all ranks receive every feature (one writer per
    machine stores them).
    """
    paths = [Path(p) for p in paths]
    digests = [file_digest(p) for p in paths]
    key = f"{module_fingerprint(backbone)}-{image_size}-{transform_fingerprint(transform)}-{policy}"
    table = cache.load(key) if cache is not None else {}
    path_of = {d: p for d, p in zip(digests, paths)}
    todo = [d for d in path_of if d not in table]  # each distinct image once
    if todo:
        was_training = backbone.training
        backbone.eval()
        rank, world = dist.rank(), dist.world_size()
        bar = tqdm(total=len(todo), desc=desc, unit="photo", leave=False, disable=None if dist.is_main() else True)
        for start in range(0, len(todo), chunk * world):
            mine = dist.my_share(todo[start:start + chunk * world])
            seeds = ([(int(d[:8], 16) + 7919 * view_seed) % 2**31 for d in mine]
                     if view_seed is not None else None)
            feats = _forward(backbone, [path_of[d] for d in mine], transform, seeds, device=device,
                             batch_size=batch_size, num_workers=num_workers, bar=bar)
            if cache is not None:
                feats = feats.to(torch.float16)
            pieces = dist.all_gather_object((mine, feats)) if world > 1 else [(mine, feats)]
            for r, (done, values) in enumerate(pieces):
                if cache is not None and done and dist.local_rank() == 0:
                    cache.add(key, done, values)
                table.update(zip(done, values))
                if r != rank:
                    bar.update(len(done))
        bar.close()
        backbone.train(was_training)
    out = torch.empty(len(digests), table[digests[0]].shape[0] if digests else 0)
    for i, d in enumerate(digests):  # straight into the result: no list of N rows beside it
        out[i] = table[d]
    return out
