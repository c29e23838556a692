"""Typed configuration, one dataclass per concern, validated on construction.

Every config round-trips through plain types (`asdict` / `from_dict`) so it can
be written next to outputs as JSON and stored inside checkpoints.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, TypeVar

FRAMES = ("wgs84", "planar")
LAYOUTS = ("shared", "separate")
ATTENTIONS = ("features", "scalar")
REGION_INPUTS = ("predicted", "true")
COORD_TARGETS = ("absolute", "offset")
MATCH_MODES = ("region", "photo")  # local matching: best match per region, or the best single photo
# fusion weights of local matching tried on the validation split during fit (0: matching off)
MATCH_WEIGHTS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)

T = TypeVar("T")


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not valid; choose one of: {', '.join(choices)}")


def _check_positive(obj: Any, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if value is None or value <= 0:
            raise ValueError(f"{name} must be > 0, got {value!r}")


@dataclass
class DataConfig:
    """How labels are read, cleaned and normalised."""

    frame: str = "planar"  # coordinate frame: "wgs84" (degrees, metres) or "planar" (any unit)
    image_size: int = 224  # square side fed to the network
    outlier_low_pct: float = 1.0  # drop training rows with lat or lon below this percentile
    outlier_high_pct: float = 99.0  # ... or above this one (fitted on the training split only)
    exclude: list[str] = field(default_factory=list)  # filenames or 0-based row indices to drop
    val_fraction: float = 0.15  # held out (stratified) when no validation CSV is given
    num_regions: int | None = None  # None: the largest Region_ID in the training CSV
    region_names: list[str] | None = None  # display names, index = region id - 1
    error_unit: str | None = None  # None: "m" for wgs84, "units" for planar

    def __post_init__(self) -> None:
        _check_choice("frame", self.frame, FRAMES)
        _check_positive(self, "image_size")
        if not 0 <= self.outlier_low_pct < self.outlier_high_pct <= 100:
            raise ValueError("need 0 <= outlier_low_pct < outlier_high_pct <= 100, got "
                             f"{self.outlier_low_pct} and {self.outlier_high_pct}")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.num_regions is not None and self.num_regions < 2:
            raise ValueError(f"num_regions must be at least 2, got {self.num_regions}")
        self.exclude = [str(e) for e in self.exclude]
        if self.error_unit is None:
            self.error_unit = "m" if self.frame == "wgs84" else "units"


@dataclass
class ModelConfig:
    """Architecture of one stage; built by `geomodel.models.build_model`."""

    kind: str = "region"  # "region" (classifier) or "coords" (region-aware regressor)
    backbone: str = "efficientnet_lite0"  # a key of geomodel.models.BACKBONES
    pretrained: bool = True  # ImageNet weights (offline for efficientnet_lite*)
    num_regions: int = 15
    pool: str = "avg"  # backbone pooling: "avg" or "gem"
    feature_layers: list[str] = field(default_factory=lambda: ["head"])  # Lite only: e.g. ["14", "15", "head"]
    head_hidden: int = 0  # region head: 0 = linear, >0 = one hidden layer of this width
    region_embed_dim: int = 256  # coords: size of the region embedding
    hidden_dim: int = 512  # coords: attention and regression head width
    attention: str = "features"  # coords: "features" (per-feature weights) or "scalar" (original gate)
    dropout: float = 0.2
    layout: str = "shared"  # coords: "shared" reuses stage 1's trunk, "separate" has its own
    predict_heading: bool = False  # coords: also regress the camera heading as (sin, cos); set from the CSV
    # coords: "absolute" (the head outputs the normalised position) or "offset" (it outputs an offset
    # from the region's centroid in units of the region's spread: unknown photos default to the centroid)
    coord_target: str = "absolute"
    # region: match local descriptors of these feature layers against every training photo
    # (geomodel.models.matching) and fuse with the head; [] = head only. Must be among feature_layers.
    match_layers: list[str] = field(default_factory=list)
    match_weight: float = 0.7  # share of the matching probabilities in the fused region probabilities
    match_dim: int = 64  # PCA-whitened descriptor size
    match_temperature: float = 0.02  # softmax temperature over the regions' best cosine similarities
    match_mode: str = "region"  # "region": each descriptor's best match in the region; "photo": best photo
    match_zoom: float = 0.7  # the gallery also holds each photo's central share as a closer view (1: none)
    match_per_region: int = 3  # gallery photos matched per query and region: the most similar by global descriptor
    match_code_bytes: int = 16  # bytes per stored local descriptor (product quantisation of match_dim numbers;
    # 0: the descriptors themselves, float16, 2 * match_dim bytes)
    match_global_dim: int = 64  # size of the global descriptor that shortlists gallery photos

    def __post_init__(self) -> None:
        _check_choice("kind", self.kind, ("region", "coords"))
        _check_choice("attention", self.attention, ATTENTIONS)
        _check_choice("layout", self.layout, LAYOUTS)
        _check_choice("pool", self.pool, ("avg", "gem"))
        _check_choice("coord_target", self.coord_target, COORD_TARGETS)
        _check_positive(self, "num_regions", "region_embed_dim", "hidden_dim")
        self.feature_layers = [str(layer) for layer in self.feature_layers]
        if not self.feature_layers:
            raise ValueError("feature_layers must name at least one layer (e.g. ['head'])")
        if self.feature_layers != ["head"] and not self.backbone.startswith("efficientnet_lite"):
            raise ValueError(f"feature layers {self.feature_layers} (and local matching) need an efficientnet_lite* "
                             f"backbone; {self.backbone} gives its final layer only (a head-only fit: --feature-layers head "
                             "--match-layers '')")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        self.match_layers = [str(layer) for layer in self.match_layers]
        unknown = [layer for layer in self.match_layers if layer not in self.feature_layers]
        if unknown:
            raise ValueError(f"match_layers {unknown} are not among feature_layers {self.feature_layers}: "
                             "matching reuses the maps the trunk already computes")
        if not 0 <= self.match_weight <= 1:
            raise ValueError(f"match_weight must be in [0, 1], got {self.match_weight}")
        _check_positive(self, "match_dim", "match_temperature", "match_per_region", "match_global_dim")
        if self.match_code_bytes < 0:
            raise ValueError(f"match_code_bytes must be 0 (float16 descriptors) or positive, got {self.match_code_bytes}")
        if self.match_code_bytes and self.match_dim % self.match_code_bytes:
            raise ValueError(f"match_code_bytes ({self.match_code_bytes}) must divide match_dim ({self.match_dim})")
        _check_choice("match_mode", self.match_mode, MATCH_MODES)
        if not 0 < self.match_zoom <= 1:
            raise ValueError(f"match_zoom must be in (0, 1], got {self.match_zoom}")


@dataclass
class TrainConfig:
    """Optimisation and run control for one stage."""

    epochs: int = 15
    batch_size: int = 32
    lr: float | None = None  # None: 1e-3 for region (AdamW), 1e-4 for coords (Adam)
    weight_decay: float = 1e-2
    label_smoothing: float = 0.1
    smooth_by_distance: bool = False  # region: spread the smoothing over nearby regions, not uniformly
    grad_clip: float = 1.0
    patience: int = 5  # early stopping: epochs without improvement
    freeze_backbone: bool = False
    cache_features: bool = True  # frozen backbone: compute features once, reuse across epochs and runs
    cache_dir: str | None = None  # feature cache folder; None: $GEOMODEL_CACHE or ~/.cache/geomodel
    aug_views: int = 0  # frozen backbone: fixed augmented views cached per image (besides the plain one)
    region_input: str = "predicted"  # coords training: stage 1's prediction or the true region
    seed: int = 0
    device: str = "auto"
    num_workers: int = 0
    amp: bool = False  # bf16/fp16 autocast on CUDA
    # region stage with matching: fusion weights tried on validation (the best is kept; 0 = off, and then
    # no gallery is stored); one value fixes the weight
    match_weights: list[float] = field(default_factory=lambda: list(MATCH_WEIGHTS))

    def __post_init__(self) -> None:
        _check_positive(self, "epochs", "batch_size", "patience")
        if self.aug_views < 0:
            raise ValueError(f"aug_views must be >= 0, got {self.aug_views}")
        _check_choice("region_input", self.region_input, REGION_INPUTS)
        if self.lr is not None and self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        self.match_weights = [float(w) for w in self.match_weights]
        if not self.match_weights or any(not 0 <= w <= 1 for w in self.match_weights):
            raise ValueError(f"match weights must be in [0, 1], got {self.match_weights}")


def to_dict(config: Any) -> dict[str, Any]:
    """A config as plain JSON-able types."""
    return dataclasses.asdict(config)


def from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Rebuild a config, ignoring keys this version does not know (forward compatible)."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    return cls(**{k: v for k, v in data.items() if k in names})
