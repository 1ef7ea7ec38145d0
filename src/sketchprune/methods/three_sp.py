"""3SP (van Amersfoort et al., 2020, "Single Shot Structured Pruning Before Training"): a unit method.

A unit's score is the SNIP-style saliency ``|sum g * dL/dg|`` of a gate ``g = 1`` on its output,
summed over the data, divided by the multiply-accumulates the unit costs: its "sensitivity per
FLOP removed", so cheap units with the same saliency are kept first.
"""

from __future__ import annotations

import torch
from torch import Tensor

from sketchprune.costs import _layer_macs
from sketchprune.losses import task_loss
from sketchprune.methods.context import UnitContext
from sketchprune.methods.registry import register_units
from sketchprune.unit_groups import gate_saliency, reduce


@register_units("3sp", data="required",
                description="3SP (van Amersfoort et al. 2020): the saliency `|dL/dg|` of a gate on each unit's "
                            "output, per multiply-accumulate the unit costs")
def three_sp_units(ctx: UnitContext) -> list[Tensor]:
    """Gate saliency of each unit on the data, per MAC of the unit."""
    batches = ctx.batches()
    scores = gate_saliency(ctx.net, ctx.groups,
                           lambda work: (task_loss(work(x), y, reduction="sum") for x, y in batches))
    example = torch.zeros((1, *ctx.input_shape), device=ctx.device)
    macs = _layer_macs(ctx.net, example, per_module=True)
    for g, s in zip(ctx.groups, scores):
        cost = reduce(g, lambda layer, idxs, out: torch.full(
            (len(idxs),), macs[layer] / (layer.weight.shape[0] if out else layer.weight.shape[1])))
        s.div_(cost.clamp_min(1.0))
    return scores
