"""Gradual magnitude pruning (Zhu & Gupta, 2017, "To prune, or not to prune"): a mask found while training.

The network trains from dense; every ``gmp_interval`` optimizer steps from ``gmp_start`` to ``gmp_end``
(fractions of this training) the weights of smallest magnitude among those still kept are pruned to
the cubic schedule's sparsity ``s_t = s_f (1 - (1 - p)^3)``, ``p = (t - t_0) / (t_end - t_0)`` (Zhu &
Gupta's ``s_f + (s_i - s_f)(1 - (t - t_0)/(n dt))^3`` with ``s_i = 0``), so that the last pruning step
keeps exactly the run's budget; then training goes on at that mask. Zhu & Gupta prune every layer
to the same sparsity (``gmp_scope=layer``, counts by largest remainder so the total is exact);
``gmp_scope=global`` ranks all layers' magnitudes together. The mask is returned with the weights
at the end of this training (``Built.start_state``): the run's own training continues from them at
the final mask (Zhu & Gupta's training after the last pruning step), so a ``gmp`` run trains
``gmp_epochs`` (default: the run's epochs) plus the run's epochs in all.

Checked against jaxpruner's ``PolynomialSchedule`` (``jaxpruner/sparsity_schedules.py``, commit
14f97626: ``sparsity = target (1 - (1 - progress)^3)``, ``progress = (step + 1 - start) / (end - start)``
clipped to [0, 1], updates every ``update_freq`` steps in [start, end]): the same schedule, ``t``
counting the optimizer steps taken. Where we depart: the last pruning step is the last multiple of
``gmp_interval`` in the window (``t_end``), so the final density is reached exactly at an update, and
per-layer counts are integers that sum to the budget. The pruning steps are :class:`GradualPruning`,
a training callback that ``one_cycle`` shares with its own schedule.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from sketchprune.config import setting
from sketchprune.errors import check
from sketchprune.masks import Masks
from sketchprune.methods.context import Built, Context, state_copy
from sketchprune.methods.registry import register

if TYPE_CHECKING:  # a training callback by its events: the registry loads without the training stack
    from sketchprune.train import TrainState

SCOPES = ("layer", "global")


class GradualPruning:
    """A training callback (the events of :class:`sketchprune.train.Callback`) that prunes a training
    network by magnitude from dense to ``budget`` weights: after every ``interval`` optimizer steps
    from ``start`` to ``end`` (fractions of the training), to the density ``density_at(progress)``
    (``progress`` in [0, 1] over the window; ``density_at(1)`` is the final density), among the
    weights still kept; per layer alike (``scope="layer"``) or over all layers (``"global"``). The
    last pruning step keeps exactly ``budget``. ``final`` holds the masks at the end."""

    def __init__(self, names: list[str], budget: int, density_at: Callable[[float], float], *, interval: int,
                 start: float, end: float, scope: str, what: str) -> None:
        check(scope in SCOPES, f"{what}: scope must be one of {', '.join(SCOPES)}, got {scope!r}")
        self.names, self.budget, self.density_at = names, budget, density_at
        self.interval, self.start, self.end, self.scope, self.what = interval, start, end, scope, what
        self.steps: list[int] = []
        self.final: dict[str, Tensor] | None = None

    def on_start(self, state: TrainState) -> None:
        total = state.config.epochs * state.steps_per_epoch
        first = max(1, math.ceil(self.start * total / self.interval)) * self.interval
        last = math.floor(self.end * total / self.interval + 1e-9) * self.interval
        check(first <= last, f"{self.what}: an interval of {self.interval} steps leaves no pruning step in the "
                             f"window ({self.start:g} to {self.end:g} of {total} steps); lower the interval or "
                             "train longer")
        self.steps = list(range(first, last + 1, self.interval))
        self.t0, self.t_end = self.start * total, last

    def on_step_end(self, state: TrainState) -> None:
        if self.steps and self.steps[0] <= state.step <= self.steps[-1] and state.step % self.interval == 0:
            self.prune(state, state.step == self.steps[-1])

    @torch.no_grad()
    def prune(self, state: TrainState, last: bool) -> None:
        """Prune to the schedule's density at this step (exactly the budget at the last step)."""
        assert state.masks is not None
        progress = 1.0 if last or self.t_end <= self.t0 else (state.step - self.t0) / (self.t_end - self.t0)
        params = dict(state.model.named_parameters())
        masks = {n: state.masks[n].cpu() for n in self.names}
        sizes = [masks[n].numel() for n in self.names]
        kept = [int(masks[n].sum()) for n in self.names]
        scheduled = round(self.density_at(progress) * sum(sizes))
        target = self.budget if last else max(self.budget, min(sum(kept), scheduled))
        if target >= sum(kept) and not last:
            return
        mags = {n: params[n].detach().abs().cpu().float().masked_fill(~masks[n], -1.0) for n in self.names}
        from sketchprune.topk import largest_k

        outs = [torch.zeros(s, dtype=torch.bool) for s in sizes]
        if self.scope == "global":
            largest_k(sizes, lambda j: mags[self.names[j]].reshape(-1), target, outs)
        else:
            from sketchprune.dst import allocate

            for j, count in enumerate(allocate(target, sizes, kept)):
                largest_k([sizes[j]], lambda _, j=j: mags[self.names[j]].reshape(-1), count, [outs[j]])
        state.set_masks(Masks({n: o.view(masks[n].shape) for n, o in zip(self.names, outs)}))

    def on_end(self, state: TrainState) -> None:
        if state.masks is not None:
            self.final = {n: state.masks[n].detach().cpu().clone() for n in self.names}


