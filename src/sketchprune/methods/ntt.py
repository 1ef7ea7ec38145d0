"""Neural tangent transfer (Liu & Zenke, ICML 2020, "Finding trainable sparse networks through neural
tangent transfer"), as a mask over frozen weights.

A score per prunable weight, the mask the top-k ``|score|`` of each layer (straight-through
gradients, as edge-popup), trained so that the sparse network matches the dense one on data
inputs (no labels): its outputs and its neural tangent kernel. Each step draws ``ntt_batch``
inputs, splits them in halves ``x1, x2`` and minimizes

    ||f_s(x) - f_d(x)||^2 / ||f_d(x)||^2  +  ntt_kernel_weight * ||K_s(x1, x2) - K_d(x1, x2)||^2 / ||K_d||^2

where ``K`` is the empirical NTK (Jacobians with respect to every parameter; a pruned weight is
no parameter of the sparse network, so its Jacobian entries are masked). The scores start at
``|w|``, so the first mask is layer-wise magnitude pruning, the reference's starting mask. The
kept counts per layer sum to exactly the budget.

Compared with fmi-basel/neural-tangent-transfer at commit 238afd81ea6d351c0acb96f4e815d02f9a071f4f
(``nt_transfer/ntt.py``: ``nt_transfer_loss``, ``kernel_dist_target_dist_l2_loss``, ``optimize``).
What agrees: the teacher is the dense network at initialization, the loss is the output distance
plus a weighted NTK distance on two halves of a batch of inputs, the initial mask is layer-wise
magnitude. Where we depart: the reference trains the student's *weights* (with an L2 penalty) and
re-derives the mask by weight magnitude every 100 steps; ours keeps the weights as drawn and trains
the mask through the straight-through estimator, as the strong-ticket methods do. Both distances
are divided by the teacher's squared norms (the reference divides by the number of entries and
weighs the kernel term by 1e-3), so the weight is free of the network's scale.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from sketchprune.config import setting
from sketchprune.errors import check
from sketchprune.methods.context import Context
from sketchprune.methods.edge_popup import Supermask, layer_budgets
from sketchprune.methods.registry import register


def ntk(model: nn.Module, params: Mapping[str, Tensor], x1: Tensor, x2: Tensor,
        masks: Mapping[str, Tensor] | None = None) -> Tensor:
    """The empirical NTK ``J(x1) J(x2)^T`` of ``model`` at ``params`` (every parameter of the model:
    the given ones replace the model's), shape ``(len(x1) * outputs, len(x2) * outputs)``. With
    ``masks``, the Jacobian entries of those tensors are multiplied by them (pruned weights are no
    parameters). Differentiable with respect to ``params`` and ``masks``."""
    from torch.func import functional_call, jacrev, vmap

    full = {**dict(model.named_parameters()), **params}

    def f(p: dict[str, Tensor], x: Tensor) -> Tensor:
        return functional_call(model, p, (x.unsqueeze(0),)).squeeze(0)

    def jac(x: Tensor) -> dict[str, Tensor]:
        return vmap(jacrev(f), in_dims=(None, 0))(full, x)

    j1, j2 = jac(x1), jac(x2)
    kernel = None
    for n in full:
        a, b = j1[n], j2[n]  # (batch, outputs, *shape)
        if masks is not None and n in masks:
            a, b = a * masks[n], b * masks[n]
        term = a.reshape(a.shape[0] * a.shape[1], -1) @ b.reshape(b.shape[0] * b.shape[1], -1).T
        kernel = term if kernel is None else kernel + term
    assert kernel is not None
    return kernel


@dataclass
class TransferStep:
    """One step of :func:`transfer`: the two distances (relative to the teacher's norms)."""

    output: float
    kernel: float


def transfer(model: nn.Module, params: Mapping[str, nn.Parameter], inputs: Tensor, counts: Mapping[str, int], *,
             steps: int, lr: float, kernel_weight: float, batch: int, generator: torch.Generator
             ) -> tuple[dict[str, Tensor], list[TransferStep]]:
    """Train the masks of ``params`` (``counts[name]`` kept each) so the sparse ``model`` matches the
    dense one on ``inputs`` (see the module docstring). Returns the bool masks and, per step, the
    output and kernel distances measured before that step's update. The weights are not changed."""
    names = list(params)
    dense = {n: p.detach().clone() for n, p in model.named_parameters()}
    scores = {n: params[n].detach().abs().clone() for n in names}
    work = Supermask(model, names, counts, scores)  # freezes the model's parameters
    opt = torch.optim.Adam(work.scores.parameters(), lr=lr)
    history: list[TransferStep] = []
    was = model.training
    model.eval()
    try:
        for _ in range(steps):
            idx = torch.randperm(len(inputs), generator=generator)[:batch].to(inputs.device)
            x = inputs[idx]
            x1, x2 = x[: len(x) // 2], x[len(x) // 2:]
            with torch.no_grad():
                f_d = model(x)
                k_d = ntk(model, dense, x1, x2)
            masks = work.relaxed_masks()
            sparse = {n: dense[n] * masks[n] for n in names}
            from torch.func import functional_call

            f_s = functional_call(model, sparse, (x,))
            k_s = ntk(model, sparse, x1, x2, masks)
            out_dist = (f_s - f_d).pow(2).sum() / f_d.pow(2).sum().clamp_min(1e-30)
            ker_dist = (k_s - k_d).pow(2).sum() / k_d.pow(2).sum().clamp_min(1e-30)
            history.append(TransferStep(float(out_dist.detach()), float(ker_dist.detach())))
            opt.zero_grad(set_to_none=True)
            (out_dist + kernel_weight * ker_dist).backward()
            opt.step()
    finally:
        model.train(was)
    return work.masks(), history


@dataclass(frozen=True)
class NttOptions:
    ntt_steps: int = setting(200, "Optimizer steps of the transfer.")
    ntt_lr: float = setting(1e-3, "Adam learning rate of the scores (they start at |w|).")
    ntt_kernel_weight: float = setting(1.0, "Weight of the (relative) NTK distance against the output distance.")
    ntt_batch: int = setting(32, "Inputs per step, split in halves for the kernel K(x1, x2).")

    def validate(self) -> None:
        check(self.ntt_steps >= 0, f"ntt_steps must be >= 0, got {self.ntt_steps}")
        check(self.ntt_lr > 0 and math.isfinite(self.ntt_lr), f"ntt_lr must be a positive number, got {self.ntt_lr}")
        check(self.ntt_kernel_weight >= 0, f"ntt_kernel_weight must be >= 0, got {self.ntt_kernel_weight}")
        check(self.ntt_batch >= 2, f"ntt_batch must be >= 2 (two halves), got {self.ntt_batch}")


@register("ntt", options=NttOptions, kind="mask", data="required", copies=True,
          description="NTT (Liu & Zenke, ICML 2020): a mask over the frozen weights trained (straight-through) so "
                      "the sparse network's outputs and NTK on data match the dense one's")
def ntt(ctx: Context) -> dict[str, Tensor]:
    """Neural tangent transfer of the mask (see the module docstring)."""
    o: NttOptions = ctx.options
    inputs = torch.cat([x for x, _ in ctx.batches()])
    check(len(inputs) >= 2, "ntt needs at least 2 data inputs (two halves for the kernel)")
    counts = layer_budgets({n: p.numel() for n, p in ctx.params.items()}, ctx.budget)
    masks, _ = transfer(ctx.model, ctx.params, inputs, counts, steps=o.ntt_steps, lr=o.ntt_lr,
                        kernel_weight=o.ntt_kernel_weight, batch=o.ntt_batch, generator=ctx.generator)
    return masks
