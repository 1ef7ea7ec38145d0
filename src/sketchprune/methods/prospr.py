"""ProsPr, prospect pruning (Alizadeh et al., ICLR 2022): meta-gradients through a few training steps.

The score of weight ``i`` is ``|dL(theta_T; x) / dm_i|`` at ``m = 1``: the network ``theta * m``
takes ``prospr_steps`` SGD steps on the data (all parameters, in train mode), and the loss after
them is differentiated through those steps with respect to the mask. One round.

Checked against mil-ad/prospr (``prospr/prospr.py``, ``prune``, commit a921779, "full" meta-gradients)
and its CLI defaults: 3 inner steps, lr 0.1, momentum 0, the same batch for every step and the
meta-loss (``--new-data-in-inner`` off), batch 128. Its README example uses lr 0.5 and momentum 0.9
instead; we follow the CLI, which ran the paper's experiments. With several data batches and
``prospr_new_data``, step ``t`` uses batch ``t`` and the meta-loss the batch after the last step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sketchprune.config import setting
from sketchprune.errors import check
from sketchprune.losses import task_loss
from sketchprune.methods.context import Context, Scores
from sketchprune.methods.registry import register


@dataclass(frozen=True)
class ProsprOptions:
    prospr_steps: int = setting(3, "SGD steps the meta-gradient looks through.")
    prospr_lr: float = setting(0.1, "Learning rate of those steps (the reference CLI's 0.1; its README shows 0.5).")
    prospr_momentum: float = setting(0.0, "SGD momentum of those steps (CLI 0; README 0.9).")
    prospr_new_data: bool = setting(False, "A new data batch for every step (cycling through the batches given).")

    def validate(self) -> None:
        check(self.prospr_steps >= 1, f"prospr_steps must be >= 1, got {self.prospr_steps}")
        check(self.prospr_lr > 0 and 0 <= self.prospr_momentum < 1, "prospr_lr must be > 0 and prospr_momentum in [0, 1)")


@register("prospr", options=ProsprOptions, data="required",
          description="ProsPr (Alizadeh et al., ICLR 2022): meta-gradient of the loss with respect to the mask "
                      "through a few SGD steps")
def prospr(ctx: Context) -> Scores:
    """``|dL(theta_T)/dm|`` through ``prospr_steps`` differentiable SGD steps (see the module docstring)."""
    from torch.func import functional_call

    o: ProsprOptions = ctx.options
    model = ctx.model
    model.train()  # as the reference: batch statistics in the inner steps
    batches = ctx.batches()
    names = [n for n, _ in model.named_parameters()]
    base = dict(model.named_parameters())
    masks = {n: torch.ones_like(p, requires_grad=True) for n, p in ctx.params.items()}
    fast = {n: base[n] * masks[n] if n in masks else base[n] for n in names}
    velocity: dict[str, torch.Tensor] = {}

    def batch(t: int) -> tuple[torch.Tensor, torch.Tensor]:
        return batches[t % len(batches)] if o.prospr_new_data else batches[0]

    for t in range(o.prospr_steps):
        x, y = batch(t)
        loss = task_loss(functional_call(model, fast, (x,)), y)
        grads = torch.autograd.grad(loss, [fast[n] for n in names], create_graph=True, allow_unused=True)
        for n, g in zip(names, grads):
            if g is None:
                continue
            if o.prospr_momentum:
                g = velocity[n] = g if n not in velocity else velocity[n] * o.prospr_momentum + g
            fast[n] = fast[n] - o.prospr_lr * g
    x, y = batch(o.prospr_steps)
    meta = task_loss(functional_call(model, fast, (x,)), y)
    grads = torch.autograd.grad(meta, [masks[n] for n in ctx.params], allow_unused=True)
    return {n: g.abs() if g is not None else torch.zeros_like(masks[n])
            for n, g in zip(ctx.params, grads)}
