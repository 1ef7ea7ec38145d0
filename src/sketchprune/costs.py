"""What a network costs: its parameters and multiply-accumulates (MACs), dense or masked.

Every run counts them (``result.json``'s ``params_fraction`` and ``macs_fraction``), and
structured pruning budgets by them (``keep_by=params`` / ``macs``).
"""

from __future__ import annotations

import inspect
from collections import defaultdict
from typing import Any

import torch
from torch import Tensor, nn

from sketchprune.hooks import forward_hooks
from sketchprune.layers import ATTENTION_LAYERS, CONV_LAYERS, example_input, weight_layers, weight_name


def costs(model: nn.Module, input_shape: tuple[int, ...], masks: dict[str, Tensor] | None = None) -> dict[str, float]:
    """Parameters and multiply-accumulates of ``model`` (with ``masks``: counting kept weights only,
    a sparse layer's MACs scaled by its density)."""
    import torch_pruning as tp

    from sketchprune.pruning.state import math_attention

    example = example_input(model, input_shape, next(model.parameters()).device)
    with math_attention():  # attention layers run their submodules (no fused fast path)
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
    """Multiply-accumulates of each Linear/Conv layer and attention projection on ``example`` (one
    input), by parameter name or by module (an attention layer's input projections under the
    attention module)."""
    macs: dict[Any, float] = {}
    by_name: dict[str, float] = {}
    names = {m: n for n, m in model.named_modules()}

    def count(module, inputs, output) -> None:
        w = module.weight
        if isinstance(module, CONV_LAYERS):
            positions = output[0, 0].numel()
        else:  # a Linear: once per position of a sequence (once for a vector)
            positions = output[0].numel() // w.shape[0]
        macs[module] = float(w.numel() * positions)
        by_name[weight_name(names[module])] = macs[module]

    def count_attention(module, args, kwargs, output) -> None:
        # the projections of q, k and v run once per position of the query, key and value; the output
        # projection (a Linear that the attention applies as a tensor) once per query position
        a = inspect.signature(type(module).forward).bind(module, *args, **kwargs).arguments
        query, key, value = (a[k] for k in ("query", "key", "value"))
        positions = [t.numel() // t.shape[-1] for t in (query, key, value)]
        E, mname = module.embed_dim, names[module]
        inputs = [(f"{mname}.in_proj_weight", module.in_proj_weight)] * 3 if module._qkv_same_embed_dim else [
            (f"{mname}.{k}", getattr(module, k)) for k in ("q_proj_weight", "k_proj_weight", "v_proj_weight")]
        for (name, w), n in zip(inputs, positions):
            by_name[name] = by_name.get(name, 0.0) + float(E * (w.shape[1]) * n)
        macs[module] = sum(float(E * w.shape[1] * n) for (_, w), n in zip(inputs, positions))
        macs[module.out_proj] = float(module.out_proj.weight.numel() * positions[0])
        by_name[f"{mname}.out_proj.weight"] = macs[module.out_proj]

    attention = [m for m in model.modules() if isinstance(m, ATTENTION_LAYERS)]
    handles = [m.register_forward_hook(count_attention, with_kwargs=True) for m in attention]
    try:
        with forward_hooks(weight_layers(model), count), torch.no_grad():
            model(example)
    finally:
        for h in handles:
            h.remove()
    if per_module:
        return defaultdict(float, macs)
    return by_name


__all__ = ["cost_fractions", "costs"]
