"""SynFlow (Tanaka et al., NeurIPS 2020): iterative synaptic flow, data-free, no layer collapse; its unit
form scores a unit by the flow through it."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from sketchprune.config import setting
from sketchprune.errors import check
from sketchprune.methods._conv_as_matmul import convs_as_matmuls
from sketchprune.methods.context import Context, Scores, UnitContext, make_absolute, synaptic_flow
from sketchprune.methods.registry import register, register_units
from sketchprune.unit_groups import gate_saliency


@dataclass(frozen=True)
class SynflowOptions:
    synflow_dtype: str = setting(
        "float64", "Precision of the synaptic flow: float64 never overflows on deep nets and keeps the ranking; "
                   "float32 is faster and falls back to float64 when R overflows.", choices=("float64", "float32"))


@register("synflow", options=SynflowOptions, rounds=100, copies=True,
          description="SynFlow (Tanaka et al., NeurIPS 2020): `|theta| * dR/d|theta|`, "
                      "`R = 1^T f_|theta|(1)`, data-free, iterative")
def synflow(ctx: Context) -> Scores:
    """``|theta| * dR/d|theta|`` on the model made absolute (parameters and floating buffers), eval mode.

    The model is prepared once per ``prune`` call (it is prune's copy); later rounds see it with
    the dropped weights zeroed. Float64 by default, so deep networks (ResNet-110: R ~ 1e130,
    beyond float32) neither overflow nor lose the ranking.
    """
    shape = ctx.shape()
    model = ctx.model
    if "dtype" not in ctx.memo:
        make_absolute(model.eval())
        for p in model.parameters():  # autograd computes no other parameter's gradient
            p.requires_grad_(False)
        for p in ctx.params.values():
            p.requires_grad_(True)
        ctx.memo["dtype"] = getattr(torch, ctx.options.synflow_dtype)
    while True:
        dt = ctx.memo["dtype"]
        if ctx.memo.get("model_dtype") != dt:
            model.to(dt)
            ctx.memo["model_dtype"] = dt
        R, grads = _flow_grads(ctx, shape, dt)
        if R is not None or dt == torch.float64:
            break
        ctx.memo["dtype"] = torch.float64  # float32 overflowed: this and later rounds in float64
    check(R is not None, "SynFlow's R overflowed even in float64; the model is too deep for SynFlow")
    return {n: grads[n].mul_(p.detach()) for n, p in ctx.params.items()}


def _flow_grads(ctx: Context, shape: tuple[int, ...], dtype: torch.dtype) -> tuple[Tensor | None, Scores]:
    """``R`` and ``dR/dp`` for the prunable parameters (``R`` is None when it is not finite)."""
    with convs_as_matmuls(ctx.model):
        R = synaptic_flow(ctx.model, shape, dtype)
    if not bool(torch.isfinite(R)):
        return None, {}
    params = list(ctx.params.values())
    got = torch.autograd.grad(R, params, allow_unused=True) if R.requires_grad else [None] * len(params)
    return R.detach(), {n: g if g is not None else torch.zeros_like(p) for (n, p), g in zip(ctx.params.items(), got)}


@register_units("synflow")
def synflow_units(ctx: UnitContext) -> list[Tensor]:
    """SynFlow's flow through each unit: ``|dR/dg_i|`` of a gate on the unit's output, on the absolute
    float64 network fed an all-ones input."""
    return gate_saliency(ctx.net, ctx.groups, lambda work: [synaptic_flow(work, ctx.input_shape)],
                         prepare=lambda work: make_absolute(work.double()))
