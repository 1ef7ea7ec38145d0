"""Random and magnitude pruning: the two baselines every pruning paper reports (random has a unit form
too), and L1 filter pruning, the magnitude baseline for units."""

from __future__ import annotations

import torch
from torch import Tensor

from sketchprune.methods.context import Context, Scores, UnitContext
from sketchprune.methods.registry import register, register_units
from sketchprune.unit_groups import reduce, units


@register("random", description="Random pruning: uniform random scores, so top-k keeps a uniformly random mask")
def random_scores(ctx: Context) -> Scores:
    """Uniform random scores."""
    return {n: torch.rand(p.shape, generator=ctx.generator).to(ctx.device) for n, p in ctx.params.items()}


@register("magnitude", description="Magnitude pruning: `|theta|`, optimal sketching probabilities for a linear "
                                   "layer on standardized data (SPEC 3.4)")
def magnitude(ctx: Context) -> Scores:
    """``|theta|``."""
    return {n: p.detach().abs() for n, p in ctx.params.items()}


@register_units("random")
def random_units(ctx: UnitContext) -> list[Tensor]:
    """Uniform random unit scores."""
    return [torch.rand(units(g), generator=ctx.generator, dtype=torch.float64) for g in ctx.groups]


@register_units("l1", description="L1 filter norm (Li et al., ICLR 2017): the L1 norm of each unit's filter")
def l1_units(ctx: UnitContext) -> list[Tensor]:
    """The L1 norm of each root unit's outgoing filter (its layer's weight row)."""
    return [reduce(g, lambda layer, idxs, out: layer.weight.detach().abs().reshape(layer.weight.shape[0], -1)
                   .sum(1)[idxs].double() if out else None) for g in ctx.groups]
