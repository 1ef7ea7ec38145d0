"""Unit groups from Torch-Pruning's dependency graph, and the reductions unit scores are made of.

A group is the set of layers that must lose the same units together (a layer's output channels,
the batch norm after it, the next layer's input channels, residual additions). Its *root units*
are the units of its first layer; a unit score has one entry per root unit. Unit methods
(``register_units``) and ``prune_units`` share these helpers.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn

from sketchprune.hooks import forward_hooks
from sketchprune.layers import WEIGHT_LAYERS


def _handlers() -> tuple[tuple, tuple]:
    import torch_pruning as tp

    return ((tp.prune_conv_out_channels, tp.prune_linear_out_channels),
            (tp.prune_conv_in_channels, tp.prune_linear_in_channels))


def units(group) -> int:
    """The number of root units of ``group``."""
    return len(group[0].root_idxs)


def is_output_side(dep) -> bool:
    """The dependency removes the layer's output units (not its inputs)."""
    return dep.handler in _handlers()[0]


def is_input_side(dep) -> bool:
    """The dependency removes the layer's input units."""
    return dep.handler in _handlers()[1]


def reduce(group, per_layer: Callable[[nn.Module, list[int], bool], Tensor | None]) -> Tensor:
    """Sum over the group's Linear/Conv layers of ``per_layer(layer, local_idxs, is_output_side)``,
    by root unit (float64); ``per_layer`` returns None to skip a layer."""
    total = torch.zeros(units(group), dtype=torch.float64)
    out_handlers, in_handlers = _handlers()
    for i, (dep, idxs) in enumerate(group):
        layer = dep.target.module
        if not isinstance(layer, WEIGHT_LAYERS):
            continue
        out_side, in_side = dep.handler in out_handlers, dep.handler in in_handlers
        if not (out_side or in_side):
            continue
        values = per_layer(layer, list(idxs), out_side)
        if values is not None:
            total.scatter_add_(0, torch.tensor(group[i].root_idxs), values.double().cpu())
    return total


def channel_sum(t: Tensor, layer: nn.Module | None = None) -> Tensor:
    """``t`` (a ``layer``'s input or output) summed over the batch and positions, in float64: one value
    per channel (dim 1), or per feature (the last dim) for a Linear layer that sees a sequence."""
    if isinstance(layer, nn.Linear) and t.dim() > 2:
        return t.double().reshape(-1, t.shape[-1]).sum(0)
    return t.double().sum([0, *range(2, t.dim())])


def gate_saliency(net: nn.Module, groups: list, objective: Callable[[nn.Module], Iterable[Tensor]],
                  prepare: Callable[[nn.Module], nn.Module] = lambda m: m) -> list[Tensor]:
    """``|sum g * d objective / dg|`` of a gate ``g = 1`` on each root unit's output, per group.

    ``objective(work)`` yields the scalars to differentiate (one per batch, summed) on a copy of
    ``net`` made by ``prepare`` (e.g. SynFlow's absolute float64 network). ``net`` is not changed.
    """
    work = prepare(copy.deepcopy(net))
    mods = dict(zip(net.modules(), work.modules()))
    saliency: dict[nn.Module, Tensor] = {}
    outs: dict[nn.Module, Tensor] = {}

    def keep_output(module, inputs, output) -> None:
        output.retain_grad()
        outs[module] = output

    roots = {mods[dep.target.module] for g in groups for dep, _ in g if is_output_side(dep)}
    with forward_hooks(roots, keep_output):
        for value in objective(work):
            value.backward()
            for m, o in outs.items():  # sum g * dL/dg of a gate on each output unit, g = 1
                saliency[m] = saliency.get(m, 0) + channel_sum(o.detach() * o.grad, m)
    return [reduce(g, lambda layer, idxs, out: saliency[mods[layer]].abs().cpu()[idxs] if out else None)
            for g in groups]
