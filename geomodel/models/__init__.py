"""Backbones (feature extractors) and the two stage models built on them."""
from __future__ import annotations

from torch import nn

from geomodel.config import ModelConfig, from_dict
from geomodel.errors import CheckpointError


_OPTIONAL_BUFFERS = ("feat_mean", "feat_std", "region_spreads")
_OPTIONAL_PREFIXES = ("matcher.codebook_", "matcher.global_")  # the compact gallery's, added later


def model_from_checkpoint(ckpt: dict, *, path: str = "checkpoint") -> nn.Module:
    """Rebuild a stage model from a checkpoint dict (no pretrained download: weights come from it)."""
    from geomodel.models.coords import CoordRegressor
    from geomodel.models.region import RegionClassifier

    from_package = ckpt.get("backbone_weights") == "pretrained"
    cfg = from_dict(ModelConfig, {**ckpt["model_config"], "pretrained": from_package})
    if ckpt["kind"] == "region":
        model: nn.Module = RegionClassifier(cfg, image_size=ckpt["image_size"])
    else:
        model = CoordRegressor(cfg, feature_dim=ckpt.get("feature_dim"), image_size=ckpt["image_size"])
    state = dict(ckpt["state_dict"])
    defaults = model.state_dict()
    for key in defaults:  # added after the format's first release: identity (or empty) when absent
        if key in _OPTIONAL_BUFFERS or key.startswith(_OPTIONAL_PREFIXES):
            state.setdefault(key, defaults[key])
    try:
        missing, unexpected = model.load_state_dict(state, strict=not from_package)
        if from_package and (unexpected or any(not k.startswith("backbone.trunk.") for k in missing)):
            raise RuntimeError(f"missing {missing[:3]}, unexpected {unexpected[:3]}")
    except (RuntimeError, KeyError) as exc:
        raise CheckpointError(f"{path}: weights do not match the model it describes "
                              f"({str(exc).splitlines()[0]})") from None
    return model.eval()
