"""Stage 1: the region classifier (backbone + classification head)."""
from __future__ import annotations

import torch
from torch import nn

from geomodel.config import ModelConfig
from geomodel.models.backbones import Backbone, build_backbone


class RegionClassifier(nn.Module):
    """Backbone features -> region logits (B, num_regions)."""

    def __init__(self, cfg: ModelConfig, *, image_size: int = 224, backbone: Backbone | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = backbone or build_backbone(cfg.backbone, pretrained=cfg.pretrained, pool=cfg.pool,
                                                   layers=cfg.feature_layers,
                                                   image_size=image_size)
        d = self.backbone.out_dim
        # Per-feature standardisation in front of the head (identity until set from training
        # features): linear probes on frozen trunks learn far faster on standardised inputs.
        self.register_buffer("feat_mean", torch.zeros(d))
        self.register_buffer("feat_std", torch.ones(d))
        if cfg.head_hidden > 0:
            self.head = nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(d, cfg.head_hidden), nn.GELU(),
                                      nn.Dropout(cfg.dropout), nn.Linear(cfg.head_hidden, cfg.num_regions))
        else:
            self.head = nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(d, cfg.num_regions))

    @property
    def feature_dim(self) -> int:
        return self.backbone.out_dim

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, S, S) -> (B, D)
        return self.backbone(x)

    def set_feature_stats(self, features: torch.Tensor) -> None:
        """Standardise head inputs with these (N, D) training features' mean and std."""
        self.feat_mean.copy_(features.mean(0))
        std = features.std(0)
        # floor near-constant dimensions: dividing by ~0 would blow up any photo that differs there
        self.feat_std.copy_(std.clamp(min=max(0.1 * std.median().item(), 1e-6)))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:  # (B, D) -> (B, R)
        return self.head((features - self.feat_mean) / self.feat_std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
