"""Matching only where it helps: the fusion weight of head and local matching, chosen on validation.

`fit` scores the validation photos with the head alone and with matching against the
training photos' gallery, then tries every candidate weight (0 = matching off). A weight
above 0 must beat the head alone on validation accuracy, by at least one photo; among the
weights that tie on accuracy the one with the lowest log loss wins. Weight 0 means no
gallery is stored and prediction costs only the trunk and the heads.
"""
from __future__ import annotations

from typing import Sequence

import torch

from geomodel.models.region import fuse


def fusion_table(head: torch.Tensor, matching: torch.Tensor, truth: torch.Tensor,
                 weights: Sequence[float]) -> list[dict]:
    """Validation accuracy and log loss of the fused probabilities for each weight.

    `head`, `matching`: (n, R) probabilities; `truth`: (n,) 0-based regions.
    """
    rows = []
    for w in weights:
        p = fuse(head.float(), matching.float(), float(w))
        picked = p.gather(1, truth.view(-1, 1)).squeeze(1)
        rows.append({"weight": float(w), "accuracy": float((p.argmax(1) == truth).float().mean()),
                     "log_loss": float(-picked.clamp(min=1e-8).log().mean())})
    return rows


def choose_weight(table: Sequence[dict]) -> dict:
    """The row of `fusion_table` to use (see the module docstring)."""
    off = [r for r in table if r["weight"] == 0]
    on = [r for r in table if r["weight"] > 0]
    if not on:
        return off[0]
    best = max(r["accuracy"] for r in on)
    if off and off[0]["accuracy"] >= best:
        return off[0]
    return min((r for r in on if r["accuracy"] == best), key=lambda r: r["log_loss"])
