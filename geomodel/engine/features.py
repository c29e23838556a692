"""Backbone features computed once per image and reused (frozen-backbone training).

The cache is keyed by the image's content (SHA-256 of its bytes), the backbone's
weights (a fingerprint of its state dict), the input size, the transform itself
(a hash of its description: sizes, augmentation ranges, normalisation) and the
policy (the eval transform, or augmented view k), so a stale entry is never used:
change any of these and the key changes.
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
    """A per-(backbone, size, policy) file of {image digest: (D,) float16 feature}."""

    def __init__(self, cache_dir: str | Path | None = None) -> None:
        self.dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()

    def _file(self, key: str) -> Path:
        return self.dir / f"{key}.pt"

    def load(self, key: str) -> dict[str, torch.Tensor]:
        path = self._file(key)
        if not path.is_file():
            return {}
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001 - a damaged cache is rebuilt, never trusted
            return {}

    def save(self, key: str, table: dict[str, torch.Tensor]) -> None:
        atomic_save(table, self._file(key))


def transform_fingerprint(transform: Callable) -> str:
    """Hash of a transform's description (torchvision's repr lists every size, range and mean/std)."""
    return hashlib.sha256(repr(transform).encode()).hexdigest()[:12]


@torch.no_grad()  # not inference_mode: the features become training inputs that autograd must accept
def extract_features(backbone: nn.Module, paths: Sequence[Path], transform: Callable, *, device: torch.device,
                     batch_size: int = 32, cache: FeatureCache | None = None, policy: str = "eval",
                     image_size: int = 224, view_seed: int | None = None, num_workers: int = 0,
                     desc: str = "features") -> torch.Tensor:
    """(N, D) float32 features of `paths`, computing only what the cache lacks.

    `policy` names the transform ("eval" or e.g. "aug3"); for augmented views pass
    `view_seed` so each (image, view) gets a fixed random augmentation.
    """
    paths = [Path(p) for p in paths]
    digests = [file_digest(p) for p in paths]
    key = f"{module_fingerprint(backbone)}-{image_size}-{transform_fingerprint(transform)}-{policy}"
    table = cache.load(key) if cache is not None else {}
    todo = [i for i, d in enumerate(digests) if d not in table]
    if todo:
        was_training = backbone.training
        backbone.eval()
        seeds = ([(int(digests[i][:8], 16) + 7919 * view_seed) % 2**31 for i in todo]
                 if view_seed is not None else None)
        loader = DataLoader(_Images([paths[i] for i in todo], transform, seeds), batch_size=batch_size,
                            num_workers=num_workers, generator=torch.Generator().manual_seed(0))
        feats = []
        for x in tqdm(loader, desc=desc, leave=False, disable=None):
            feats.append(backbone(x.to(device)).float().cpu())
        backbone.train(was_training)
        new = torch.cat(feats)
        for j, i in enumerate(todo):
            table[digests[i]] = new[j].to(torch.float16) if cache is not None else new[j]
        if cache is not None:  # keep entries another process added meanwhile (same key: same values)
            cache.save(key, {**cache.load(key), **table})
    return torch.stack([table[d].float() for d in digests])
