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
then L2-normalised. The gallery is held one of two ways:

* compact (what `python -m train fit` writes): every gallery photo has a global descriptor
  (its pooled trunk features, PCA-whitened: `global_desc`, a buffer of G float16 numbers)
  and product-quantised local descriptors (`geomodel.models.pq`, M bytes each) kept in a
  memory-mapped file beside the checkpoint (`attach_codes`). A query's global descriptor
  shortlists, in every region, the region's `per_region` most similar photos; only those are
  decoded and matched, so the cost per photo grows with the number of regions but not with
  the gallery. Measured on the campus training photos only (173 photos, 15 regions, 16-byte
  codes; the test photos were not used to choose): fused with a head trained on the rest, over
  8 random 70/30 splits, 3 per region scores 41.7 % at weight 0.7 (42.6 % at 1.0), every photo
  41.2 % (42.2 %), the 16 most similar photos overall only 36.8 % (36.8 %): a short global
  shortlist leaves most regions without a candidate. Matching alone, leave-one-out: 3 per
  region 48.0 %, 2 or 4 per region 46.8 %, the 16 most similar overall 45.7 %, every photo 42.2 %.
  `code_bytes=0` stores the whitened descriptors themselves (float16, no codebooks): on the same
  kind of splits (the whole region stage, 408 predictions) 174 right against 173 for 16-byte codes
  at weight 0.7, at 8x the size;
* in memory (`set_gallery`): float16 buffers, every photo matched (the learning curve, and
  model directories written before the compact gallery existed).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from geomodel.config import MATCH_MODES
from geomodel.models import pq


def descriptors(maps: torch.Tensor) -> torch.Tensor:  # (B, C, h, w) -> (B, h*w, C)
    return maps.flatten(2).transpose(1, 2)


