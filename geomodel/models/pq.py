"""Product quantisation of unit descriptors: d numbers -> M bytes (one codebook index per sub-vector).

The codebooks are trained with FAISS's k-means (`faiss.ProductQuantizer`); encoding and
decoding are plain torch (a nearest-centroid search and a table look-up), so prediction
does not need FAISS. A 64-number float16 descriptor (128 bytes) becomes 16 bytes.
Measured on the campus training photos (leave-one-out matching accuracy over 173 photos,
blocks 14 + head, 64-d whitened descriptors): float16 42.8 %, 16 bytes 42.2 %, 8 bytes 39.9 %
(decoded vectors re-normalised).
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def train_codebook(x: torch.Tensor, num_codes: int, *, seed: int = 0) -> torch.Tensor:
    """(M, K, d/M) float32 codebooks from (n, d) training vectors: K = 256 centroids per sub-vector,
    fewer when there are fewer than 256 training vectors."""
    import faiss  # training only: prediction decodes with torch

    n, d = x.shape
    if d % num_codes:
        raise ValueError(f"descriptor size {d} is not divisible into {num_codes} sub-vectors")
    nbits = max(1, min(8, int(math.log2(max(n, 2)))))
    pq = faiss.ProductQuantizer(d, num_codes, nbits)
    pq.cp.min_points_per_centroid = 1  # few photos are fine (no warning); many are subsampled
    pq.cp.seed = seed
    pq.train(np.ascontiguousarray(x.float().numpy()))
    return torch.from_numpy(faiss.vector_to_array(pq.centroids).reshape(num_codes, 2 ** nbits, d // num_codes).copy())


def encode(x: torch.Tensor, codebook: torch.Tensor, *, chunk: int = 8192) -> torch.Tensor:
    """(..., d) vectors -> (..., M) uint8 indices of their nearest centroids."""
    m, _, sub = codebook.shape
    flat = x.reshape(-1, m, sub).float()
    out = torch.empty(flat.shape[0], m, dtype=torch.uint8)
    sq = codebook.square().sum(-1)  # (M, K)
    for start in range(0, len(flat), chunk):
        part = flat[start:start + chunk].transpose(0, 1)  # (M, n, sub)
        dist = sq[:, None, :] - 2 * torch.bmm(part, codebook.transpose(1, 2))  # (M, n, K), |x|^2 left out
        out[start:start + chunk] = dist.argmin(-1).T.to(torch.uint8)
    return out.reshape(*x.shape[:-1], m)


def decode(codes: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """(..., M) indices -> (..., d) unit vectors (the centroids joined, re-normalised)."""
    m, k, sub = codebook.shape
    # one table look-up over all M codebooks laid end to end (2.5x faster than indexing (M, K, d/M) by pairs)
    index = codes.long() + torch.arange(0, m * k, k, device=codes.device)
    return F.normalize(F.embedding(index, codebook.reshape(m * k, sub)).flatten(-2), dim=-1)
