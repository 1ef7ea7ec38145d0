"""GraSP (Wang et al., ICLR 2020): keep the weights whose removal least reduces gradient flow."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from sketchprune.config import setting
from sketchprune.errors import check
from sketchprune.losses import task_loss
from sketchprune.methods.context import Context, Scores, clear_grads, grad_or_zeros
from sketchprune.methods.registry import register


@dataclass(frozen=True)
class GraspOptions:
    grasp_temperature: float = setting(200.0, "Softmax temperature T of the GraSP loss (the paper's 200).")
    grasp_chunk: int | None = setting(None, "Split batches into micro-batches of this size: less memory, one "
                                            "more forward/backward per extra micro-batch (default: whole batches).")

    def validate(self) -> None:
        check(self.grasp_temperature > 0, f"grasp_temperature must be > 0, got {self.grasp_temperature}")
        check(self.grasp_chunk is None or self.grasp_chunk >= 1,
              f"grasp_chunk must be an integer >= 1, got {self.grasp_chunk!r}")


@register("grasp", options=GraspOptions, data="required", signed=True,
          description="GraSP (Wang et al., ICLR 2020): `theta * (H g)`, signed, higher = keep")
def grasp(ctx: Context) -> Scores:
    """``theta * (H g)``: Wang et al. remove the largest ``-theta * Hg``, i.e. keep the largest ``theta * Hg``.

    ``g`` is the loss gradient at temperature T and ``Hg`` a Hessian-gradient product by double
    backward, summed over the batches. The last batch's differentiable gradient also completes
    ``g``, so one batch costs one forward and one double backward. Micro-batches
    (``grasp_chunk``) are exact in eval mode, where samples do not interact.
    """
    opts: GraspOptions = ctx.options
    params = list(ctx.params.values())
    batches = ctx.batches()
    if opts.grasp_chunk is not None:
        c = opts.grasp_chunk
        batches = [(xc, yc) for x, y in batches for xc, yc in zip(x.split(c), y.split(c))]

    def loss(x: Tensor, y: Tensor) -> Tensor:  # the data's loss; regression too at T, as PlantNSeek's GraSP
        return task_loss(ctx.model(x) / opts.grasp_temperature, y, reduction="sum")

    def add_hessian_times_g(x: Tensor, y: Tensor, g: list[Tensor] | None) -> list[Tensor]:
        """``.grad += d(g . grad_b)/dtheta`` for batch b; ``g=None``: g is this batch's gradient
        plus what ``.grad`` holds (returned). The differentiable gradient is dropped before the
        double backward, so only its graph stays alive."""
        gb = torch.autograd.grad(loss(x, y), params, create_graph=True, allow_unused=True)
        if g is None:  # g = the other batches' gradients (in .grad) + this one's
            g = [_plus(p.grad, t.detach() if t is not None else None, p) for p, t in zip(params, gb)]
            clear_grads(params)
        z = sum((a * b).sum() for a, b in zip(g, gb) if b is not None and b.requires_grad)
        del gb
        if isinstance(z, Tensor):
            z.backward(inputs=params)
        return g

    clear_grads(params)
    for x, y in batches[:-1]:  # g of all batches but the last, accumulated in .grad
        loss(x, y).backward(inputs=params)
    g = add_hessian_times_g(*batches[-1], None)
    for x, y in batches[:-1]:
        add_hessian_times_g(x, y, g)
    hg = [grad_or_zeros(p) for p in params]
    clear_grads(params)
    return {n: hg_n.mul_(p.detach()) for (n, p), hg_n in zip(ctx.params.items(), hg)}


def _plus(a: Tensor | None, b: Tensor | None, like: Tensor) -> Tensor:
    """``a + b`` where None is zero, adding in place into ``a`` (no copy when one is None)."""
    if a is None:
        return b if b is not None else torch.zeros_like(like)
    return a.add_(b) if b is not None else a
