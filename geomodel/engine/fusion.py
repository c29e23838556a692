"""Matching only where it helps: the fusion weight of head and local matching, chosen on validation.

`fit` scores the validation photos with the head alone and with matching against the
training photos' gallery, then tries every candidate weight (0 = matching off) and keeps the
most accurate on validation; among weights that tie on accuracy, the head alone included,
the one whose fused probabilities have the lowest log loss. Weight 0 means no gallery is
stored and prediction costs only the trunk and the heads.

Why the log loss breaks ties, and not a preference for the head alone (the first rule: matching
had to beat the head by a photo): validation splits of small collections hold a few photos per
region (17 on average in the study below, 26 on the campus), where accuracy moves in steps of
one photo and weights often tie; the log loss weighs how much probability every photo's true
region gets, so it separates them. Measured on the campus *training* photos only (8 random 70/30
splits of the 173; the fixed split's test photos were not used), the whole `cpu-small` region
stage on each 70 %, scored on each 30 % (408 predictions in all): the first rule 39.7 %, this
one 41.2 % (on two splits the first rule had turned matching off on a tie with the head, and
this one gains 3 of 51 photos on each; elsewhere the two agree). The lowest log loss alone scored 41.4 % there, but it is not a rule to
keep: on a synthetic collection of 650 photos it chose weight 0.4, at 86.5 % validation accuracy
against 89.6 % for the head alone (the matching probabilities are sharper than the head's, so
mixing them in lowers the log loss before it stops costing accuracy). Accuracy first means the
chosen weight is never less accurate on validation than the head alone. (A fixed weight of 0.7,
chosen on nothing, scored 42.4 % on the 8 splits, the head alone 28.7 %: on such small
splits any choice is noisy.)
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
    """The row of `fusion_table` to use: the most accurate; among ties the lowest log loss, then the smaller
    weight (see the module docstring)."""
    best = max(r["accuracy"] for r in table)
    return min((r for r in table if r["accuracy"] == best), key=lambda r: (r["log_loss"], r["weight"]))


def reported_weights(candidates: Sequence[float]) -> list[float]:
    """The weights `fit` scores on validation: the candidates and always 0, so that the head alone
    is reported (and can be compared) even when matching is kept on."""
    return sorted({0.0, *map(float, candidates)})
