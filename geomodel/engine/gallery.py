"""Building stage 1's matching gallery from the training photos (after its head is trained)."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch
from tqdm.auto import tqdm

from geomodel.data.images import load_image
from geomodel.data.transforms import build_transforms
from geomodel.models.region import RegionClassifier


def gallery_transforms(model: RegionClassifier, image_size: int) -> list[Callable]:
    """The views stored per photo (each also mirrored by `view_maps`): the plain evaluation view,
    then (match_zoom < 1) the photo's central share, the same places seen from closer."""
    norm = (model.backbone.mean, model.backbone.std)
    views = [build_transforms(norm, image_size, train=False)]
    if model.cfg.match_zoom < 1:
        views.append(build_transforms(norm, image_size, train=False, zoom=model.cfg.match_zoom))
    return views


def view_maps(model: RegionClassifier, paths: Sequence[Path], transforms: Sequence[Callable], device: torch.device,
              batch_size: int, desc: str) -> Iterator[list[torch.Tensor]]:
    """Per batch, the matched layers' maps of each view of each photo: [(b, V, C, h, w), ...].

    Views: every transform's output and its mirror image (the same place seen mirrored).
    """
    for start in tqdm(range(0, len(paths), batch_size), desc=desc, leave=False, disable=None):
        images = [load_image(p) for p in paths[start:start + batch_size]]
        views = []
        for transform in transforms:
            x = torch.stack([transform(im) for im in images]).to(device)
            views += [model.forward_features_and_maps(x)[1], model.forward_features_and_maps(x.flip(-1))[1]]
        yield [torch.stack(layer, dim=1).to(torch.float16) for layer in zip(*views)]


def photo_maps(model: RegionClassifier, paths: Sequence[Path], transforms: Sequence[Callable], *,
               device: torch.device, batch_size: int = 16, desc: str = "descriptor maps") -> list[torch.Tensor]:
    """Every photo's `view_maps` at once: per matched layer (N, V, C, h, w) float16, on `device`."""
    return [torch.cat(parts) for parts in zip(*view_maps(model, paths, transforms, device, batch_size, desc))]


@torch.no_grad()
def fit_matcher(model: RegionClassifier, paths: Sequence[Path], regions: torch.Tensor,
                transforms: Sequence[Callable], *,
                device: torch.device, batch_size: int = 16, whitening_photos: int = 512,
                desc: str = "matching gallery") -> None:
    """Fill `model.matcher` with every photo: each transform's view and its mirror image.

    `transforms[0]` must be the plain evaluation transform. Whitening is fitted on the plain
    views of the first `whitening_photos` photos; their raw maps are kept only
    until then, so memory holds the compact gallery, not every photo's raw maps.
    """
    matcher = model.matcher
    if matcher is None:
        raise ValueError("this model has no matcher (ModelConfig.match_layers is empty)")
    was_training = model.training
    model.eval()
    paths = list(paths)
    head = paths[:whitening_photos]
    raw = photo_maps(model, head, transforms, device=device, batch_size=batch_size, desc=desc)
    matcher.fit_whitening([maps[:, 0].float() for maps in raw])
    encoded = [matcher.encode(raw)]
    del raw
    for batch in view_maps(model, paths[len(head):], transforms, device, batch_size, desc + " (rest)"):
        encoded.append(matcher.encode(batch))
    matcher.set_gallery([torch.cat(parts) for parts in zip(*encoded)], regions)
    model.train(was_training)
