"""Matching only where it helps: the fusion weight of head and local matching, chosen on validation.

`fit` scores the validation photos with the head alone and with matching against the
training photos' gallery, then tries every candidate weight (0 = matching off) and keeps
the one whose fused probabilities have the lowest log loss on validation (ties: the smaller
weight). Weight 0 means no gallery is stored and prediction costs only the trunk and the heads.

Why log loss and not accuracy: validation splits of small collections hold a few photos per
region (17 on average in the study below, 26 on the campus), where accuracy moves in steps of
one photo, many weights tie and the most accurate one is mostly chance. The log loss weighs
how much probability every photo's true region gets, so it separates the weights with the
same photos. Measured on the campus *training* photos only (8 random 70/30 splits of the 173;
the fixed split's test photos were not used), the whole `cpu-small` region stage on each
70 %, scored on each 30 % (408 predictions in all): the most accurate weight on validation,
matching kept only when it beat the head alone by a photo and ties broken by log loss (the
previous rule), 39.7 %; the lowest log loss 41.4 %; the most accurate with ties broken by log
loss, 0 included, 41.2 %. (A fixed weight of 0.7, chosen on nothing, scored 42.4 %, the head
alone 28.7 %: on such splits any choice is noisy.)
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
    """The row of `fusion_table` to use: the lowest validation log loss (see the module docstring)."""
    return min(table, key=lambda r: (r["log_loss"], r["weight"]))


def reported_weights(candidates: Sequence[float]) -> list[float]:
    """The weights `fit` scores on validation: the candidates and always 0, so that the head alone
    is reported (and can be compared) even when matching is kept on."""
    return sorted({0.0, *map(float, candidates)})
