"""SynFlow (Tanaka et al., NeurIPS 2020): iterative synaptic flow, data-free, no layer collapse."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from sketchprune.config import setting
from sketchprune.errors import check
from sketchprune.matmul_conv import convs_as_matmuls
from sketchprune.methods.registry import Context, Scores, make_absolute, register


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
    if "dtype" not in ctx.state:
        make_absolute(model.eval())
        for p in model.parameters():  # autograd computes no other parameter's gradient
            p.requires_grad_(False)
        for p in ctx.params.values():
            p.requires_grad_(True)
        ctx.state["dtype"] = getattr(torch, ctx.options.synflow_dtype)
    while True:
        dt = ctx.state["dtype"]
        if ctx.state.get("model_dtype") != dt:
            model.to(dt)
            ctx.state["model_dtype"] = dt
        R, grads = _flow_grads(ctx, torch.ones((1, *shape), dtype=dt, device=ctx.device))
        if R is not None or dt == torch.float64:
            break
        ctx.state["dtype"] = torch.float64  # float32 overflowed: this and later rounds in float64
    check(R is not None, "SynFlow's R overflowed even in float64; the model is too deep for SynFlow")
    return {n: grads[n].mul_(p.detach()) for n, p in ctx.params.items()}


def _flow_grads(ctx: Context, ones: Tensor) -> tuple[Tensor | None, Scores]:
    """``R`` and ``dR/dp`` for the prunable parameters (``R`` is None when it is not finite)."""
    with convs_as_matmuls(ctx.model):
        R = ctx.model(ones).sum()
    if not bool(torch.isfinite(R)):
        return None, {}
    params = list(ctx.params.values())
    got = torch.autograd.grad(R, params, allow_unused=True) if R.requires_grad else [None] * len(params)
    return R.detach(), {n: g if g is not None else torch.zeros_like(p) for (n, p), g in zip(ctx.params.items(), got)}
