"""Stage 1: the region classifier (backbone + classification head)."""
from __future__ import annotations

import torch
from torch import nn

from geomodel.config import ModelConfig
from geomodel.models.backbones import Backbone, build_backbone, feature_stats
from geomodel.models.matching import LocalMatcher


def fuse(head: torch.Tensor, matching: torch.Tensor, weight: float) -> torch.Tensor:
    """(B, R) fused probabilities: `weight` of matching's, the rest the head's."""
    return (1 - weight) * head + weight * matching


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
        # Optional: local-descriptor matching against the training photos, fused with the head.
        self.matcher = (LocalMatcher(len(cfg.match_layers), cfg.num_regions, dim=cfg.match_dim,
                                     temperature=cfg.match_temperature, mode=cfg.match_mode,
                                     per_region=cfg.match_per_region, code_bytes=cfg.match_code_bytes,
                                     global_dim=cfg.match_global_dim)
                        if cfg.match_layers else None)
        self._match_index = [cfg.feature_layers.index(layer) for layer in cfg.match_layers]

    @property
    def feature_dim(self) -> int:
        return self.backbone.out_dim

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, S, S) -> (B, D)
        return self.backbone(x)

    def forward_features_and_maps(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """One trunk pass: pooled features (B, D) and the maps of the matched layers [(B, C, h, w), ...]."""
        maps = self.backbone.forward_maps(x)
        layers = maps if isinstance(maps, (list, tuple)) else [maps]
        if self._match_index and layers[0].dim() != 4:
            raise ValueError(f"local matching needs convolutional feature maps; {self.cfg.backbone} has none")
        return self.backbone.pool_maps(maps), [layers[i] for i in self._match_index]

    @property
    def matching(self) -> bool:
        """Whether `probabilities` fuses local matching in (a gallery and a weight above 0)."""
        return self.matcher is not None and self.matcher.ready and self.cfg.match_weight > 0

    def probabilities(self, features: torch.Tensor, maps: list[torch.Tensor] | None = None) -> torch.Tensor:
        """(B, R) region probabilities: the head's, fused with local matching when it has a gallery."""
        probs = self.forward_head(features).float().softmax(dim=1)
        if not self.matching or not maps:
            return probs
        return fuse(probs, self.matcher([m.float() for m in maps], features), self.cfg.match_weight)

    def set_feature_stats(self, features: torch.Tensor) -> None:
        """Standardise head inputs with these (N, D) training features' mean and std."""
        mean, std = feature_stats(features)
        self.feat_mean.copy_(mean)
        self.feat_std.copy_(std)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:  # (B, D) -> (B, R)
        return self.head((features - self.feat_mean) / self.feat_std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
