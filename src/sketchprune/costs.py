"""What a network costs: its parameters and multiply-accumulates (MACs), dense or masked.

Every run counts them (``result.json``'s ``params_fraction`` and ``macs_fraction``), and
structured pruning budgets by them (``keep_by=params`` / ``macs``).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import torch
from torch import Tensor, nn

from sketchprune.hooks import forward_hooks
from sketchprune.layers import CONV_LAYERS, weight_layers, weight_name


def costs(model: nn.Module, input_shape: tuple[int, ...], masks: dict[str, Tensor] | None = None) -> dict[str, float]:
    """Parameters and multiply-accumulates of ``model`` (with ``masks``: counting kept weights only,
    a sparse layer's MACs scaled by its density)."""
    import torch_pruning as tp

    example = torch.zeros((1, *input_shape), device=next(model.parameters()).device)
    macs, params = tp.utils.count_ops_and_params(model, example)
    if masks is None:
        return {"params": float(params), "macs": float(macs)}
    layer_macs = _layer_macs(model, example)
    named = dict(model.named_parameters())
    dropped_params = sum(m.numel() - int(m.sum()) for m in masks.values())
    dropped_macs = sum(layer_macs.get(n, 0.0) * (1 - float(m.float().mean())) for n, m in masks.items() if n in named)
    return {"params": float(params - dropped_params), "macs": float(macs - dropped_macs)}


def cost_fractions(pruned: dict[str, float], dense: dict[str, float]) -> dict[str, float]:
    """``params_fraction`` and ``macs_fraction``: the costs of ``pruned`` over those of ``dense``."""
    return {"params_fraction": pruned["params"] / dense["params"], "macs_fraction": pruned["macs"] / dense["macs"]}


def _layer_macs(model: nn.Module, example: Tensor, per_module: bool = False) -> dict:
    """Multiply-accumulates of each Linear/Conv layer on ``example``, by parameter name (``.weight``)
    or by module."""
    macs: dict[Any, float] = {}

    def count(module, inputs, output) -> None:
        w = module.weight
        positions = output[0, 0].numel() if isinstance(module, CONV_LAYERS) else 1
        macs[module] = float(w.numel() * positions)

    with forward_hooks(weight_layers(model), count), torch.no_grad():
        model(example)
    if per_module:
        return defaultdict(float, macs)
    names = {m: n for n, m in model.named_modules()}
    return {weight_name(names[m]): v for m, v in macs.items()}


__all__ = ["cost_fractions", "costs"]
