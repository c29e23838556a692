"""Named training recipes: flag defaults that explicit command-line flags override."""
from __future__ import annotations

import argparse
from typing import Sequence

PRESETS: dict[str, dict] = {
    # The original design: two large backbones, full fine-tuning, scalar attention gate.
    "original": dict(backbone="resnet101", layout="separate", attention="scalar", epochs=30, lr=None),
    # Offline and fast on a small CPU: frozen EfficientNet-Lite0 trunk shared by both stages.
    "cpu-small": dict(backbone="efficientnet_lite0", layout="shared", freeze_backbone=True, epochs=60,
                      coords_epochs=200, aug_views=4, patience=15, lr=None),
}


def apply_preset(parser: argparse.ArgumentParser, command: str, name: str, argv: Sequence[str]) -> argparse.Namespace:
    """Re-parse with the preset's values as defaults, so flags given explicitly still win."""
    sub = parser._subparsers._group_actions[0].choices[command]  # type: ignore[union-attr]
    sub.set_defaults(**PRESETS[name])
    return parser.parse_args(list(argv))
