"""Early-bird tickets (You et al., ICLR 2020, "Drawing early-bird tickets"): a unit method that trains.

The dense network trains (a copy; ours, ``ctx.trainer``) with an L1 penalty on its batch-norm scales
(``s * sign(gamma)`` added to their gradients, network slimming's subgradient, ``s = 1e-4``); after
every epoch the channel mask is taken from the scales: in each unit group the ``keep`` fraction of
units with the largest ``|gamma|``. When the newest mask differs from the previous one by less than
``threshold`` (0.1; the normalized Hamming distance over all channels), the early-bird ticket has
emerged and the search stops; the units' scores are then the scales ``|gamma|`` (a group without a
batch norm scores its units by the trained filters' L1 norm). ``prune_units`` keeps the top units
and removes the rest by its surgery (Torch-Pruning's dependency graph), and the smaller network
trains from the initial weights. If no ticket emerges, the scores of the last epoch are used.

Checked against GATECH-EIC/Early-Bird-Tickets (``main.py``: ``EarlyBird``, ``updateBN``; commit
5b9b99f): the L1 subgradient on the BN scales before the optimizer step, the channel mask from the
scales, the mask distance ``1 - mean(mask_i == mask_j)``, the threshold 0.1. Where we depart: the
reference takes one global threshold over all BN layers' scales (a per-layer share that varies) and
waits until the newest mask is within 0.1 of each of the last four (a queue of five epochs); ours
keeps the same fraction of every group (``prune_units``' budget, so ``keep_by`` works as for every
unit method) and compares consecutive epochs (``window=2``; :func:`search` takes any window). The
reference retrains the ticket either from the search's weights or from scratch; ours from the
initial weights (``prune_units`` returns the pruned network at initialization).
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from sketchprune.errors import check
from sketchprune.methods.context import UnitContext
from sketchprune.methods.registry import register_units
from sketchprune.selection import budget
from sketchprune.unit_groups import reduce, units

if TYPE_CHECKING:  # a training callback by its events: the registry loads without the training stack
    from sketchprune.train import TrainState

THRESHOLD = 0.1
"""The mask distance under which the ticket has emerged (You et al.)."""
L1 = 1e-4
"""The L1 strength on the batch-norm scales (network slimming's, the reference's default)."""
WINDOW = 2
"""Masks compared: the newest and the previous ``WINDOW - 1`` (2: consecutive epochs)."""

_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _norm_items(group) -> list[tuple[nn.Module, list[int], list[int]]]:
    """The batch norms of a unit group: (module, its channel indices, the root units they belong to)."""
    out = []
    for i, (dep, idxs) in enumerate(group):
        layer = dep.target.module
        if isinstance(layer, _NORMS) and layer.weight is not None:
            out.append((layer, list(idxs), list(group[i].root_idxs)))
    return out


def scale_scores(groups: list, modules: dict[nn.Module, nn.Module]) -> list[Tensor]:
    """Per group, each root unit's ``|gamma|`` (summed over the group's batch norms) in the network
    ``modules`` maps the groups' layers to; a group without one: the L1 norm of its units' filters."""
    scores = []
    for g in groups:
        norms = _norm_items(g)
        if not norms:
            scores.append(reduce(g, lambda layer, idxs, out: modules[layer].weight.detach().abs()
                                 .reshape(layer.weight.shape[0], -1).sum(1)[idxs].double().cpu() if out else None))
            continue
        total = torch.zeros(units(g), dtype=torch.float64)
        for layer, idxs, roots in norms:
            total.scatter_add_(0, torch.tensor(roots), modules[layer].weight.detach().abs().cpu()[idxs].double())
        scores.append(total)
    return scores


def channel_mask(scores: list[Tensor], keep: float) -> Tensor:
    """The kept units of every group (the ``keep`` fraction of largest score, ties to the lower index), concatenated."""
    from sketchprune.topk import largest_k

    parts = []
    for s in scores:
        out = torch.zeros(s.numel(), dtype=torch.bool)
        largest_k([s.numel()], lambda _, s=s: s, max(1, budget(keep, s.numel())), [out])
        parts.append(out)
    return torch.cat(parts)


def distance(a: Tensor, b: Tensor) -> float:
    """The normalized Hamming distance of two channel masks: the fraction of channels that differ."""
    return float((a != b).double().mean())


class Search:
    """A training callback (the events of :class:`sketchprune.train.Callback`), the early-bird search:
    L1 on the batch-norm scales (gradient hooks), the channel mask after every epoch, and the end of
    training when the newest mask is within ``threshold`` of the previous ``window - 1`` (it sets
    ``state.stop``). Its state survives a kill."""

    name = "early-bird"

    def __init__(self, groups: list, modules: dict[nn.Module, nn.Module], keep: float, *, threshold: float = THRESHOLD,
                 l1: float = L1, window: int = WINDOW) -> None:
        check(window >= 2, f"early_bird compares at least two masks; window must be >= 2, got {window}")
        self.groups, self.modules, self.keep = groups, modules, keep
        self.threshold, self.l1, self.window = threshold, l1, window
        self.masks: list[Tensor] = []
        self.distances: list[float] = []  # per epoch, the largest distance to the previous masks (once there are some)
        self.found: int | None = None  # the epoch (1-based) at whose end the ticket emerged
        self._hooks: list[Any] = []

    def on_start(self, state: TrainState) -> None:
        if self.found is not None:
            state.stop = True
            return
        scales = {id(m): m for g in self.groups for m, _, _ in _norm_items(g)}
        for m in scales.values():
            w = self.modules[m].weight
            self._hooks.append(w.register_hook(lambda grad, w=w: grad + self.l1 * torch.sign(w.detach())))

    def on_epoch_end(self, state: TrainState) -> None:
        mask = channel_mask(scale_scores(self.groups, self.modules), self.keep)
        self.masks = (self.masks + [mask])[-self.window:]
        if len(self.masks) == self.window:
            self.distances.append(max(distance(mask, old) for old in self.masks[:-1]))
            if self.distances[-1] < self.threshold:
                self.found = state.epoch + 1
                state.stop = True

    def on_end(self, state: TrainState) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks = []

    def state_dict(self) -> dict[str, Any]:
        return {"masks": self.masks, "distances": self.distances, "found": self.found}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.masks, self.distances, self.found = list(state["masks"]), list(state["distances"]), state["found"]


def search(ctx: UnitContext, *, threshold: float = THRESHOLD, l1: float = L1, window: int = WINDOW
           ) -> tuple[list[Tensor], Search]:
    """Run the early-bird search on a copy of ``ctx.net`` with ``ctx.trainer``: the unit scores at the
    epoch the ticket emerged (or the last), and the search (its distances, the epoch it stopped)."""
    check(ctx.trainer is not None,
          "early_bird trains the dense network to find its ticket: run it through sketchprune train / run / sweep "
          "with structure=units, or pass trainer=sketchprune.experiment.Trainer(data, train_config) to prune_units")
    work = copy.deepcopy(ctx.net)
    modules = dict(zip(ctx.net.modules(), work.modules()))
    check(any(_norm_items(g) for g in ctx.groups),
          "early_bird reads the channels' batch-norm scales; the model has no batch norm after its layers")
    found = Search(ctx.groups, modules, ctx.keep, threshold=threshold, l1=l1, window=window)
    ctx.trainer(work, None, "early-bird", callbacks=[found])
    return scale_scores(ctx.groups, modules), found


@register_units("early_bird",
                description="Early-bird tickets (You et al., ICLR 2020): train dense with L1 on batch-norm scales "
                            "until the channel mask stops changing (distance < 0.1); keep the largest scales")
def early_bird_units(ctx: UnitContext) -> list[Tensor]:
    """The batch-norm scales of the early-bird ticket (see the module docstring)."""
    return search(ctx, threshold=THRESHOLD, l1=L1, window=WINDOW)[0]
