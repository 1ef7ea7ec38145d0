"""Smart-ratio random tickets (Su et al., NeurIPS 2020): fixed keep ratios by depth, random within layers.

Layers ``l = 1..L`` are the prunable tensors in module order; the last is the classifier. The
classifier keeps ``smart_ratio_last`` of its weights (the paper's 0.3); layer ``l < L`` keeps a
fraction proportional to ``(L - l + 1)^2 + (L - l + 1)``, scaled so that the whole network keeps
exactly the budget (fractions above 1 are capped and the rest re-scaled). Each layer then keeps
a uniformly random set of that size.

Where the reference code (JingtongSu/sanity-checking-pruning, ``pruner/SmartRatio.py``) departs
from the paper's formula, we follow the paper: it divides layer ``j``'s ratio by ``(j+1)^2`` for
non-ResNet architectures, keeps 0.3 of *every* Linear layer, and divides by zero on a model
without convolutions. Cases it leaves open: when 0.3 of the classifier alone exceeds the budget,
the classifier keeps what the budget leaves after one weight per other layer; a one-layer model
keeps the budget in that layer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from sketchprune.config import setting
from sketchprune.budgets import capped_proportional
from sketchprune.errors import check
from sketchprune.methods.context import Context
from sketchprune.methods.registry import register


@dataclass(frozen=True)
class SmartRatioOptions:
    smart_ratio_last: float = setting(0.3, "Keep ratio of the last layer (the classifier); the paper's 0.3.")

    def validate(self) -> None:
        check(0 < self.smart_ratio_last <= 1, f"smart_ratio_last must be in (0, 1], got {self.smart_ratio_last}")


@register("smart_ratio", options=SmartRatioOptions, kind="mask",
          description="Smart-ratio random tickets (Su et al., NeurIPS 2020): keep ratios decaying as "
                      "`(L-l+1)^2 + (L-l+1)` with depth, 0.3 of the classifier, random within each layer")
def smart_ratio(ctx: Context) -> dict[str, torch.Tensor]:
    """Random masks with the smart-ratio count per layer (:func:`layer_counts`)."""
    sizes = [p.numel() for p in ctx.params.values()]
    counts = layer_counts(sizes, ctx.budget, ctx.options.smart_ratio_last)
    masks = {}
    for (name, p), k in zip(ctx.params.items(), counts):
        keep = torch.zeros(p.numel(), dtype=torch.bool)
        keep[torch.randperm(p.numel(), generator=ctx.generator)[:k]] = True
        masks[name] = keep.view(p.shape).to(p.device)
    return masks


def layer_counts(sizes: list[int], budget: int, last_ratio: float) -> list[int]:
    """Weights kept per layer: the smart ratios, summing exactly to ``budget``, at least one per
    layer when the budget allows."""
    L = len(sizes)
    if L == 1:
        return [budget]
    others = sizes[:-1]
    last = min(max(1, round(last_ratio * sizes[-1])), sizes[-1], max(1, budget - (L - 1)))
    rest = budget - last
    if rest >= sum(others):  # even dense, the other layers cannot take the rest: the classifier does
        return others + [budget - sum(others)]
    raw = [(L - l) ** 2 + (L - l) for l in range(L - 1)]  # l is 0-based: (L - l)^2 + (L - l)
    return _apportion(others, raw, rest) + [last]


def _apportion(sizes: list[int], weights: list[float], total: int) -> list[int]:
    """Integer counts ``<= sizes`` summing to ``total``, with densities proportional to ``weights``
    (capped at 1, the rest re-scaled) and rounded by largest remainder; at least 1 each if possible."""
    c, capped = capped_proportional(sizes, weights, total)
    exact = [sizes[i] if i in capped else c * weights[i] * sizes[i] for i in range(len(sizes))]
    counts = [min(sizes[i], max(1 if total >= len(sizes) else 0, math.floor(x))) for i, x in enumerate(exact)]
    short = total - sum(counts)
    order = sorted(range(len(sizes)), key=lambda i: (exact[i] - math.floor(exact[i]), -i), reverse=True)
    step = 1 if short > 0 else -1
    while short:
        movable = [i for i in order if 0 <= counts[i] + step <= sizes[i] and (step > 0 or counts[i] > 1)]
        check(bool(movable), f"cannot keep {total} weights in layers of sizes {sizes}")
        for i in movable[:abs(short)]:
            counts[i] += step
            short -= step
    return counts
