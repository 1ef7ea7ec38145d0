"""IteRand (Chijiwa et al., NeurIPS 2021, "Pruning randomly initialized neural networks with iterative
randomization"): edge-popup that, every ``iterand_every`` optimizer steps, re-draws each weight the
current mask prunes with probability ``iterand_lambda`` (kept weights are never touched).

The re-drawn weights are part of the ticket: the result's ``start_state`` holds them, so a run
trains (and a strong-ticket evaluation uses) the network the search ended on.

Compared with dchiji-ntt/iterand at commit 32620c6aeed1059e2dbbb1997235ede4b9cbbe21
(``models/networks/sparse_modules.py``: ``rerandomize_`` mode ``bernoulli``, ``GetSubnet``;
``config.yaml``: ``rerand_freq`` 300 iterations, ``rerand_lambda`` 0.1). What agrees: the
Bernoulli(lambda) choice among the pruned weights only, the mask that decides "pruned" being the
current top-k (``rerand_rate`` 1), the period in optimizer steps, and the default lambda and
period. Where we depart: the new value is a draw from the layer's own initial values (uniform
over its entries, with replacement: the layer's init distribution, whatever the model's init
scheme was) rather than a fresh call of one named initializer; ``iterand_draw`` picks
``kaiming_normal``, ``kaiming_uniform`` or ``signed_constant`` as the reference's ``init_mode``
does. Scores are ranked by absolute value as in edge-popup (the reference ranks the raw scores).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from sketchprune import seeding
from sketchprune.config import setting
from sketchprune.errors import check
from sketchprune.methods.context import Built, Context, state_copy
from sketchprune.methods.edge_popup import Supermask, supermask_of, train_scores
from sketchprune.methods.registry import register

if TYPE_CHECKING:  # the training loop is not imported to register a method (report and the CLI stay light)
    from sketchprune.train import TrainState

DRAWS = ("empirical", "kaiming_normal", "kaiming_uniform", "signed_constant")


def draw_like(initial: Tensor, how: str, generator: torch.Generator) -> Tensor:
    """A fresh tensor of ``initial``'s shape from its init distribution (``how``, see ``DRAWS``)."""
    shape, n = initial.shape, initial.numel()
    fan_in = initial[0].numel() if initial.dim() > 1 else initial.numel()
    if how == "empirical":
        idx = torch.randint(0, n, (n,), generator=generator)
        return initial.reshape(-1).cpu()[idx].view(shape)
    std = math.sqrt(2.0 / max(fan_in, 1))
    if how == "kaiming_normal":
        return torch.randn(shape, generator=generator) * std
    if how == "kaiming_uniform":
        return (torch.rand(shape, generator=generator) * 2 - 1) * std * math.sqrt(3.0)
    return torch.where(torch.rand(shape, generator=generator) < 0.5, -std, std)


class Rerandomize:
    """A training callback (the events of :class:`sketchprune.train.Callback`): every ``every`` optimizer steps, each pruned weight of ``supermask`` is re-drawn with
    probability ``lam``. The draws come from a generator saved in the checkpoint."""

    name = "iterand"

    def __init__(self, supermask: Supermask, lam: float, every: int, how: str, seed: int) -> None:
        self.supermask, self.lam, self.every, self.how = supermask, lam, every, how
        self.initial = {n: w.detach().clone().cpu() for n, w in supermask.weights().items()}
        self.generator = torch.Generator().manual_seed(seed)
        self.redraws = 0

    def on_step_end(self, state: TrainState) -> None:
        if state.step % self.every == 0:
            self.redraw()

    @torch.no_grad()
    def redraw(self) -> dict[str, Tensor]:
        """Re-draw now; returns, per tensor, where a weight was re-drawn (always a pruned one)."""
        masks, weights, changed = self.supermask.masks(), self.supermask.weights(), {}
        for n, w in weights.items():
            coin = torch.rand(w.shape, generator=self.generator) < self.lam
            where = coin.to(w.device) & ~masks[n]
            new = draw_like(self.initial[n], self.how, self.generator).to(w.device, w.dtype)
            w.copy_(torch.where(where, new, w))
            changed[n] = where
        self.redraws += 1
        return changed

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state(), "redraws": self.redraws}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        self.redraws = int(state["redraws"])


@dataclass(frozen=True)
class IterandOptions:
    iterand_lambda: float = setting(0.1, "Probability that a pruned weight is re-drawn at each re-draw.")
    iterand_every: int = setting(300, "Optimizer steps between re-draws (the paper's K).")
    iterand_draw: str = setting("empirical", "Where new weights come from: the layer's own initial values "
                                             "(empirical) or a named initializer.", choices=DRAWS)
    iterand_epochs: int = setting(0, "Epochs of score training (0: the run's epochs).")
    iterand_lr: float = setting(0.0, "Learning rate of the scores (0: the run's lr).")
    iterand_signed_constant: bool = setting(False, "Start from the signed-constant weights, as edge_popup's option.")

    def validate(self) -> None:
        check(0 <= self.iterand_lambda <= 1, f"iterand_lambda must be in [0, 1], got {self.iterand_lambda}")
        check(self.iterand_every >= 1, f"iterand_every must be >= 1, got {self.iterand_every}")
        check(self.iterand_epochs >= 0, f"iterand_epochs must be >= 0, got {self.iterand_epochs}")
        check(self.iterand_lr >= 0 and math.isfinite(self.iterand_lr),
              f"iterand_lr must be a number >= 0 (0: the run's lr), got {self.iterand_lr}")


@register("iterand", options=IterandOptions, kind="train", copies=True,
          description="IteRand (Chijiwa et al., NeurIPS 2021): edge-popup that re-draws each pruned weight from "
                      "the initialization with probability lambda every K steps")
def iterand(ctx: Context) -> Built:
    """edge-popup with iterative re-randomization of the pruned weights (see the module docstring)."""
    o: IterandOptions = ctx.options
    supermask = supermask_of(ctx, o.iterand_signed_constant)
    seed = int(torch.randint(0, 2 ** 62, (1,), generator=ctx.generator))
    rerand = Rerandomize(supermask, o.iterand_lambda, o.iterand_every, o.iterand_draw,
                         seeding.derive(seed, "iterand"))
    train_scores(ctx, supermask, "iterand", o.iterand_epochs, o.iterand_lr, callbacks=[rerand])
    return Built(supermask.masks(), start_state=state_copy(ctx.model))
