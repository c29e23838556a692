"""Building stage 1's matching gallery from the training photos (after its head is trained).

The compact gallery (see `geomodel.models.matching`) is streamed to disk: the photos are
read a chunk at a time, each view's descriptors are whitened and product-quantised, and the
codes are written straight into `region_gallery.npy` (a plain `.npy`, opened memory-mapped
at prediction, never unpickled); only the small global descriptors stay in memory. After
each chunk the progress is saved, so a killed build resumes (`resume=True`) where it
stopped. Under torchrun every rank encodes its share of each round and rank 0 writes.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from geomodel.data.images import load_image
from geomodel.data.transforms import build_transforms
from geomodel.engine import distributed as dist
from geomodel.engine.checkpoint import atomic_save
from geomodel.engine.features import module_fingerprint
from geomodel.errors import CheckpointError
from geomodel.models.region import RegionClassifier

GALLERY_FILE = "region_gallery.npy"
_FIT_BUFFERS = ("mean_", "proj_", "codebook_", "global_mean", "global_proj")  # what the sample pass fits


def gallery_transforms(model: RegionClassifier, image_size: int) -> list[Callable]:
    """The views stored per photo (each also mirrored by `view_maps`): the plain evaluation view,
    then (match_zoom < 1) the photo's central share, the same places seen from closer."""
    norm = (model.backbone.mean, model.backbone.std)
    views = [build_transforms(norm, image_size, train=False)]
    if model.cfg.match_zoom < 1:
        views.append(build_transforms(norm, image_size, train=False, zoom=model.cfg.match_zoom))
    return views


def view_maps(model: RegionClassifier, paths: Sequence[Path], transforms: Sequence[Callable], device: torch.device,
              batch_size: int, desc: str = "", *, mirror: bool = True,
              bar: tqdm | None = None) -> Iterator[tuple[torch.Tensor, list[torch.Tensor]]]:
    """Per batch, the plain view's pooled features (b, D) and the matched layers' maps of each
    view of each photo: [(b, V, C, h, w) float16, ...].

    Views: every transform's output and (`mirror`) its mirror image (the same place seen mirrored).
    """
    steps = range(0, len(paths), batch_size)
    for start in (steps if bar is not None else tqdm(steps, desc=desc, leave=False, disable=None)):
        images = [load_image(p) for p in paths[start:start + batch_size]]
        views, feats = [], None
        for transform in transforms:
            x = torch.stack([transform(im) for im in images]).to(device)
            pooled, maps = model.forward_features_and_maps(x)
            feats = pooled if feats is None else feats
            views.append(maps)
            if mirror:
                views.append(model.forward_features_and_maps(x.flip(-1))[1])
        if bar is not None:
            bar.update(len(images))
        yield feats.float().cpu(), [torch.stack(layer, dim=1).to(torch.float16).cpu() for layer in zip(*views)]


def photo_maps(model: RegionClassifier, paths: Sequence[Path], transforms: Sequence[Callable], *,
               device: torch.device, batch_size: int = 16, desc: str = "descriptor maps") -> list[torch.Tensor]:
    """Every photo's `view_maps` at once: per matched layer (N, V, C, h, w) float16 (small collections)."""
    return [torch.cat(parts) for parts in zip(*(maps for _, maps in view_maps(model, paths, transforms, device,
                                                                                batch_size, desc)))]


def file_fingerprint(path: Path, span: int = 1 << 20) -> str:
    """Size and hash of the first and last MB: ties a gallery file to its checkpoint in O(1)."""
    size = path.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as fh:
        h.update(fh.read(span))
        fh.seek(max(0, size - span))
        h.update(fh.read(span))
    return h.hexdigest()[:24]


@dataclass
class BuiltGallery:
    """A finished gallery build: codes in `partial` (memory-mapped), global descriptors, regions."""

    partial: Path
    codes: np.ndarray  # (N, V, P_total, M) uint8 (or float16 descriptors), memory-mapped
    global_desc: torch.Tensor  # (N, G) float16
    regions: torch.Tensor  # (N,)
    positions: list[int]  # P_i per matched layer

    def publish(self, path: Path) -> dict:
        """Move the codes to `path` (atomically) and return what the checkpoint records about them."""
        os.replace(self.partial, path)
        _progress_file(self.partial).unlink(missing_ok=True)
        self.codes = np.load(path, mmap_mode="r", allow_pickle=False)
        return {"file": path.name, "shape": list(self.codes.shape), "positions": list(self.positions),
                "bytes": path.stat().st_size, "fingerprint": file_fingerprint(path)}

    def discard(self) -> None:
        """Delete the build (the gallery is not wanted: matching did not help)."""
        self.codes = None
        self.partial.unlink(missing_ok=True)
        _progress_file(self.partial).unlink(missing_ok=True)


def _progress_file(partial: Path) -> Path:
    return partial.with_name(partial.name + ".progress.pt")


