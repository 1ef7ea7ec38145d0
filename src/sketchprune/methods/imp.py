"""Iterative magnitude pruning with weight rewinding: the lottery-ticket baseline PaI is judged against.

Frankle & Carbin (ICLR 2019) and Frankle et al. (ICML 2020, linear mode connectivity): train the
network, prune ``imp_fraction`` of the remaining weights by global magnitude, rewind the survivors
to their values at step ``imp_rewind_steps`` (0: to initialization, the original lottery ticket),
and repeat until the density is reached. The pruned network is then trained from the rewound
weights (the :class:`Built` result's ``start_state``). It trains with our loop (``ctx.trainer``), one checkpointed
folder per level, so a killed run resumes at the level and epoch where it stopped.

Checked against facebookresearch/open_lth (``pruning/sparse_global.py`` and ``lottery/runner.py``,
commit on the default branch): global magnitude over the unpruned weights, 20 % per level, each
level trained from the rewind point with the current mask. Where we depart: OpenLTH prunes exactly
``ceil(0.2 * remaining)`` per level and so reaches the densities 0.8^L; ours runs
``L = ceil(log(density) / log(1 - imp_fraction))`` levels at densities ``density^(l/L)`` (each
level prunes at most ``imp_fraction``) and ends exactly at the density asked for. OpenLTH
continues a rewound level's learning-rate schedule from step k; ours restarts it (the same for
``imp_rewind_steps=0``, and a few hundred steps of warm schedule otherwise).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from sketchprune.config import setting
from sketchprune.errors import check
from sketchprune.methods.context import Built, Context, state_copy
from sketchprune.methods.registry import register


@dataclass(frozen=True)
class ImpOptions:
    imp_fraction: float = setting(0.2, "Fraction of the remaining weights pruned at each level.")
    imp_rewind_steps: int = setting(0, "Rewind the survivors to their values after this many optimizer steps of "
                                       "the dense training (0: to initialization).")
    imp_epochs: int = setting(0, "Training epochs of each level (0: the run's epochs).")

    def validate(self) -> None:
        check(0 < self.imp_fraction < 1, f"imp_fraction must be in (0, 1), got {self.imp_fraction}")
        check(self.imp_rewind_steps >= 0 and self.imp_epochs >= 0, "imp_rewind_steps and imp_epochs must be >= 0")


@register("imp", options=ImpOptions, kind="train", copies=True,
          description="IMP (Frankle & Carbin, ICLR 2019; Frankle et al., ICML 2020): train, prune 20 % of the "
                      "remaining weights by magnitude, rewind to step k, repeat")
def imp(ctx: Context) -> Built:
    """Lottery-ticket masks by iterative magnitude pruning with rewinding (see the module docstring)."""
    from sketchprune.masks import Masks
    from sketchprune.selection import budget

    o: ImpOptions = ctx.options
    model = ctx.model
    levels = imp_levels(ctx.density, o.imp_fraction)
    total = sum(p.numel() for p in ctx.params.values())
    init = state_copy(model)
    rewind = init
    mask = {n: torch.ones(p.shape, dtype=torch.bool, device=p.device) for n, p in ctx.params.items()}
    for level in range(levels):
        model.load_state_dict(rewind)
        snapshot = o.imp_rewind_steps if level == 0 and o.imp_rewind_steps > 0 else None
        result = ctx.trainer(model, Masks(mask), f"imp-level-{level}", epochs=o.imp_epochs or None,
                             snapshot_step=snapshot)
        if snapshot is not None:
            check(result["snapshot"] is not None, f"imp_rewind_steps={snapshot} is beyond the training of a level; "
                                                  "lower it or train longer")
            rewind = result["snapshot"]
        kept = budget(ctx.density ** ((level + 1) / levels), total)
        mask = _largest_magnitudes(ctx, mask, kept)
    return Built(mask, start_state=rewind)


MAX_LEVELS = 1_000
"""The most levels (each a whole training) an IMP run takes; more is a typo in ``imp_fraction``."""


def imp_levels(density: float, fraction: float) -> int:
    """How many levels, each pruning at most ``fraction`` of the remaining weights, reach ``density``."""
    per_level = math.log(1 - fraction)  # 0 when 1 - fraction rounds to 1: no level would prune
    levels = max(1, math.ceil(math.log(density) / per_level)) if per_level < 0 else math.inf
    check(levels <= MAX_LEVELS, f"imp_fraction={fraction} needs {levels} levels to reach density {density:g} "
                                f"(at most {MAX_LEVELS}, each a whole training); raise imp_fraction")
    return int(levels)


def _largest_magnitudes(ctx: Context, mask: dict[str, Tensor], kept: int) -> dict[str, Tensor]:
    """The ``kept`` largest trained magnitudes among the surviving weights (global)."""
    from sketchprune.selection import select

    scores = {n: p.detach().abs().masked_fill(~mask[n], -1.0) for n, p in ctx.params.items()}  # pruned rank last
    return select(scores, kept / sum(s.numel() for s in scores.values()))  # type: ignore[return-value]
