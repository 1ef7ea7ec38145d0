"""Random and magnitude pruning: the two baselines every pruning paper reports."""

from __future__ import annotations

import torch

from sketchprune.methods.registry import Context, Scores, register


@register("random", description="Random pruning: uniform random scores, so top-k keeps a uniformly random mask")
def random_scores(ctx: Context) -> Scores:
    """Uniform random scores."""
    return {n: torch.rand(p.shape, generator=ctx.generator).to(ctx.device) for n, p in ctx.params.items()}


@register("magnitude", description="Magnitude pruning: `|theta|`, optimal sketching probabilities for a linear "
                                   "layer on standardized data (SPEC 3.4)")
def magnitude(ctx: Context) -> Scores:
    """``|theta|``."""
    return {n: p.detach().abs() for n, p in ctx.params.items()}
