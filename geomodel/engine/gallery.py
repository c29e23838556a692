"""Building stage 1's matching gallery from the training photos (after its head is trained)."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch
from tqdm.auto import tqdm

from geomodel.data.images import load_image
from geomodel.models.region import RegionClassifier


def _batches(model: RegionClassifier, paths: Sequence[Path], transform: Callable, device: torch.device,
             batch_size: int, desc: str) -> Iterator[list[torch.Tensor]]:
    """Per batch, the matched layers' maps of each photo and its mirror image: [(b, 2, C, h, w), ...]."""
    for start in tqdm(range(0, len(paths), batch_size), desc=desc, leave=False, disable=None):
        x = torch.stack([transform(load_image(p)) for p in paths[start:start + batch_size]]).to(device)
        _, plain = model.forward_features_and_maps(x)
        _, mirror = model.forward_features_and_maps(x.flip(-1))  # the same place seen mirrored
        yield [torch.stack([a, b], dim=1).to(torch.float16) for a, b in zip(plain, mirror)]


@torch.no_grad()
def fit_matcher(model: RegionClassifier, paths: Sequence[Path], regions: torch.Tensor, transform: Callable, *,
                device: torch.device, batch_size: int = 16, whitening_photos: int = 512,
                desc: str = "matching gallery") -> None:
    """Fill `model.matcher` with every training photo (2 views each).

    Whitening is fitted on the first `whitening_photos` photos; their raw maps are kept only
    until then, so memory holds the compact gallery, not every photo's raw maps.
    """
    matcher = model.matcher
    if matcher is None:
        raise ValueError("this model has no matcher (ModelConfig.match_layers is empty)")
    was_training = model.training
    model.eval()
    paths = list(paths)
    head = paths[:whitening_photos]
    raw = [torch.cat(parts) for parts in zip(*_batches(model, head, transform, device, batch_size, desc))]
    matcher.fit_whitening([maps[:, 0].float() for maps in raw])
    encoded = [matcher.encode(raw)]
    del raw
    for batch in _batches(model, paths[len(head):], transform, device, batch_size, desc + " (rest)"):
        encoded.append(matcher.encode(batch))
    matcher.set_gallery([torch.cat(parts) for parts in zip(*encoded)], regions)
    model.train(was_training)
