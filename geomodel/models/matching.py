"""Dense local-descriptor matching: "which training photos show the same place?"

Every spatial position of a feature map is a local descriptor. Each descriptor of
a query photo takes its best cosine match among a region's training photos (every
position, the photo and its mirror image); the region's score is the mean of those
best matches over the query's descriptors (a Chamfer similarity). So a building
or a sign seen in one corner of the query is matched wherever it appears, and a
view assembled from pieces of several training photos still scores
(`mode="photo"` instead scores the region's single best-matching photo).

Measured on the real campus with EfficientNet-Lite0 blocks 14 + head (10 random
stratified 70/30 splits, fused 0.7/0.3 with a linear probe on pooled features):
0.41 for the probe alone, 0.48 with photo-level matching, 0.49 region-level;
leave-one-out over all 245 photos, matching alone: 0.49 photo-level, 0.55 region-level.

Descriptors are centred and PCA-whitened with statistics of the training photos,
then L2-normalised. The gallery (training descriptors and their regions) is made
of buffers, so it travels in the checkpoint with the rest of stage 1.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from geomodel.config import MATCH_MODES


def descriptors(maps: torch.Tensor) -> torch.Tensor:  # (B, C, h, w) -> (B, h*w, C)
    return maps.flatten(2).transpose(1, 2)


class LocalMatcher(nn.Module):
    """Region scores (B, R) of query descriptor maps against a gallery of training photos.

    Buffers per matched layer i: `mean_i` (C,), `proj_i` (C, d) and `gallery_i`
    (N, V, P, d) float16 (N photos, V views each, P positions); `regions` (N,).
    Empty until `fit` is called (or a checkpoint with a gallery is loaded).
    """

    def __init__(self, num_layers: int, num_regions: int, *, dim: int = 64, temperature: float = 0.02,
                 mode: str = "region") -> None:
        super().__init__()
        if mode not in MATCH_MODES:
            raise ValueError(f"mode={mode!r} is not valid; choose one of: {', '.join(MATCH_MODES)}")
        self.num_layers, self.num_regions, self.dim, self.temperature = num_layers, num_regions, dim, temperature
        self.mode = mode
        for i in range(num_layers):
            self.register_buffer(f"mean_{i}", torch.zeros(0))
            self.register_buffer(f"proj_{i}", torch.zeros(0, 0))
            self.register_buffer(f"gallery_{i}", torch.zeros(0, 0, 0, 0, dtype=torch.float16))
        self.register_buffer("regions", torch.zeros(0, dtype=torch.long))

    @property
    def ready(self) -> bool:
        return self.regions.numel() > 0

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args, **kwargs) -> None:
        # the gallery's size is only known from the checkpoint: take the stored shapes
        for name, buf in self.named_buffers(recurse=False):
            key = prefix + name
            if key in state_dict and state_dict[key].shape != buf.shape:
                setattr(self, name, torch.empty_like(state_dict[key], device=buf.device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _project(self, i: int, desc: torch.Tensor) -> torch.Tensor:  # (..., C) -> (..., d) unit vectors
        mean, proj = getattr(self, f"mean_{i}"), getattr(self, f"proj_{i}")
        return F.normalize((desc.float() - mean) @ proj, dim=-1)

    @torch.no_grad()
    def fit_whitening(self, layer_maps: Sequence[torch.Tensor]) -> None:
        """Centring and PCA whitening from training maps, per layer (M, C, h, w).

        Whitening decorrelates the channels, so a few strong ones do not decide every match.
        """
        if len(layer_maps) != self.num_layers:
            raise ValueError(f"expected maps of {self.num_layers} layers, got {len(layer_maps)}")
        for i, maps in enumerate(layer_maps):
            plain = descriptors(maps.float()).reshape(-1, maps.shape[1])  # (M * P, C)
            mean = plain.mean(0)
            _, s, vh = torch.linalg.svd(plain - mean, full_matrices=False)
            d = min(self.dim, vh.shape[0])
            setattr(self, f"mean_{i}", mean)
            setattr(self, f"proj_{i}", vh[:d].T / s[:d].clamp(min=1e-6))

    @torch.no_grad()
    def encode(self, layer_maps: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Gallery entries: per layer (N, V, C, h, w) (V views of each photo) -> (N, V, P, d) float16."""
        out = []
        for i, maps in enumerate(layer_maps):
            n, v = maps.shape[:2]
            desc = descriptors(maps.flatten(0, 1)).reshape(n, v, -1, maps.shape[2])
            out.append(self._project(i, desc).to(torch.float16))
        return out

    def galleries(self) -> list[torch.Tensor]:
        """Per layer the (N, V, P, d) gallery, in `set_gallery`'s form."""
        return [getattr(self, f"gallery_{i}") for i in range(self.num_layers)]

    def set_gallery(self, encoded: Sequence[torch.Tensor], regions: torch.Tensor) -> None:
        """`encoded`: per layer (N, V, P, d) from `encode`; `regions`: (N,) 0-based region of each photo."""
        for i, gallery in enumerate(encoded):
            setattr(self, f"gallery_{i}", gallery.to(self.regions.device))
        self.regions = regions.to(device=self.regions.device, dtype=torch.long)

    def fit(self, layer_maps: Sequence[torch.Tensor], regions: torch.Tensor) -> None:
        """Whitening and gallery at once from per-layer (N, V, C, h, w) maps (view 0: the plain photo)."""
        self.fit_whitening([maps[:, 0] for maps in layer_maps])
        self.set_gallery(self.encode(layer_maps), regions)

    def descriptor_matches(self, layer_maps: Sequence[torch.Tensor], chunk: int = 64) -> list[torch.Tensor]:
        """Per layer (B, N, P): each query descriptor's best cosine match in each gallery photo (any view)."""
        out = []
        for i, maps in enumerate(layer_maps):
            q = self._project(i, descriptors(maps))  # (B, P, d)
            gallery = getattr(self, f"gallery_{i}")
            best = []
            for start in range(0, gallery.shape[0], chunk):  # bounded memory for big galleries
                g = gallery[start:start + chunk].float()  # (n, V, Q, d)
                best.append(torch.einsum("bpd,nvqd->bnvpq", q, g).amax(dim=4).amax(dim=2))  # (B, n, P)
            out.append(torch.cat(best, dim=1))
        return out

    def similarities(self, layer_maps: Sequence[torch.Tensor], chunk: int = 64) -> torch.Tensor:
        """(B, N) Chamfer similarity of each query photo to each gallery photo, averaged over layers."""
        return self._per_photo(self.descriptor_matches(layer_maps, chunk))

    def _per_photo(self, matches: list[torch.Tensor]) -> torch.Tensor:  # per layer (B, N, P) -> (B, N)
        return sum(m.mean(dim=2) for m in matches) / self.num_layers

    def _by_region(self, values: torch.Tensor) -> torch.Tensor:  # (B, N, ...) -> (B, R, ...): best per region
        index = self.regions.to(values.device).view(1, -1, *([1] * (values.dim() - 2))).expand_as(values)
        out = torch.full((values.shape[0], self.num_regions, *values.shape[2:]), -1.0, device=values.device)
        return out.scatter_reduce(1, index, values, reduce="amax")

    def region_scores(self, layer_maps: Sequence[torch.Tensor]) -> torch.Tensor:
        """(B, R) mean cosine similarity of the query's descriptors to their best match in each region.

        `mode="region"`: every query descriptor takes its best match among all of a region's
        photos (a place seen in pieces across several photos still scores); `"photo"`: the
        region's single best-matching photo. Regions without photos score -1.
        """
        return self.aggregate(self.descriptor_matches(layer_maps))

    def aggregate(self, matches: Sequence[torch.Tensor]) -> torch.Tensor:
        """(B, R) region scores from `descriptor_matches`' per-layer (B, N, P); a match set to -1
        leaves that gallery photo out of that query's scoring (e.g. the query's own photo)."""
        if self.mode == "photo":
            return self._by_region(self._per_photo(list(matches)))
        return sum(self._by_region(m).mean(dim=2) for m in matches) / self.num_layers

    def forward(self, layer_maps: Sequence[torch.Tensor]) -> torch.Tensor:  # -> (B, R) probabilities
        return (self.region_scores(layer_maps) / self.temperature).softmax(dim=1)