class LocalMatcher(nn.Module):
    """Region scores (B, R) of query descriptor maps against a gallery of training photos.

    Buffers per matched layer i: `mean_i` (C,), `proj_i` (C, d) (the whitening). In-memory
    gallery: `gallery_i` (N, V, P, d) float16 (N photos, V views each, P positions). Compact
    gallery: `codebook_i` (M, K, d/M) (product quantisation), `global_mean` (D,), `global_proj`
    (D, G) and `global_desc` (N, G) float16, and `codes`, an (N, V, P_1 + P_2 + ..., M) uint8
    array (memory-mapped; with `code_bytes=0` the (N, V, P_total, d) float16 descriptors themselves, no
    codebooks) that `attach_codes` sets. `regions` (N,) either way.
    Empty until a gallery is set (or a checkpoint with one is loaded).
    """

    def __init__(self, num_layers: int, num_regions: int, *, dim: int = 64, temperature: float = 0.02,
                 mode: str = "region", per_region: int = 3, code_bytes: int = 16, global_dim: int = 64) -> None:
        super().__init__()
        if mode not in MATCH_MODES:
            raise ValueError(f"mode={mode!r} is not valid; choose one of: {', '.join(MATCH_MODES)}")
        self.num_layers, self.num_regions, self.dim, self.temperature = num_layers, num_regions, dim, temperature
        self.mode, self.per_region, self.code_bytes, self.global_dim = mode, per_region, code_bytes, global_dim
        for i in range(num_layers):
            self.register_buffer(f"mean_{i}", torch.zeros(0))
            self.register_buffer(f"proj_{i}", torch.zeros(0, 0))
            self.register_buffer(f"gallery_{i}", torch.zeros(0, 0, 0, 0, dtype=torch.float16))
            self.register_buffer(f"codebook_{i}", torch.zeros(0, 0, 0))
        self.register_buffer("global_mean", torch.zeros(0))
        self.register_buffer("global_proj", torch.zeros(0, 0))
        self.register_buffer("global_desc", torch.zeros(0, 0, dtype=torch.float16))
        self.register_buffer("regions", torch.zeros(0, dtype=torch.long))
        self.codes: np.ndarray | None = None  # compact gallery: (N, V, P_total, M) uint8 (or float16), memory-mapped
        self._global32: torch.Tensor | None = None  # float32 copy of global_desc for the search
        self._members: list[torch.Tensor] = []  # each region's gallery photos (regions that have any)

    @property
    def ready(self) -> bool:
        return self.regions.numel() > 0 and (self.compact or self.gallery_0.numel() > 0)

    @property
    def compact(self) -> bool:
        """Whether the gallery is the compact one (shortlist, then decoded codes)."""
        return self.codes is not None

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
            proj = torch.zeros(maps.shape[1], self.dim)  # always `dim` wide (zeros past d: too few samples)
            proj[:, :d] = vh[:d].T / s[:d].clamp(min=1e-6)
            setattr(self, f"mean_{i}", mean)
            setattr(self, f"proj_{i}", proj)

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

    def _by_region(self, values: torch.Tensor, regions: torch.Tensor | None = None) -> torch.Tensor:
        """(B, N, ...) -> (B, R, ...): the best value per region; `regions` (N,) or per query (B, N)."""
        regions = (self.regions if regions is None else regions).to(values.device)
        shape = (1, -1) if regions.dim() == 1 else tuple(regions.shape)
        index = regions.reshape(*shape, *([1] * (values.dim() - 2))).expand_as(values)
        out = torch.full((values.shape[0], self.num_regions, *values.shape[2:]), -1.0, device=values.device)
        return out.scatter_reduce(1, index, values, reduce="amax")

    def region_scores(self, layer_maps: Sequence[torch.Tensor], features: torch.Tensor | None = None) -> torch.Tensor:
        """(B, R) mean cosine similarity of the query's descriptors to their best match in each region.

        `mode="region"`: every query descriptor takes its best match among all of a region's
        photos (a place seen in pieces across several photos still scores); `"photo"`: the
        region's single best-matching photo. Regions without photos score -1. With the compact
        gallery only the query's shortlist (found with `features`, its (B, D) pooled trunk
        features: each region's `per_region` most similar photos) is matched.
        """
        if self.compact:
            if features is None:
                raise ValueError("the compact gallery shortlists photos by their pooled features: pass `features`")
            ids = self.shortlist_ids(features)
            return self.aggregate(self.candidate_matches(layer_maps, ids), regions=self.regions[ids])
        return self.aggregate(self.descriptor_matches(layer_maps))

    def aggregate(self, matches: Sequence[torch.Tensor], regions: torch.Tensor | None = None) -> torch.Tensor:
        """(B, R) region scores from per-layer (B, N, P) matches (`descriptor_matches`, or
        `candidate_matches` with their (B, K) `regions`); a match set to -1 leaves that gallery
        photo out of that query's scoring (e.g. the query's own photo)."""
        if self.mode == "photo":
            return self._by_region(self._per_photo(list(matches)), regions)
        return sum(self._by_region(m, regions).mean(dim=2) for m in matches) / self.num_layers

    def forward(self, layer_maps: Sequence[torch.Tensor], features: torch.Tensor | None = None) -> torch.Tensor:
        """(B, R) region probabilities: a softmax over the region scores."""
        return (self.region_scores(layer_maps, features) / self.temperature).softmax(dim=1)

    # ------------------------------------------------------------------ compact gallery

    @torch.no_grad()
    def fit_global(self, features: torch.Tensor) -> None:
        """Centring and PCA whitening of (n, D) pooled trunk features into the G-number global descriptor.

        At most n / 2 directions are kept: the weakest directions of a few photos are noise
        that whitening would blow up (on the campus, 256 directions of 173 photos shortlisted badly).
        """
        x = features.float()
        mean = x.mean(0)
        _, s, vh = torch.linalg.svd(x - mean, full_matrices=False)
        g = max(1, min(self.global_dim, len(x) // 2, vh.shape[0]))
        self.global_mean, self.global_proj = mean, vh[:g].T / s[:g].clamp(min=1e-6)

    def describe(self, features: torch.Tensor) -> torch.Tensor:  # (B, D) pooled features -> (B, G) unit vectors
        return F.normalize((features.float() - self.global_mean) @ self.global_proj, dim=-1)

    @torch.no_grad()
    def fit_codebooks(self, encoded: Sequence[torch.Tensor]) -> None:
        """Product-quantisation codebooks per layer from whitened descriptors (..., d) (`encode`'s output);
        none with `code_bytes=0` (the descriptors are stored as they are)."""
        if not self.code_bytes:
            return
        for i, desc in enumerate(encoded):
            setattr(self, f"codebook_{i}", pq.train_codebook(desc.reshape(-1, desc.shape[-1]), self.code_bytes))

    @torch.no_grad()
    def quantise(self, encoded: Sequence[torch.Tensor]) -> torch.Tensor:
        """Per layer (N, V, P_i, d) from `encode` -> (N, V, P_1 + P_2 + ..., M) uint8 codes
        (`code_bytes=0`: the (N, V, P_1 + ..., d) float16 descriptors themselves)."""
        if not self.code_bytes:
            return torch.cat([e.to(torch.float16) for e in encoded], dim=2)
        return torch.cat([pq.encode(e, getattr(self, f"codebook_{i}")) for i, e in enumerate(encoded)], dim=2)

    def _decode(self, i: int, rows: torch.Tensor) -> torch.Tensor:
        """Layer i's stored rows (..., M) uint8 codes or (..., d) float16 descriptors -> (..., d) float32."""
        if rows.dtype == torch.float16:
            return rows.float()
        return pq.decode(rows, getattr(self, f"codebook_{i}"))

    def attach_codes(self, codes: np.ndarray, global_desc: torch.Tensor, regions: torch.Tensor) -> None:
        """Use a compact gallery of N photos: `codes` (N, V, P_total, M) from `quantise` (a memory-mapped
        array is read only where a shortlist points), `global_desc` (N, G) from `describe`, `regions` (N,)."""
        n = len(regions)
        if codes.ndim != 4 or codes.shape[0] != n or len(global_desc) != n:
            raise ValueError(f"gallery parts disagree: {codes.shape[0]} coded photos, {len(global_desc)} global "
                             f"descriptors, {n} regions")
        self.codes = codes
        self.global_desc = global_desc.to(device=self.regions.device, dtype=torch.float16)
        self.regions = regions.to(device=self.regions.device, dtype=torch.long)
        self._global32 = None

    def clear_gallery(self) -> None:
        """Forget the gallery (either kind); whitening, codebooks and the global projection stay."""
        for i in range(self.num_layers):
            setattr(self, f"gallery_{i}", torch.zeros(0, 0, 0, 0, dtype=torch.float16, device=self.regions.device))
        self.global_desc = torch.zeros(0, 0, dtype=torch.float16, device=self.regions.device)
        self.regions = torch.zeros(0, dtype=torch.long, device=self.regions.device)
        self.codes, self._global32 = None, None

    def shortlist_ids(self, features: torch.Tensor) -> torch.Tensor:
        """(B, K) in every region the `per_region` gallery photos whose global descriptors are most similar
        (exact search), grouped by region; K = the sum over regions of min(per_region, the region's photos)."""
        if self._global32 is None or self._global32.device != features.device:
            self._global32 = self.global_desc.float().to(features.device)
            regions = self.regions.to(features.device)
            self._members = [m for m in (torch.nonzero(regions == r).squeeze(1) for r in range(self.num_regions))
                             if len(m)]
        sims = self.describe(features) @ self._global32.T  # (B, N)
        # one top-k per region: O(N) in all (a sort of the whole gallery was 4x slower at 62,420 photos)
        return torch.cat([m[sims[:, m].topk(min(self.per_region, len(m)), dim=1).indices] for m in self._members], 1)

    def candidate_matches(self, layer_maps: Sequence[torch.Tensor], ids: torch.Tensor) -> list[torch.Tensor]:
        """Per layer (B, K, P): each query descriptor's best match in each of its shortlisted photos (any view).

        Only the shortlisted photos' codes are read (from the memory-mapped file) and decoded.
        """
        positions = sum(m.shape[2] * m.shape[3] for m in layer_maps)
        if positions != self.codes.shape[2]:
            raise ValueError(f"the gallery holds {self.codes.shape[2]} positions per view but the query has "
                             f"{positions}: was it built at another image size?")
        uniq, inv = ids.unique(return_inverse=True)
        rows = torch.from_numpy(np.asarray(self.codes[uniq.cpu().numpy()]))  # (U, V, P_total, M)
        out, offset = [], 0
        for i, maps in enumerate(layer_maps):
            q = self._project(i, descriptors(maps))  # (B, P, d)
            b, p = q.shape[:2]
            g = self._decode(i, rows[:, :, offset:offset + p].to(q.device))  # (U, V, P, d)
            offset += p
            sims = torch.bmm(g[inv].reshape(b, -1, g.shape[-1]), q.transpose(1, 2))  # (B, K * V * P, P)
            out.append(sims.view(b, ids.shape[1], -1, p).amax(dim=2))  # (B, K, P)
        return out
