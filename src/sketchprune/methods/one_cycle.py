"""One-Cycle Pruning (Hubens et al., 2021): pruning and training in one cycle, from the first step to the last.

The network trains from dense and is pruned by magnitude from the beginning of the training to its
very end, the sparsity following the logistic one-cycle schedule
``s(p) = s_f (1 + e^(beta - alpha)) / (1 + e^(beta - alpha p))``, ``p`` the fraction of the training
done (near 0 at the start, steepest in the middle, ``s_f`` at the end). It shares the pruning steps
of :class:`~sketchprune.methods.gmp.GradualPruning` (every ``one_cycle_interval`` optimizer steps,
among the weights still kept, the last step at exactly the budget) and returns the mask with the
weights at the end (``Built.start_state``), from which the run's own training goes on.

Checked against nathanhubens/fasterai (``fasterai/sparse/schedule.py``, ``sched_onecycle``, commit
20da8eb: ``(1 + exp(-alpha + beta)) / (1 + exp(-alpha pos + beta))`` scaled to [start, end], alpha=14,
beta=6) and the paper's code README (alpha=14, beta=5 "good defaults"); we take alpha=14, beta=5.
Where we depart: fasterai prunes before every batch; ours every ``one_cycle_interval`` steps (1:
every step), the last pruning step being the last multiple of the interval, where the final
sparsity is reached exactly; the per-layer counts are integers summing to the budget.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sketchprune.config import setting
from sketchprune.errors import check
from sketchprune.methods.context import Built, Context
from sketchprune.methods.gmp import SCOPES, GradualPruning, train_to_mask
from sketchprune.methods.registry import register


@dataclass(frozen=True)
class OneCycleOptions:
    one_cycle_interval: int = setting(50, "Optimizer steps between pruning steps.")
    one_cycle_alpha: float = setting(14.0, "alpha of the logistic schedule: its steepness.")
    one_cycle_beta: float = setting(5.0, "beta of the logistic schedule: where it rises (the middle for beta = "
                                         "alpha / 2).")
    one_cycle_scope: str = setting("layer", "layer: every layer to the same sparsity; global: one magnitude "
                                            "ranking over all layers.", choices=SCOPES)
    one_cycle_epochs: int = setting(0, "Epochs of the pruning cycle (0: the run's epochs); the run then trains the "
                                       "pruned network on from there.")

    def validate(self) -> None:
        check(self.one_cycle_interval >= 1, f"one_cycle_interval must be >= 1, got {self.one_cycle_interval}")
        check(self.one_cycle_alpha > 0 and math.isfinite(self.one_cycle_alpha + self.one_cycle_beta),
              "one_cycle_alpha must be > 0 and one_cycle_beta a number")
        check(self.one_cycle_epochs >= 0, f"one_cycle_epochs must be >= 0, got {self.one_cycle_epochs}")


def sparsity(progress: float, final: float, alpha: float = 14.0, beta: float = 5.0) -> float:
    """The one-cycle sparsity at ``progress`` (0 to 1) towards ``final``: 0 ... ``final`` logistic."""
    return final * (1 + math.exp(beta - alpha)) / (1 + math.exp(beta - alpha * progress))


@register("one_cycle", options=OneCycleOptions, kind="train", copies=True,
          description="One-Cycle Pruning (Hubens et al. 2021): magnitude pruning from dense over the whole "
                      "training, logistic sparsity schedule")
def one_cycle(ctx: Context) -> Built:
    """The mask one-cycle pruning reaches at the end of its training (see the module docstring)."""
    o: OneCycleOptions = ctx.options
    final = 1 - ctx.density

    def density_at(progress: float) -> float:
        return 1 - sparsity(progress, final, o.one_cycle_alpha, o.one_cycle_beta)

    pruning = GradualPruning(list(ctx.params), ctx.budget, density_at, interval=o.one_cycle_interval, start=0.0,
                             end=1.0, scope=o.one_cycle_scope, what="one_cycle")
    return train_to_mask(ctx, pruning, "one_cycle", o.one_cycle_epochs)
