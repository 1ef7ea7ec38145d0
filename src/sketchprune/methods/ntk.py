"""NTK column norms (SPEC 3.7): pruning samples columns of the Jacobian."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

from sketchprune.config import setting
from sketchprune.errors import check
from sketchprune.methods.context import Context, Scores
from sketchprune.methods.registry import register


@dataclass(frozen=True)
class NtkOptions:
    ntk_samples: int = setting(16, "Standard Gaussian inputs used without data.")
    ntk_chunk: int = setting(64, "Inputs per vectorized Jacobian pass (memory vs speed).")

    def validate(self) -> None:
        check(self.ntk_samples >= 1 and self.ntk_chunk >= 1, "ntk_samples and ntk_chunk must be >= 1")


@register("ntk", options=NtkOptions, data="optional",
          description="NTK column norms (Bar & Giryes, SPEC 3.7): `||J[:, i]||^2` summed over a batch, "
                      "the optimal column-sampling probabilities of the kernel `J J^T`")
def ntk(ctx: Context) -> Scores:
    """``||J[:, i]||^2`` over the given data or ``ntk_samples`` random inputs (Gaussian; tokens for a token
    model), eval mode, via ``torch.func``; ``J`` has a row per output of an input (a sequence output's
    every position and feature)."""
    from torch.func import functional_call, grad, vmap

    model = ctx.model
    model.eval()
    x = ctx.inputs(ctx.options.ntk_samples)
    names = list(ctx.params)
    fixed = {k: v.detach() for k, v in model.named_parameters() if k not in ctx.params}
    fixed.update({k: v for k, v in model.named_buffers()})
    prm = {k: v.detach() for k, v in ctx.params.items()}
    outputs = model(x[:1])[0].numel()  # every output of one input: a sequence model's positions too
    scores = {k: torch.zeros_like(v) for k, v in prm.items()}
    for o in range(outputs):
        def f(p, xi, o=o):
            return functional_call(model, {**fixed, **p}, (xi.unsqueeze(0),)).reshape(1, -1)[0, o]

        for chunk in x.split(ctx.options.ntk_chunk):
            with warnings.catch_warnings():  # an op without a batching rule runs in a loop: slower, the same
                warnings.filterwarnings("ignore", message="There is a performance drop", category=UserWarning)
                per_sample = vmap(grad(f), in_dims=(None, 0))(prm, chunk)
            for k in names:
                scores[k] += (per_sample[k] ** 2).sum(0)
    return scores
