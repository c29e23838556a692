"""The one place image transforms are built: dataset, evaluator, Predictor and app all call this."""
from __future__ import annotations

import math
from typing import Sequence

from torchvision import transforms as T


def build_transforms(stats: tuple[Sequence[float], Sequence[float]], image_size: int, train: bool,
                     zoom: float = 1.0) -> T.Compose:
    """PIL RGB image -> normalised (3, S, S) float tensor.

    stats: the backbone's (mean, std). Training adds the original work's augmentation:
    horizontal flip, rotation up to 15 degrees and colour jitter. `zoom` < 1 keeps only the
    central share of the photo (e.g. 0.7: the middle 70 % of width and height), as if taken closer.
    """
    if not 0 < zoom <= 1:
        raise ValueError(f"zoom must be in (0, 1], got {zoom}")
    mean, std = stats
    if zoom < 1:
        steps: list = [T.Resize((math.ceil(image_size / zoom),) * 2, antialias=True), T.CenterCrop(image_size)]
    else:
        steps = [T.Resize((image_size, image_size), antialias=True)]
    if train:
        steps += [
            T.RandomHorizontalFlip(),
            T.RandomRotation(15),
            T.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.05),
        ]
    steps += [T.ToTensor(), T.Normalize(list(mean), list(std))]
    return T.Compose(steps)
