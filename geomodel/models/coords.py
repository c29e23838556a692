"""Stage 2: the region-aware coordinate regressor (the original design).

Image features (B, D) and a learned embedding of the region (B, E) are
concatenated; an attention module weights the combined vector; a two-layer head
maps it to the two normalised coordinates (and, when the labels carry the camera
heading, its sine and cosine). Normalisation statistics and region
centroids are buffers, so `.to()` and `state_dict()` carry them.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from geomodel.config import ModelConfig
from geomodel.models.backbones import Backbone, build_backbone, feature_stats


class FeatureAttention(nn.Module):
    """Per-feature weights in (0, 1): Linear -> tanh -> Linear -> sigmoid."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.Tanh(), nn.Linear(hidden, dim), nn.Sigmoid())

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # (B, dim) -> (B, dim)
        return z * self.net(z)


class ScalarGate(nn.Module):
    """The original code's "attention": a 2-way softmax whose first entry scales the whole vector."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.Tanh(), nn.Linear(hidden, 2), nn.Softmax(dim=1))

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # (B, dim) -> (B, dim)
        return z * self.net(z)[:, :1]


class CoordRegressor(nn.Module):
    """(image or features, region index) -> normalised (lat, lon).

    With `cfg.layout == "shared"` the regressor owns no backbone: it reads the
    features of stage 1's trunk, so a photo needs one backbone pass for both stages.
    """

    def __init__(self, cfg: ModelConfig, *, feature_dim: int | None = None, image_size: int = 224,
                 backbone: Backbone | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        if cfg.layout == "separate":
            self.backbone = backbone or build_backbone(cfg.backbone, pretrained=cfg.pretrained, pool=cfg.pool,
                                                   layers=cfg.feature_layers,
                                                       image_size=image_size)
            feature_dim = self.backbone.out_dim
        else:
            self.backbone = None
            if feature_dim is None:
                raise ValueError("a shared-layout CoordRegressor needs feature_dim (stage 1's out_dim)")
        self.feature_dim = feature_dim
        dim = feature_dim + cfg.region_embed_dim
        self.embedding = nn.Embedding(cfg.num_regions, cfg.region_embed_dim)
        gate = FeatureAttention if cfg.attention == "features" else ScalarGate
        self.attention = gate(dim, cfg.hidden_dim)
        self.head = nn.Sequential(nn.Linear(dim, cfg.hidden_dim), nn.ReLU(), nn.Dropout(cfg.dropout),
                                  nn.Linear(cfg.hidden_dim, 4 if cfg.predict_heading else 2))
        self.register_buffer("feat_mean", torch.zeros(feature_dim))  # head-input standardisation
        self.register_buffer("feat_std", torch.ones(feature_dim))
        self.register_buffer("coord_mean", torch.zeros(2, dtype=torch.float64))
        self.register_buffer("coord_std", torch.ones(2, dtype=torch.float64))
        self.register_buffer("region_centroids", torch.zeros(cfg.num_regions, 2, dtype=torch.float64))
        self.register_buffer("region_spreads", torch.ones(cfg.num_regions, 2, dtype=torch.float64))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, S, S) -> (B, D)
        if self.backbone is None:
            raise RuntimeError("shared layout: compute features with the region model's backbone")
        return self.backbone(x)

    def set_feature_stats(self, features: torch.Tensor) -> None:
        """Standardise image features with these (N, D) training features' mean and std."""
        mean, std = feature_stats(features)
        self.feat_mean.copy_(mean)
        self.feat_std.copy_(std)

    def forward_head(self, features: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
        """(B, D) features and (B,) 0-based regions -> (B, 2) normalised lat/lon (+ sin, cos of the heading)."""
        features = (features - self.feat_mean) / self.feat_std
        z = torch.cat([features, self.embedding(region)], dim=1)
        out = self.head(self.attention(z))
        if self.cfg.coord_target == "offset":  # centroid + offset x spread, in normalised units
            centre = ((self.region_centroids[region] - self.coord_mean) / self.coord_std).to(out.dtype)
            scale = (self.region_spreads[region] / self.coord_std).to(out.dtype)
            out = torch.cat([centre + scale * out[:, :2], out[:, 2:]], dim=1)
        return out

    def forward(self, x: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x), region)

    def denormalize(self, z: torch.Tensor) -> torch.Tensor:  # (B, 2+) -> (B, 2) dataset units, float64
        return z[:, :2].double() * self.coord_std + self.coord_mean

    def heading(self, z: torch.Tensor) -> torch.Tensor | None:
        """(B, 4) head output -> (B,) heading in degrees [0, 360), or None without a heading output."""
        if z.shape[1] < 4:
            return None
        return torch.rad2deg(torch.atan2(z[:, 2].double(), z[:, 3].double())) % 360.0


def heading_targets(angles_deg: np.ndarray) -> torch.Tensor:
    """(N,) headings in degrees (NaN where unknown) -> (N, 2) (sin, cos) targets, NaN rows kept."""
    rad = torch.deg2rad(torch.tensor(np.asarray(angles_deg, dtype=np.float64)) % 360.0)
    return torch.stack([torch.sin(rad), torch.cos(rad)], dim=1).float()


def stage2_loss(pred: torch.Tensor, batch: dict) -> torch.Tensor:
    """`coord_loss` on lat/lon, plus 0.5 * MSE of (sin, cos) of the heading where it is known."""
    loss = coord_loss(pred[:, :2], batch["coords"])
    if pred.shape[1] >= 4 and "heading" in batch:
        target = batch["heading"]
        known = ~torch.isnan(target[:, 0])
        if known.any():
            loss = loss + 0.5 * nn.functional.mse_loss(pred[known, 2:4], target[known])
    return loss


def coord_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """0.5 * MSE(lat) + 0.5 * MSE(lon) on normalised coordinates (the original loss)."""
    return 0.5 * nn.functional.mse_loss(pred[:, 0], target[:, 0]) + 0.5 * nn.functional.mse_loss(pred[:, 1],
                                                                                               target[:, 1])
