"""LAMP (Lee et al., ICLR 2021, "Layer-adaptive sparsity for the magnitude-based pruning").

Each weight's score is its squared magnitude over the squared magnitudes of the weights of its
layer that are at least as large: ``w_u^2 / sum_{v >= u} w_v^2``, with the layer's weights sorted
by magnitude (ties in flat-index order). The largest weight of every layer scores 1, so a global
top-k never empties a layer; the per-layer densities follow from the scores, no hyper-parameter.
Checked against jaeho-lee/layer-adaptive-sparsity (``tools/pruners.py``, ``_normalize_scores`` and
``_compute_lamp_amounts``, commit f9fa4f3): the same score, the squared weight over the sum of the
squares from it up in ascending order. Where we depart: the reference turns the scores into a
per-layer amount (weights with a score ``>=`` the global threshold, so ties can keep more than the
budget) and then prunes each layer by magnitude; ours keeps the exact global top-k of the scores
(the same layers' counts but for ties), computed in float64, and equal weights are ordered by flat
index (the reference's unstable sort leaves their order open).
"""

from __future__ import annotations

import torch

from sketchprune.methods.context import Context, Scores
from sketchprune.methods.registry import register


@register("lamp", description="LAMP (Lee et al., ICLR 2021): `w_u^2 / sum_{|w_v| >= |w_u|} w_v^2` per layer, "
                              "a global top-k that keeps every layer's largest weights")
def lamp(ctx: Context) -> Scores:
    """``w_u^2 / sum_{v >= u} w_v^2`` within each layer (sorted by magnitude, ascending)."""
    scores = {}
    for name, p in ctx.params.items():
        sq = p.detach().reshape(-1).double().pow(2)
        order = torch.sort(sq, stable=True).indices  # ascending; equal weights in flat-index order
        tail = sq[order].flip(0).cumsum(0).flip(0)  # sum of the squares from this weight up
        score = torch.empty_like(sq)
        score[order] = sq[order] / tail.clamp_min(torch.finfo(torch.float64).tiny)
        scores[name] = score.view(p.shape)
    return scores
