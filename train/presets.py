"""Named training recipes: flag defaults that explicit command-line flags override."""
from __future__ import annotations

import argparse
from typing import Sequence

PRESETS: dict[str, dict] = {
    # The original design: two large backbones, full fine-tuning, scalar attention gate.
    "original": dict(backbone="resnet101", layout="separate", attention="scalar", epochs=30, lr=None),
    # Offline, small collections, 2-core CPU (measured on the real campus photos; see README):
    # frozen EfficientNet-Lite0 at 256 px shared by both stages, GeM-pooled mid-level + final
    # layers, 4 cached augmented views per photo, heads trained on cached features, and the
    # region head fused with local-descriptor matching (blocks 14 and head) against every training photo.
    "cpu-small": dict(backbone="efficientnet_lite0", layout="shared", freeze_backbone=True, image_size=256,
                      feature_layers="14,15,head", pool="gem", aug_views=4, epochs=60, coords_epochs=150,
                      patience=15, lr=None, match_layers="14,head"),
}


def apply_preset(parser: argparse.ArgumentParser, command: str, name: str, argv: Sequence[str]) -> argparse.Namespace:
    """Re-parse with the preset's values as defaults, so flags given explicitly still win."""
    sub = parser._subparsers._group_actions[0].choices[command]  # type: ignore[union-attr]
    sub.set_defaults(**PRESETS[name])
    return parser.parse_args(list(argv))
