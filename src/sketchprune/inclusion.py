"""Poisson inclusion probabilities for a budget: the deterministic solver behind poisson draws.

Used by ``select(scheme="poisson")``, :func:`sketchprune.sketch.inclusion_probs`, ``mode="auto"``
(expected kept counts per layer) and the ``1 / pi`` rescaling of ``prune_units``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor


def inclusion_probabilities(weights: Sequence[Tensor], k: float, max_rounds: int = 200) -> Callable[[Tensor], Tensor]:
    """Solve ``sum_i pi_i = k`` for Poisson sampling with ``pi_i = min(1, lam * w_i)``.

    ``weights`` are non-negative pieces. Returns a function mapping a weight piece to its
    inclusion probabilities. If fewer than ``k`` weights are positive, every positive weight
    gets ``pi = 1`` and the rest of the budget is spread evenly over the zero weights.
    Water-filling: ``lam = (k - #capped) / (sum of uncapped w)``, repeated until the capped set
    stops growing (it only grows, so this ends; usually in a handful of rounds).
    """
    positive = sum(int((w > 0).sum().item()) for w in weights)
    total = sum(w.numel() for w in weights)
    if k >= positive:
        zeros = total - positive
        fill = (k - positive) / zeros if zeros else 0.0
        return lambda w: torch.where(w > 0, torch.ones_like(w), torch.full_like(w, min(1.0, fill)))
    cut = math.inf  # weights >= cut are capped at pi = 1
    n_cap = 0
    for _ in range(max_rounds):
        # scale the uncapped weights by a power of two near their max: lam stays <= k, never overflows
        top = max(float(w[w < cut].max().item()) if bool((w < cut).any()) else 0.0 for w in weights)
        scale = 2.0 ** math.floor(math.log2(top))
        rest = sum(float((w[w < cut].double() / scale).sum().item()) for w in weights)
        lam = (k - n_cap) / rest
        new_cut = scale / lam
        n_new = sum(int((w >= new_cut).sum().item()) for w in weights)
        if n_new == n_cap:
            break
        n_cap, cut = n_new, new_cut
        if n_cap >= k:  # the capped weights alone fill the budget
            lam = 0.0
            break

    def pi(w: Tensor) -> Tensor:
        free = (w.double() / scale * lam).clamp_(max=1.0)
        return torch.where(w >= cut, torch.ones_like(free), free).to(w.dtype)

    return pi
