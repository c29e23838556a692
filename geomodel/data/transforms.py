"""The one place image transforms are built: dataset, evaluator, Predictor and app all call this."""
from __future__ import annotations

from typing import Sequence

from torchvision import transforms as T


def build_transforms(stats: tuple[Sequence[float], Sequence[float]], image_size: int, train: bool) -> T.Compose:
    """PIL RGB image -> normalised (3, S, S) float tensor.

    stats: the backbone's (mean, std). Training adds the original work's augmentation:
    horizontal flip, rotation up to 15 degrees and colour jitter.
    """
    mean, std = stats
    steps: list = [T.Resize((image_size, image_size), antialias=True)]
    if train:
        steps += [
            T.RandomHorizontalFlip(),
            T.RandomRotation(15),
            T.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.05),
        ]
    steps += [T.ToTensor(), T.Normalize(list(mean), list(std))]
    return T.Compose(steps)
