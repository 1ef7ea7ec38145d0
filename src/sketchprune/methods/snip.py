"""SNIP and its progressive forms: connection sensitivity ``|theta * dL/dtheta|`` on data.

* ``snip`` (Lee et al., ICLR 2019): one round, the loss summed over every batch given.
* ``iterative_snip`` and ``force`` (de Jorge et al., ICLR 2021, "Progressive skeletonization"):
  10 rounds on an exponential schedule, round ``r`` scored on batch ``r`` of the batches given
  (cycling). Iterative SNIP scores the surviving network and pruned weights stay pruned; FORCE
  scores *every* weight, ``|theta_0 * dL/dw|`` at ``w = theta_0 * mask``, so pruned weights can
  come back (``regrow``).

Checked against naver/force (``pruning/pruning_algos.py``, ``iterative_pruning`` with
``prune_method`` 1 (Iter-SNIP) and 3 (FORCE), commit 7494eed): the exponential schedule
``exp(-(r+1) log(1/d) / 10)``, one batch per step drawn afresh, Iter-SNIP's minimal saliency for
pruned weights, FORCE rescoring theta_0 on the sparsified dense copy. Where we depart: the
reference's loss is ``F.nll_loss`` on the raw logits (minus the mean target logit; its models
output logits and train with cross-entropy), a slip against the paper's loss; ours is the
cross-entropy, and ``*_loss="nll_logits"`` reproduces the reference. Its ``topk`` threshold keeps
every weight tied with the k-th (a few more than the budget); ours keeps exactly the budget.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor

from sketchprune.config import setting
from sketchprune.errors import check
from sketchprune.methods.context import Context, Scores
from sketchprune.methods.registry import register

LOSSES = ("cross_entropy", "nll_logits")


@register("snip", data="required",
          description="SNIP (Lee et al., ICLR 2019): `|theta * dL/dtheta|`, cross-entropy summed over the batches")
def snip(ctx: Context) -> Scores:
    """``|theta * dL/dtheta|`` with L the cross-entropy summed over the given batches."""
    grads = ctx.loss_grads()
    return {n: grads[n].mul_(p.detach()).abs_() for n, p in ctx.params.items()}


@dataclass(frozen=True)
class IterativeSnipOptions:
    iterative_snip_loss: str = setting("cross_entropy", "Loss of the sensitivity; nll_logits is the reference "
                                                        "code's nll_loss on raw logits.", choices=LOSSES)


@register("iterative_snip", options=IterativeSnipOptions, data="required", rounds=10,
          description="Iterative SNIP (de Jorge et al., ICLR 2021): SNIP re-scored on the surviving network "
                      "every round, one batch per round, pruned weights stay pruned")
def iterative_snip(ctx: Context) -> Scores:
    """``|w * dL/dw|`` of the surviving network on this round's batch."""
    grads = _round_grads(ctx, ctx.options.iterative_snip_loss)
    return {n: grads[n].mul_(p.detach()).abs_() for n, p in ctx.params.items()}


@dataclass(frozen=True)
class ForceOptions:
    force_loss: str = setting("cross_entropy", "Loss of the sensitivity; nll_logits is the reference code's "
                                               "nll_loss on raw logits.", choices=LOSSES)


@register("force", options=ForceOptions, data="required", rounds=10, regrow=True,
          description="FORCE (de Jorge et al., ICLR 2021): progressive skeletonization, `|theta_0 * dL/dw|` at "
                      "the sparsified weights, pruned weights can come back")
def force(ctx: Context) -> Scores:
    """``|theta_0 * dL/dw|`` at ``w = theta_0 * mask`` (the model holds the masked weights), every weight."""
    grads = _round_grads(ctx, ctx.options.force_loss)
    return {n: grads[n].mul_(ctx.originals[n]).abs_() for n in ctx.params}  # type: ignore[index]


def _round_grads(ctx: Context, loss: str) -> Scores:
    """Gradients of the loss on this round's batch (round ``r`` takes batch ``r``, cycling);
    ``cross_entropy`` is the data's loss (squared error on float regression targets)."""
    batches = ctx.batches()
    check(loss != "nll_logits" or not batches[0][1].is_floating_point(),
          f"{ctx.method.name}: nll_logits needs class labels; the data are regression targets: use cross_entropy "
          "(the data's loss, here squared error)")
    return ctx.loss_grads(_nll_logits if loss == "nll_logits" else None, [batches[ctx.round % len(batches)]])


def _nll_logits(out: Tensor, y: Tensor) -> Tensor:
    """The reference code's loss: ``F.nll_loss`` on raw logits, i.e. minus the mean target logit."""
    return F.nll_loss(out, y)
