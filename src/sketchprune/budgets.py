"""How many weights each layer keeps: scopes (distributions over layers) and round schedules.

Small separate pieces, as jaxpruner keeps its ``sparsity_distributions`` and ``sparsity_schedules``:
:func:`budgets` turns a density into counts under a scope (one global count, the same density in
each layer, or Erdős–Rényi-kernel densities), :func:`round_densities` spreads a density over
pruning rounds, and :func:`capped_proportional` is the allocation both ERK and smart-ratio use.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from torch import Tensor

from sketchprune.errors import check
from sketchprune import selection
from sketchprune.selection import budget

SCOPES = (*selection.SCOPES, "erk")
SCHEDULES = ("exponential", "linear")

Budget = int | dict[str, int]
"""Weights to keep: one count over all layers (global scope) or one per layer."""


def capped_proportional(sizes: Sequence[int], weights: Sequence[float], total: float) -> tuple[float, set[int]]:
    """The scale ``c`` with ``sum_i min(1, c * w_i) * n_i = total``: densities proportional to
    ``weights``, capped at 1 and the rest re-scaled. Returns ``(c, the capped indices)``."""
    capped: set[int] = set()
    while True:
        free = [i for i in range(len(sizes)) if i not in capped]
        if not free:  # every share is capped: all dense (density 1)
            return 1.0, capped
        left = total - sum(sizes[i] for i in capped)
        c = left / sum(weights[i] * sizes[i] for i in free)
        over = [i for i in free if c * weights[i] > 1]
        if not over:
            return c, capped
        capped.update(over)


def round_densities(density: float, iterations: int, schedule: str) -> list[float]:
    """Density after each of ``iterations`` rounds, ending at ``density``."""
    check(schedule in SCHEDULES, f"unknown schedule {schedule!r}; use {' or '.join(SCHEDULES)}")
    r = range(1, iterations + 1)
    if schedule == "exponential":
        return [density ** (i / iterations) for i in r]
    return [1 - (1 - density) * i / iterations for i in r]


def erk_densities(shapes: Mapping[str, Sequence[int]], density: float) -> dict[str, float]:
    """Erdős–Rényi-kernel per-layer densities (Evci et al. 2020) with the overall ``density``.

    ``d_l ∝ sum(shape_l) / prod(shape_l)``, scaled to hit the budget; layers that would exceed 1
    are made dense and the rest re-scaled.
    """
    names = [n for n in shapes if math.prod(shapes[n])]  # an empty layer keeps nothing: density 1 of 0
    sizes = [math.prod(shapes[n]) for n in names]
    raw = [sum(shapes[n]) / math.prod(shapes[n]) for n in names]
    eps, dense = capped_proportional(sizes, raw, density * sum(sizes))
    out = {n: 1.0 if i in dense else eps * raw[i] for i, n in enumerate(names)}
    return {n: out.get(n, 1.0) for n in shapes}


def budgets(params: Mapping[str, Tensor], density: float, scope: str) -> Budget:
    """What ``density`` keeps under ``scope``; a layer budget keeps at least one weight per layer."""
    if scope == "global":
        return budget(density, sum(p.numel() for p in params.values()))
    dens = (erk_densities({n: tuple(p.shape) for n, p in params.items()}, density) if scope == "erk"
            else {n: density for n in params})
    return {n: max(1, budget(dens[n], p.numel())) if p.numel() else 0 for n, p in params.items()}