def gallery_key(model: RegionClassifier, paths: Sequence[Path], regions: torch.Tensor,
                 transforms: Sequence[Callable], fit_photos: int) -> str:
    """What the gallery depends on: the trunk, the matching settings, the photos and their regions."""
    cfg = model.cfg
    h = hashlib.sha256(module_fingerprint(model.backbone).encode())
    h.update(repr((cfg.match_layers, cfg.match_dim, cfg.match_code_bytes, cfg.match_global_dim, fit_photos,
                   [repr(t) for t in transforms])).encode())
    h.update("\n".join(map(str, paths)).encode())
    h.update(regions.numpy().astype(np.int64).tobytes())
    return h.hexdigest()[:24]


@torch.no_grad()
def _fit(model: RegionClassifier, paths: Sequence[Path], transform: Callable, device: torch.device,
         batch_size: int) -> None:
    """Whitening, codebooks and global projection from the plain views of `paths` (a sample)."""
    matcher = model.matcher
    feats, raw = [], []
    for f, maps in view_maps(model, paths, [transform], device, batch_size, "gallery: fitting the descriptors",
                             mirror=False):
        feats.append(f)
        raw.append(maps)
    raw_layers = [torch.cat(layer) for layer in zip(*raw)]  # per layer (n, 1, C, h, w)
    del raw
    matcher.fit_whitening([m[:, 0].float() for m in raw_layers])
    matcher.fit_codebooks(matcher.encode(raw_layers))
    matcher.fit_global(torch.cat(feats))