def train_to_mask(ctx: Context, pruning: GradualPruning, tag: str, epochs: int) -> Built:
    """Train ``ctx.model`` from dense with ``pruning`` (our loop, checkpointed under ``tag``): the mask
    at the end, and the weights then as the start of the run's training."""
    dense = Masks({n: torch.ones(p.shape, dtype=torch.bool) for n, p in ctx.params.items()})
    ctx.trainer(ctx.model, dense, tag, epochs=epochs or None, callbacks=[pruning])
    check(pruning.final is not None, f"{ctx.method.name}: its training ended before any step")
    assert pruning.final is not None
    mask = {n: pruning.final[n].to(p.device) for n, p in ctx.params.items()}
    return Built(mask, start_state=state_copy(ctx.model))


@dataclass(frozen=True)
class GmpOptions:
    gmp_interval: int = setting(100, "Optimizer steps between pruning steps.")
    gmp_start: float = setting(0.0, "The fraction of the training before the first pruning step.")
    gmp_end: float = setting(0.75, "The fraction of the training at which the final density is reached.")
    gmp_scope: str = setting("layer", "layer: every layer to the same sparsity (Zhu & Gupta); global: one "
                                      "magnitude ranking over all layers.", choices=SCOPES)
    gmp_epochs: int = setting(0, "Epochs of the gradual pruning (0: the run's epochs); the run then trains the "
                                 "pruned network on from there.")

    def validate(self) -> None:
        check(self.gmp_interval >= 1, f"gmp_interval must be >= 1, got {self.gmp_interval}")
        check(0 <= self.gmp_start < self.gmp_end <= 1,
              f"gmp_start and gmp_end are fractions of the training with 0 <= start < end <= 1, got "
              f"{self.gmp_start} and {self.gmp_end}")
        check(self.gmp_epochs >= 0, f"gmp_epochs must be >= 0, got {self.gmp_epochs}")


@register("gmp", options=GmpOptions, kind="train", copies=True,
          description="GMP (Zhu & Gupta 2017): gradual magnitude pruning from dense during training, cubic "
                      "sparsity schedule")
def gmp(ctx: Context) -> Built:
    """The mask gradual magnitude pruning reaches while the network trains (see the module docstring)."""
    o: GmpOptions = ctx.options
    final = ctx.density

    def density_at(progress: float) -> float:
        return 1 - (1 - final) * (1 - (1 - progress) ** 3)

    pruning = GradualPruning(list(ctx.params), ctx.budget, density_at, interval=o.gmp_interval, start=o.gmp_start,
                             end=o.gmp_end, scope=o.gmp_scope, what="gmp")
    return train_to_mask(ctx, pruning, "gmp", o.gmp_epochs)
