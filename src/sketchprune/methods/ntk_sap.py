"""NTK-SAP (Wang et al., ICLR 2023): neural tangent kernel spectrum-aware pruning, data-free.

The saliency of each weight is ``|sum_r dJ_r/dm|``: the gradient with respect to its mask entry,
summed signed over the round's re-draws ``r`` before the absolute value is taken, of

    J = sum_x || f(x; m * theta) - f(x; m * (theta + eps * z)) ||^2,

a finite-difference estimate of the NTK trace, on standard Gaussian inputs ``x`` (uniform random
tokens for a token model), a Gaussian perturbation ``z``, and weights ``theta`` re-drawn from the
initialization for every batch (``ntk_sap_redraws`` per round, 20 rounds by default): the mask
depends on the architecture and the current mask only, never on the data or the weight values.

Checked against YiteWang/NTK-SAP (``Pruners/pruners.py``, class ``NTKSAP``, commit e23682b) and its
``scripts/run.sh`` (``--prune-epochs 20 --ntksap_R 5 --prune-train-mode True``, epsilon 0.01,
100 inputs: 10 per class of CIFAR-10). Choices where we depart:

* the reference re-initializes the *caller's* model each batch (``_initialize_weights``), losing
  its initial weights; we re-draw a scratch copy, so the pruned model keeps its theta_0;
* batch-norm statistics come from the random batch itself (the reference's train-mode pass with
  momentum 1, which the published script uses), then both passes run in eval mode with them;
* weights are re-drawn with each layer's ``reset_parameters`` and then the model's own
  ``_initialize_weights`` when it has one (the registry's VGG/ResNets: Kaiming normal, as theirs);
* its ``main.py`` reads ``--compression c`` as density 0.8^c; our density is the density.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from sketchprune.config import setting
from sketchprune.errors import check
from sketchprune.layers import random_inputs
from sketchprune.methods.context import Context, Scores
from sketchprune.methods.registry import register


@dataclass(frozen=True)
class NtkSapOptions:
    ntk_sap_epsilon: float = setting(0.01, "Scale of the weight perturbation of the finite difference.")
    ntk_sap_redraws: int = setting(5, "Weight re-draws (and random input batches) per round (the paper's R).")
    ntk_sap_samples: int = setting(100, "Gaussian inputs per re-draw (the reference's 10 per class x 10 classes).")

    def validate(self) -> None:
        check(self.ntk_sap_epsilon > 0, f"ntk_sap_epsilon must be > 0, got {self.ntk_sap_epsilon}")
        check(self.ntk_sap_redraws >= 1 and self.ntk_sap_samples >= 1,
              "ntk_sap_redraws and ntk_sap_samples must be >= 1")


@register("ntk_sap", options=NtkSapOptions, rounds=20,
          description="NTK-SAP (Wang et al., ICLR 2023): saliency of the NTK trace by finite differences of "
                      "outputs under weight perturbation, weights re-drawn every batch, data-free")
def ntk_sap(ctx: Context) -> Scores:
    """``|sum_r dJ_r/dm|`` over the round's re-draws (see the module docstring)."""
    from torch.func import functional_call

    o: NtkSapOptions = ctx.options
    if "scratch" not in ctx.memo:  # a copy to re-draw: the scored model keeps its weights
        ctx.memo["scratch"] = copy.deepcopy(ctx.model)
    scratch: nn.Module = ctx.memo["scratch"]
    params = dict(scratch.named_parameters())
    names = list(ctx.params)
    current = ctx.current_masks()
    shape = ctx.shape()
    scores = {n: torch.zeros_like(p) for n, p in ctx.params.items()}
    norms = [m for m in scratch.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for _ in range(o.ntk_sap_redraws):
        redraw(scratch, ctx.generator)
        theta = {n: params[n].detach() for n in names}
        masks = {n: current[n].to(theta[n].dtype).requires_grad_(True) for n in names}
        z = {n: torch.randn(theta[n].shape, generator=ctx.generator).to(theta[n]) for n in names}
        x = random_inputs(scratch, shape, o.ntk_sap_samples, ctx.generator, ctx.device)  # tokens for a token model
        plain = {n: masks[n] * theta[n] for n in names}
        perturbed = {n: masks[n] * (theta[n] + o.ntk_sap_epsilon * z[n]) for n in names}
        with torch.no_grad():  # batch-norm statistics of this random batch (momentum 1: exactly them)
            for bn in norms:
                bn.reset_running_stats()
                bn.momentum = 1.0
            scratch.train()
            functional_call(scratch, plain, (x,))
        scratch.eval()
        diff = functional_call(scratch, plain, (x,)) - functional_call(scratch, perturbed, (x,))
        J = diff.reshape(diff.shape[0], -1).pow(2).sum()
        grads = torch.autograd.grad(J, [masks[n] for n in names], allow_unused=True)
        for n, g in zip(names, grads):
            if g is not None:
                scores[n] += g  # signed: the reference sums dJ/dm over the re-draws, then takes |.|
    return {n: s.abs_().mul_(current[n]) for n, s in scores.items()}


def redraw(model: nn.Module, generator: torch.Generator) -> None:
    """Re-draw ``model``'s weights from its initialization, seeded from ``generator``."""
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    cuda = sorted({p.device.index or 0 for p in model.parameters() if p.is_cuda})
    with torch.random.fork_rng(devices=cuda), torch.no_grad():
        torch.manual_seed(seed)  # every device's stream, restored after the block
        for m in model.modules():
            if m is not model and hasattr(m, "reset_parameters"):
                m.reset_parameters()
        init = getattr(model, "_initialize_weights", None)
        if callable(init):
            init()