class _Partial:
    """A gallery being built: codes written row by row into `path` (a .npy), progress saved beside it."""

    def __init__(self, path: Path, key: str) -> None:
        self.path, self.key, self.progress = path, key, _progress_file(path)
        self.offset = 0

    def resumable(self, log: Callable[[str], None]) -> dict | None:
        """The saved progress of an earlier build of the same gallery, or None."""
        if not (self.progress.is_file() and self.path.is_file()):
            return None
        try:
            state = torch.load(self.progress, map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001 - a damaged progress file: start the gallery again
            return None
        if state.get("fingerprint") != self.key:
            log("[region] gallery: the saved partial gallery was built from other photos or settings; rebuilding")
            return None
        self.offset = np.load(self.path, mmap_mode="r").offset
        return state

    def create(self, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.offset = np.lib.format.open_memmap(self.path, mode="w+", dtype=dtype, shape=shape).offset

    def write(self, first: int, codes: np.ndarray) -> None:
        """Rows `first`.. of the codes, with plain file writes (no mapping that would count as our memory)."""
        with open(self.path, "r+b") as fh:
            fh.seek(self.offset + first * codes[0].nbytes)
            fh.write(np.ascontiguousarray(codes).tobytes())
            fh.flush()
            os.fsync(fh.fileno())

    def save(self, done: int, global_desc: torch.Tensor, matcher: torch.nn.Module) -> None:
        atomic_save({"fingerprint": self.key, "done": done, "global_desc": global_desc[:done].clone(),
                     "matcher": _fitted(matcher)}, self.progress)


def _fitted(matcher: torch.nn.Module) -> dict:
    return {k: v.cpu() for k, v in matcher.state_dict().items() if k.startswith(_FIT_BUFFERS)}


def code_dtype(code_bytes: int) -> np.dtype:
    """What the gallery file holds: product-quantisation codes (uint8), or float16 descriptors (`code_bytes` 0)."""
    return np.dtype(np.uint8 if code_bytes else np.float16)


def _code_shape(model: RegionClassifier, transforms: Sequence[Callable],
                device: torch.device) -> tuple[tuple[int, ...], list[int]]:
    """(V, P_total, M) of one photo's codes (M = match_dim for float16 descriptors) and the positions P_i
    per matched layer, from one blank image."""
    x = transforms[0](Image.new("RGB", (16, 16)))[None].to(device)
    maps = model.forward_features_and_maps(x)[1]
    positions = [m.shape[2] * m.shape[3] for m in maps]
    cfg = model.cfg
    return (2 * len(transforms), sum(positions), cfg.match_code_bytes or cfg.match_dim), positions


@torch.no_grad()
def build_gallery(model: RegionClassifier, paths: Sequence[Path], regions: torch.Tensor,
                  transforms: Sequence[Callable], *, partial: Path, device: torch.device, batch_size: int = 16,
                  fit_photos: int | None = None, sample: int = 512, chunk: int = 256, resume: bool = False,
                  key: str | None = None, log: Callable[[str], None] = print) -> BuiltGallery | None:
    """Encode every photo (each transform's view and its mirror image) into the compact gallery at `partial`.

    `transforms[0]` must be the plain evaluation transform. The whitening, codebooks and global
    projection are fitted on the plain views of up to `sample` photos spread evenly over the first
    `fit_photos` (the training photos). `key`: `gallery_key` of these arguments, where the caller has
    it already (it hashes the whole trunk). Returns the finished build on rank 0 (None on other ranks).
    """
    matcher = model.matcher
    if matcher is None:
        raise ValueError("this model has no matcher (ModelConfig.match_layers is empty)")
    was_training = model.training
    model.eval()
    paths = [Path(p) for p in paths]
    n, fit_photos = len(paths), fit_photos or len(paths)
    store = _Partial(partial, key or gallery_key(model, paths, regions, transforms, fit_photos))
    state = store.resumable(log) if dist.is_main() and resume else None
    if dist.is_main() and state is None:
        picks = np.unique(np.linspace(0, fit_photos - 1, min(sample, fit_photos)).round().astype(int))
        _fit(model, [paths[i] for i in picks], transforms[0], device, batch_size)
    state = dist.broadcast_object(state)  # every rank encodes with rank 0's whitening and codebooks
    matcher.load_state_dict({**matcher.state_dict(),
                             **dist.broadcast_object(_fitted(matcher) if state is None else state["matcher"])})
    shape, positions = _code_shape(model, transforms, device)
    done = state["done"] if state is not None else 0
    global_desc = torch.zeros(n, matcher.global_proj.shape[1], dtype=torch.float16)
    if state is not None:
        global_desc[:done] = state["global_desc"]
        log(f"[region] gallery: resuming after {done} of {n} photos")
    elif dist.is_main():
        store.create((n, *shape), code_dtype(model.cfg.match_code_bytes))
        store.save(0, global_desc, matcher)  # a kill from here on keeps the fitted whitening and codebooks
    bar = tqdm(total=n, initial=done, desc="gallery", unit="photo", leave=False,
               disable=None if dist.is_main() else True)
    for start in range(done, n, chunk * dist.world_size()):
        rows = dist.my_share(range(start, min(n, start + chunk * dist.world_size())))
        codes, descs = [], []
        for feats, maps in view_maps(model, paths[rows.start:rows.stop], transforms, device, batch_size, bar=bar):
            codes.append(matcher.quantise(matcher.encode(maps)).numpy())
            descs.append(matcher.describe(feats).to(torch.float16))
        piece = (rows.start, np.concatenate(codes) if codes else None, torch.cat(descs) if descs else None)
        for r, (first, c, g) in enumerate(dist.all_gather_object(piece)):
            if c is None:
                continue
            global_desc[first:first + len(c)] = g
            if r != dist.rank():
                bar.update(len(c))
            if dist.is_main():
                store.write(first, c)
        done = min(n, start + chunk * dist.world_size())
        if dist.is_main():
            store.save(done, global_desc, matcher)
    bar.close()
    model.train(was_training)
    if not dist.is_main():
        return None
    return BuiltGallery(partial, np.load(partial, mmap_mode="r", allow_pickle=False), global_desc,
                        torch.as_tensor(regions, dtype=torch.long), positions)


def open_gallery(model: RegionClassifier, ckpt: dict, model_dir: Path) -> None:
    """Attach the compact gallery a region checkpoint refers to (memory-mapped), checking it belongs to it."""
    meta = ckpt.get("gallery")
    if not meta or model.matcher is None:
        return
    codes = _checked_codes(meta, Path(model_dir), code_dtype(model.cfg.match_code_bytes))
    model.matcher.attach_codes(codes, model.matcher.global_desc, model.matcher.regions)


def _checked_codes(meta: dict, model_dir: Path, dtype: np.dtype) -> np.ndarray:
    path = Path(model_dir) / meta["file"]
    if not path.is_file():
        raise CheckpointError(f"{model_dir / 'region.pt'} uses the matching gallery {path.name}, which is missing "
                              "from the model directory: copy it there with region.pt, or retrain stage 1")
    if path.stat().st_size != meta["bytes"] or file_fingerprint(path) != meta["fingerprint"]:
        raise CheckpointError(f"{path}: this gallery does not belong to {model_dir / 'region.pt'} (another run "
                              "wrote one of them); retrain stage 1 (`python -m train region ... --resume` "
                              "rebuilds only the gallery)")
    codes = np.load(path, mmap_mode="r", allow_pickle=False)
    if list(codes.shape) != list(meta["shape"]) or codes.dtype != dtype:
        raise CheckpointError(f"{path}: holds {codes.dtype} {codes.shape}, expected {dtype} {tuple(meta['shape'])}")
    return codes


def gallery_intact(ckpt: dict, model_dir: Path) -> bool:
    """Whether the gallery a region checkpoint refers to (if any) is there and belongs to it."""
    if not ckpt.get("gallery"):
        return True
    try:
        _checked_codes(ckpt["gallery"], model_dir, code_dtype(ckpt["model_config"].get("match_code_bytes", 16)))
    except CheckpointError:
        return False
    return True
