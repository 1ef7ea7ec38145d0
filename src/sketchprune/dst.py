"""Dynamic sparse training (DST): masks that move while the network trains.

A pruning-at-initialization mask is chosen at step 0; a DST *updater* moves it during training,
keeping its size. :func:`drop_grow` is the one place the drop-and-grow rule lives (users build
their own loops on it); the updaters are :class:`sketchprune.train.Callback` objects that
``sketchprune.train`` runs (``dst=`` in ``train`` / ``run`` / sweeps, or :func:`updater` in
Python), registered once each in the method registry with the ``update`` runner, so
``sketchprune methods`` lists them and ``prune(net, "rigl", ...)`` says they act during training.

The rule (:func:`drop_grow`), per layer with ``kept`` weights:

* ``n = round(fraction * kept)`` kept weights are dropped: the survivors are the ``kept - n`` of
  largest ``|w|``;
* ``n`` weights are grown: those of largest grow score among every weight not kept after the drop,
  the just-dropped ones included;
* both steps are top-k selections whose ties go to the lower flat index (of two kept weights of
  equal ``|w|`` the lower index survives; of two candidates of equal score the lower index
  grows); each layer keeps its count; nothing is modified in place.

Checked against google-research/jaxpruner (``jaxpruner/algorithms/sparse_trainers.py``: ``SET``,
``RigL``; ``base_updater.py``, ``sparsity_schedules.py``, ``api.py`` at commit 14f97626,
``mask_calculator.py`` at 11f95a58) and google-research/rigl (``rigl/sparse_optimizers_base.py``:
``SparseSETOptimizerBase``, ``SparseRigLOptimizerBase``; commit 6e49b911). What they agree on, and we follow: drop by ``|w|``
of the kept weights, grow among all weights not kept after the drop (just-dropped ones are
candidates, and one grown back keeps its value: the TF code's ``reinit_when_same=False``),
grown weights start at zero with their optimizer state (momentum, Adam moments) reset, SET grows
at random, RigL by ``|dL/dw|`` of the dense gradient on the update step's batch, each layer's
count conserved. Where they differ from each other:

* counts: jaxpruner derives both top-k sizes from densities, ``round(size * (1 - sparsity))`` in
  float32 (so ``n = kept - round(kept * (1 - fraction))``, and ``max(1, .)``: a layer never
  drops its last weight); the TF code floors, ``n = int(kept * fraction)``. We take
  ``round(fraction * kept)`` (Python's round, half to even): jaxpruner's ``n`` except where
  ``kept * fraction`` is exactly half-integer, and at ``fraction=1`` (we drop every kept weight
  and grow a whole new set);
* ties and noise: jaxpruner's top-k breaks ties by the lower flat index (we do too, in both
  steps); the TF code adds ``N(0, 1e-5)`` noise to the drop scores (and ``tf.nn.top_k``'s order
  for ties), so its drops are not a function of ``|w|`` alone. We add no noise: the same inputs give
  the same mask;
* the drop-fraction decay: both offer cosine decay, ``f(t) = f0 / 2 * (1 + cos(pi t / T_end))`` (the
  RigL paper's); jaxpruner decays over ``[0, update_end_step]``, the TF code over ``end - begin``
  steps from step 0 (the same when updates start at 0). We follow the paper and jaxpruner: ``t``
  is the optimizer steps taken, ``T_end = dst_end * steps``; ``constant`` keeps ``f0``;
* the step of an update: both skip the optimizer's update on a mask-update step and score the
  weights before it. Ours updates after the step's optimizer update (``on_step_end``), scoring
  the weights after it and (RigL) the gradient of that step, at the weights before it;
* the first update: both may update at step 0; ours first moves the mask after ``dst_interval``
  steps (a mask chosen at step 0 is the PaI mask itself).

Schedule (:class:`Schedule`): an update after every ``dst_interval`` optimizer steps from
``dst_start`` to ``dst_end`` (fractions of the training; RigL's 0.75 by default), with
``dst_fraction`` (0.3 as in the RigL paper) decayed by ``dst_schedule``.

The updaters (each where it departs from its paper):

* ``static``: the mask never moves (the baseline every DST paper reports); no callback at all;
* ``set`` (Mocanu et al. 2018): grow at random (uniform scores from the updater's own stream).
  The paper drops a fraction of the largest negative and smallest positive weights separately; we
  drop by ``|w|`` as jaxpruner and the RigL code do;
* ``rigl`` (Evci et al. 2020): grow by ``|dL/dw|`` of the dense gradient. It is taken only at
  update steps, from the step's own backward pass: in ``on_step_start`` of an update step a
  tensor hook is put on each masked parameter, which sees the gradient before the masks zero its
  pruned entries, and it is removed after that step; no second forward or backward pass, and
  nothing at the other steps (one integer test per step);
* ``dsr`` (Mostafa & Wang 2019): a global threshold ``H`` prunes the kept weights with ``|w| < H``
  (every layer keeps at least its largest weight); ``H`` doubles when fewer than
  ``(1 - dsr_tolerance) N`` were pruned and halves when more than ``(1 + dsr_tolerance) N``, with
  ``N = dst_fraction(t) * kept``; the pruned count is regrown at random, allocated to the layers in
  proportion to their surviving weights (largest remainder, capped by the free positions): the
  global count is conserved, the per-layer counts move. Departure: the paper starts ``H`` at a
  fixed value; ours starts it at the first update at the magnitude that prunes ``N``, so a short
  run does not spend its updates finding the scale;
* ``deepr`` (Bellec et al. 2018): each connection has a fixed sign ``s`` (a kept weight's own, a
  pruned one's drawn at random) and a parameter ``theta = s w >= 0``; after every optimizer step
  (the gradient step on ``theta``) kept parameters take an L1 step ``-lr * deepr_l1`` and a noise
  step ``sqrt(2 lr deepr_temperature) N(0, 1)``, and a parameter that would cross zero is held at
  zero: the sign never flips. At update steps the connections that crossed (and are still at
  zero) go dormant and as many dormant connections, drawn uniformly over the whole network, are
  activated at zero (the global count is conserved). Departure: the paper rewires at every step;
  ours at the update steps (``dst_interval=1`` is the paper's algorithm), and between them a
  connection held at zero may grow again on its own side;
* ``dns`` (Guo et al. 2016): the pruned weights keep being updated (a shadow copy outside the
  network takes plain gradient steps ``-lr * dL/dw`` from the dense gradient, every step, through
  the same tensor hooks), and at update steps two thresholds with hysteresis prune and splice:
  a weight is kept while ``dns_margin * |w|`` stays above the splice threshold ``b``, and a pruned
  one is spliced back when its ``|w|`` rises above ``b``; a spliced weight returns with its shadow
  value. The paper's thresholds come from the weights' statistics and do not hold a budget; ours
  set ``b`` per layer so that the layer keeps its count (the run's density), and the docs say so.

``dst_fraction`` and ``dst_schedule`` apply to ``set``, ``rigl`` and ``dsr``; ``deepr`` and ``dns``
decide how many move by their own rules. In training, a grown weight starts at zero with its
optimizer state reset (explicitly, at the grown entries), a just-dropped weight grown back keeps
its value (``TrainState.set_masks`` leaves weights kept by both masks as they are), and pruned
weights are exactly zero between updates. An updater's state (its random streams, counters, the
bookkeeping of grown weights, DSR's threshold, DeepR's signs, DNS's shadow weights) is in its
``state_dict``, so a killed run resumes to the same final mask and accuracy. Its
:meth:`Updater.summary` is what ``result.json`` records under ``dst``: the number of updates, the
weights grown, how many grown weights were dropped again later, and per layer the fraction of the
starting mask no longer kept at the end and the final density.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from sketchprune import seeding
from sketchprune.config import setting
from sketchprune.errors import SketchpruneError, check, check_finite
from sketchprune.masks import Masks
from sketchprune.methods.registry import get as get_method
from sketchprune.methods.registry import names as method_names
from sketchprune.methods.registry import register
from sketchprune.methods.runners import Runner
from sketchprune.topk import largest_k

if TYPE_CHECKING:  # the updaters are training callbacks by their events; the registry loads without the training stack
    from sketchprune.train import TrainState

SCHEDULES = ("cosine", "constant")
DEFAULTS = {"interval": 100, "start": 0.0, "end": 0.75, "fraction": 0.3, "schedule": "cosine"}
"""The schedule's defaults (RigL's: every 100 steps until 3/4 of training, 30 % decayed by cosine)."""


# ---- the rule -----------------------------------------------------------------------------------------

def drop_grow(weights: Mapping[str, Tensor], masks: Mapping[str, Tensor], grow_scores: Mapping[str, Tensor],
              fraction: float) -> Masks:
    """One drop-and-grow update of ``masks`` (see the module docstring for the rule).

    Per layer: the ``round(fraction * kept)`` kept weights of smallest ``|w|`` are dropped, then as
    many weights of largest ``grow_scores`` among those not kept after the drop (just-dropped ones
    included) are grown; ties go to the lower flat index in both steps; each layer keeps its count.
    ``weights`` and ``grow_scores`` are tensors by parameter name (covering the names of ``masks``),
    ``masks`` bool tensors; nothing is modified. The new masks are on the devices of ``masks``.
    """
    check(isinstance(fraction, (int, float)) and not isinstance(fraction, bool) and 0 <= fraction <= 1,
          f"fraction must be a number in [0, 1], got {fraction!r}")
    out = {}
    for name, m in masks.items():
        check(name in weights and name in grow_scores,
              f"drop_grow: {name!r} has a mask but no {'weights' if name not in weights else 'grow scores'}; "
              "pass a tensor for every masked parameter")
        check(isinstance(m, Tensor) and m.dtype == torch.bool, f"drop_grow: the mask of {name!r} is not a bool tensor")
        w, g = weights[name], grow_scores[name]
        check(tuple(w.shape) == tuple(m.shape) == tuple(g.shape),
              f"drop_grow: {name!r} has mask shape {tuple(m.shape)}, weights {tuple(w.shape)} and grow scores "
              f"{tuple(g.shape)}; they must be the same")
        kept = int(m.sum())
        out[name] = _drop_grow(w.detach(), m, g.detach(), round(fraction * kept), name)
    return Masks(out)


def _drop_grow(w: Tensor, m: Tensor, g: Tensor, n: int, name: str = "") -> Tensor:
    """One layer's new mask: drop the ``n`` kept weights of smallest ``|w|``, grow ``n`` of largest ``g``."""
    flat = m.reshape(-1)
    if n == 0:
        return m.clone()
    dev = m.device
    check_finite(w, f"the weights of {name}")
    check_finite(g, f"the grow scores of {name}")
    kept = torch.nonzero(flat).squeeze(1)
    survive = _largest(w.reshape(-1).to(dev).abs().index_select(0, kept), kept.numel() - n)
    new = torch.zeros_like(flat)
    new[kept[survive]] = True
    free = torch.nonzero(~new).squeeze(1)
    new[free[_largest(g.reshape(-1).to(dev).index_select(0, free), n)]] = True
    return new.view(m.shape)


def _largest(values: Tensor, k: int) -> Tensor:
    """Bool mask of the ``k`` largest of 1-D ``values``; ties at the threshold keep the lower indices."""
    out = torch.zeros(values.numel(), dtype=torch.bool, device=values.device)
    if k > 0:
        keys = values if values.dtype in (torch.float32, torch.float64) else values.float()
        largest_k([values.numel()], lambda _: keys, k, [out])
    return out


# ---- the schedule ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Schedule:
    """When the mask moves and by how much: an update after every ``interval`` optimizer steps of
    ``total_steps``, from ``start`` to ``end`` (fractions of the training), moving ``fraction`` of each
    layer's kept weights at the first, decayed by ``decay`` (``cosine`` to zero at ``end``, or
    ``constant``). Bad values, and a schedule in which no update would happen, are one-line errors."""

    total_steps: int
    interval: int = DEFAULTS["interval"]
    start: float = DEFAULTS["start"]
    end: float = DEFAULTS["end"]
    fraction: float = DEFAULTS["fraction"]
    decay: str = DEFAULTS["schedule"]

    def __post_init__(self) -> None:
        check_schedule(self.interval, self.start, self.end, self.fraction, self.decay)
        check(self.first <= self.last,
              f"dst_interval={self.interval} is longer than the updates' window: training has {self.total_steps} "
              f"steps and masks move from step {self.start * self.total_steps:g} to "
              f"{self.end * self.total_steps:g} (dst_start {self.start:g}, dst_end {self.end:g}); lower dst_interval, "
              "widen the window or train longer")

    @property
    def first(self) -> int:
        """The first update step (optimizer steps taken)."""
        return max(1, math.ceil(self.start * self.total_steps / self.interval)) * self.interval

    @property
    def last(self) -> int:
        """The last update step."""
        return math.floor(self.end * self.total_steps / self.interval + 1e-9) * self.interval

    def steps(self) -> range:
        """Every update step."""
        return range(self.first, self.last + 1, self.interval)

    def is_update(self, step: int) -> bool:
        """Whether the mask moves after ``step`` optimizer steps."""
        return step % self.interval == 0 and self.first <= step <= self.last

    def fraction_at(self, step: int) -> float:
        """The fraction moved at ``step``: ``fraction``, or ``fraction / 2 * (1 + cos(pi step / T_end))``."""
        if self.decay == "constant":
            return self.fraction
        return self.fraction * 0.5 * (1 + math.cos(math.pi * min(step, self.end * self.total_steps)
                                                   / (self.end * self.total_steps)))


def check_schedule(interval: Any, start: Any, end: Any, fraction: Any, decay: Any) -> None:
    """One-line errors for schedule settings that cannot work (the run's config checks them too)."""
    def number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    check(isinstance(interval, int) and not isinstance(interval, bool) and interval >= 1,
          f"dst_interval must be an integer >= 1 (optimizer steps between updates), got {interval!r}")
    check(number(fraction) and 0 <= fraction <= 1, f"dst_fraction must be in [0, 1], got {fraction!r}")
    check(number(start) and number(end) and 0 <= start < end <= 1,
          f"dst_start and dst_end are fractions of the training with 0 <= dst_start < dst_end <= 1, got "
          f"{start!r} and {end!r}")
    check(decay in SCHEDULES, f"unknown dst_schedule {decay!r}; use one of {', '.join(SCHEDULES)}")


# ---- updaters -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class UpdaterSettings:
    """What an updater is made from: the schedule's settings (its length comes from the training),
    the seed of its random streams and its own options (the registered options dataclass)."""

    interval: int = DEFAULTS["interval"]
    start: float = DEFAULTS["start"]
    end: float = DEFAULTS["end"]
    fraction: float = DEFAULTS["fraction"]
    schedule: str = DEFAULTS["schedule"]
    seed: int = 0
    options: Any = None


class Updater:
    """The base of the DST updaters: a training callback (the events of
    :class:`sketchprune.train.Callback`) that moves ``state.masks`` at the update steps of its
    :class:`Schedule` and keeps the books (:meth:`summary`). A subclass proposes the new masks
    (:meth:`propose`) and may act after every step or after the masks changed."""

    method = ""
    """The registry name."""
    moves_fraction = True
    """``dst_fraction`` / ``dst_schedule`` decide how many weights move (else the updater's own rule)."""

    def __init__(self, settings: UpdaterSettings) -> None:
        self.settings = settings
        self.options = settings.options
        self.name = f"dst-{self.method}"
        self.generator = seeding.generator(settings.seed, f"dst-{self.method}")
        self.schedule: Schedule | None = None
        self.params: dict[str, nn.Parameter] = {}
        self.start_masks: dict[str, Tensor] | None = None
        self.grown_alive: dict[str, Tensor] = {}  # weights grown at some update and kept since
        self.updates = 0
        self.grown = 0
        self.grown_then_dropped = 0
        self.final_masks: dict[str, Tensor] | None = None

    # -- events
    def on_start(self, state: TrainState) -> None:
        check(state.masks is not None, f"dst={self.method} moves a mask: train with masks= (a pruned model)")
        s = self.settings
        self.schedule = Schedule(state.config.epochs * state.steps_per_epoch, s.interval, s.start, s.end, s.fraction,
                                 s.schedule)
        named = dict(state.model.named_parameters())
        missing = [n for n in state.masks if n not in named]
        if missing:
            raise SketchpruneError(f"dst: the masks name {missing[0]!r}, which the model does not have; pass the "
                                   "model's own masks")
        self.params = {n: named[n] for n in state.masks}
        if self.start_masks is None:  # a fresh run (a resumed one got its books from the checkpoint)
            self.start_masks = {n: m.detach().cpu().clone() for n, m in state.masks.items()}
            self.grown_alive = {n: torch.zeros_like(m) for n, m in self.start_masks.items()}
            self.begin(state)

    def on_step_end(self, state: TrainState) -> None:
        assert self.schedule is not None
        if self.schedule.is_update(state.step):
            new = self.propose(state, self.schedule.fraction_at(state.step))
            self.apply(state, new)

    def on_end(self, state: TrainState) -> None:
        if state.masks is not None:
            self.final_masks = {n: m.detach().cpu().clone() for n, m in state.masks.items()}

    # -- what a subclass provides
    def begin(self, state: TrainState) -> None:
        """Set up the updater's own state at the start of a fresh run."""

    def propose(self, state: TrainState, fraction: float) -> dict[str, Tensor]:
        """The new masks (bool, CPU) at an update step."""
        raise NotImplementedError

    def after(self, state: TrainState, old: Mapping[str, Tensor], new: Mapping[str, Tensor]) -> None:
        """After the masks changed (``old`` -> ``new``, CPU): e.g. restore a spliced weight's value."""

    # -- the common work
    def weights(self) -> dict[str, Tensor]:
        """The masked parameters' current values, on the CPU (where the masks are)."""
        return {n: p.detach().cpu() for n, p in self.params.items()}

    def current(self, state: TrainState) -> dict[str, Tensor]:
        assert state.masks is not None
        return {n: m.detach().cpu() for n, m in state.masks.items()}

    @torch.no_grad()
    def apply(self, state: TrainState, new: Mapping[str, Tensor]) -> None:
        """Enforce ``new`` from now on: the books, ``set_masks``, the grown weights' optimizer state reset."""
        old = self.current(state)
        grown_any: dict[str, Tensor] = {}
        for n, o in old.items():
            nw = new[n]
            dropped, grown = o & ~nw, nw & ~o
            self.grown_then_dropped += int((dropped & self.grown_alive[n]).sum())
            self.grown_alive[n] = (self.grown_alive[n] & nw) | grown
            self.grown += int(grown.sum())
            grown_any[n] = grown
        self.updates += 1
        self.before_set(state, old, new)
        state.set_masks(Masks({n: new[n] for n in old}))
        for n, g in grown_any.items():  # start grown weights from no history (they had none: explicit)
            p = self.params[n]
            for value in state.optimizer.state.get(p, {}).values():
                if isinstance(value, Tensor) and value.shape == p.shape:
                    value.masked_fill_(g.to(value.device), 0)
        self.after(state, old, new)

    def before_set(self, state: TrainState, old: Mapping[str, Tensor], new: Mapping[str, Tensor]) -> None:
        """Just before the new masks are enforced (the newly pruned weights still hold their values)."""

    def summary(self) -> dict[str, Any]:
        """What ``result.json`` records: updates, grown weights, grown weights dropped again later, and
        per layer the fraction of the starting mask no longer kept at the end and the final density."""
        start, final = self.start_masks or {}, self.final_masks or {}
        changed, density = {}, {}
        for n, s in start.items():
            f = final.get(n, s)
            kept = int(s.sum())
            changed[n] = 1 - int((s & f).sum()) / kept if kept else 0.0
            density[n] = int(f.sum()) / f.numel() if f.numel() else 0.0
        return {"method": self.method, "updates": self.updates, "grown": self.grown,
                "grown_then_dropped": self.grown_then_dropped,
                "kept_final": sum(int(f.sum()) for f in final.values()),
                "changed": changed, "layer_density_final": density}

    # -- resume
    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state(), "updates": self.updates, "grown": self.grown,
                "grown_then_dropped": self.grown_then_dropped, "start_masks": self.start_masks or {},
                "grown_alive": self.grown_alive, "own": self.own_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        self.updates, self.grown, self.grown_then_dropped = state["updates"], state["grown"], \
            state["grown_then_dropped"]
        self.start_masks = dict(state["start_masks"]) or None
        self.grown_alive = dict(state["grown_alive"])
        self.load_own_state(state["own"])

    def own_state(self) -> dict[str, Any]:
        """A subclass's own state (tensors, numbers, lists, dicts)."""
        return {}

    def load_own_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`own_state`."""


class SET(Updater):
    """SET: drop the smallest ``|w|``, grow at random (uniform scores from the updater's stream)."""

    method = "set"

    def propose(self, state: TrainState, fraction: float) -> dict[str, Tensor]:
        masks = self.current(state)
        scores = {n: torch.rand(m.shape, generator=self.generator) for n, m in masks.items()}
        return dict(drop_grow(self.weights(), masks, scores, fraction))


class RigL(Updater):
    """RigL: drop the smallest ``|w|``, grow the largest ``|dL/dw|`` of the dense gradient, taken from
    the update step's own backward pass by tensor hooks that exist during that step only."""

    method = "rigl"

    def __init__(self, settings: UpdaterSettings) -> None:
        super().__init__(settings)
        self._hooks: list[Any] = []
        self._grads: dict[str, Tensor] = {}

    def on_step_start(self, state: TrainState) -> None:
        assert self.schedule is not None
        if self.schedule.is_update(state.step + 1):
            self._grads = {}
            self._hooks = [p.register_hook(self._keep(n)) for n, p in self.params.items()]

    def _keep(self, name: str) -> Callable[[Tensor], None]:
        def hook(grad: Tensor) -> None:  # the gradient before the masks zero its pruned entries
            self._grads[name] = grad.detach().abs().cpu()
        return hook

    def propose(self, state: TrainState, fraction: float) -> dict[str, Tensor]:
        self._remove_hooks()
        masks = self.current(state)
        grads = {n: self._grads.get(n, torch.zeros(m.shape)) for n, m in masks.items()}  # unused: no gradient
        self._grads = {}
        return dict(drop_grow(self.weights(), masks, grads, fraction))

    def on_end(self, state: TrainState) -> None:
        self._remove_hooks()
        super().on_end(state)

    def _remove_hooks(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks = []


@dataclass(frozen=True)
class DsrOptions:
    dsr_tolerance: float = setting(0.1, "DSR: the threshold doubles or halves when the pruned count is off its "
                                        "target by more than this fraction.")

    def validate(self) -> None:
        check(0 < self.dsr_tolerance < 1, f"dsr_tolerance must be in (0, 1), got {self.dsr_tolerance}")


class DSR(Updater):
    """DSR: prune by a global adaptive threshold, regrow at random in proportion to each layer's survivors."""

    method = "dsr"

    def __init__(self, settings: UpdaterSettings) -> None:
        super().__init__(settings)
        self.threshold: float | None = None

    def propose(self, state: TrainState, fraction: float) -> dict[str, Tensor]:
        masks, weights = self.current(state), self.weights()
        kept = {n: int(m.sum()) for n, m in masks.items()}
        target = round(fraction * sum(kept.values()))
        if target == 0:
            return masks
        mags = {n: weights[n].abs() for n in masks}
        if self.threshold is None:  # the magnitude that prunes the target at this first update
            alive = torch.cat([mags[n][masks[n]] for n in masks]).double()
            self.threshold = float(alive.kthvalue(min(target + 1, alive.numel())).values)
        survivors = {}
        for n, m in masks.items():
            s = m & ~(mags[n] < self.threshold)
            if kept[n] and not bool(s.any()):  # every layer keeps at least its largest weight
                s = m.reshape(-1) & _largest(mags[n].reshape(-1).masked_fill(~m.reshape(-1), -1.0), 1)
                s = s.view(m.shape)
            survivors[n] = s
        pruned = sum(kept[n] - int(survivors[n].sum()) for n in masks)
        tol = self.options.dsr_tolerance
        if pruned < (1 - tol) * target:
            self.threshold *= 2
        elif pruned > (1 + tol) * target:
            self.threshold /= 2
        live = {n: int(s.sum()) for n, s in survivors.items()}
        grow = allocate(pruned, [live[n] for n in masks], [m.numel() - live[n] for n, m in masks.items()])
        out = {}
        for (n, s), g in zip(survivors.items(), grow):
            flat = s.reshape(-1).clone()
            free = torch.nonzero(~flat).squeeze(1)
            scores = torch.rand(free.numel(), generator=self.generator)
            flat[free[_largest(scores, g)]] = True
            out[n] = flat.view(s.shape)
        return out

    def own_state(self) -> dict[str, Any]:
        return {"threshold": self.threshold}

    def load_own_state(self, state: dict[str, Any]) -> None:
        self.threshold = state["threshold"]


def allocate(total: int, weights: list[int], caps: list[int]) -> list[int]:
    """``total`` split in proportion to ``weights`` (largest remainder, ties to the earlier entry), each
    share capped by ``caps`` and the excess given to the others the same way."""
    share = [0] * len(weights)
    left, open_ = total, [i for i in range(len(weights)) if caps[i] > 0]
    while left > 0 and open_:
        w = [weights[i] if sum(weights[j] for j in open_) > 0 else 1 for i in open_]
        raw = [left * x / sum(w) for x in w]
        base = [min(int(r), caps[i] - share[i]) for r, i in zip(raw, open_)]
        rest = left - sum(base)
        order = sorted(range(len(open_)), key=lambda k: (-(raw[k] - int(raw[k])), k))
        for k in order:
            if rest == 0:
                break
            if base[k] < caps[open_[k]] - share[open_[k]]:
                base[k] += 1
                rest -= 1
        for k, i in enumerate(open_):
            share[i] += base[k]
        left = total - sum(share)
        open_ = [i for i in open_ if share[i] < caps[i]]
    return share


@dataclass(frozen=True)
class DeeprOptions:
    deepr_l1: float = setting(1e-5, "DeepR: the L1 step of each kept parameter per optimizer step is lr times this.")
    deepr_temperature: float = setting(1e-9, "DeepR: the temperature T of the noise step sqrt(2 lr T) N(0, 1).")

    def validate(self) -> None:
        both = (self.deepr_l1, self.deepr_temperature)
        check(all(v >= 0 and math.isfinite(v) for v in both), "deepr_l1 and deepr_temperature must be numbers >= 0")


class DeepR(Updater):
    """Deep Rewiring: fixed signs, L1 and noise steps, a connection crossing zero goes dormant and a
    random dormant one is activated in its place (at the update steps)."""

    method = "deepr"
    moves_fraction = False

    def __init__(self, settings: UpdaterSettings) -> None:
        super().__init__(settings)
        self.signs: dict[str, Tensor] = {}
        self.crossed: dict[str, Tensor] = {}  # kept connections held at zero since the last update
        self.noise: torch.Generator | None = None  # the noise steps' stream, on the parameters' device
        self._noise_state: Tensor | None = None
        self._dev: dict[str, tuple[Tensor, Tensor, Tensor]] = {}  # per parameter: sign, crossed, keep on its device

    def begin(self, state: TrainState) -> None:
        for n, m in self.current(state).items():
            w = self.params[n].detach().cpu()
            drawn = torch.where(torch.rand(m.shape, generator=self.generator) < 0.5, -1.0, 1.0)
            own = torch.sign(w)
            self.signs[n] = torch.where(m & (own != 0), own, drawn).to(w.dtype)
            self.crossed[n] = torch.zeros_like(m)

    def on_start(self, state: TrainState) -> None:
        super().on_start(state)
        assert state.masks is not None
        dev = next(iter(self.params.values())).device
        if self._noise_state is not None or self.noise is None or self.noise.device != dev:
            noise = seeding.generator(self.settings.seed, "dst-deepr-noise", dev)
            if self._noise_state is not None:
                noise.set_state(self._noise_state)
            self.noise, self._noise_state = noise, None
        self._dev = {n: (self.signs[n].to(p.device, p.dtype), self.crossed[n].to(p.device),
                         state.masks[n].to(p.device)) for n, p in self.params.items()}

    @torch.no_grad()
    def on_step_end(self, state: TrainState) -> None:
        assert self.noise is not None
        lr = state.optimizer.param_groups[0]["lr"]
        opts = self.options
        std = math.sqrt(2 * lr * opts.deepr_temperature)
        for n, p in self.params.items():
            sign, crossed, keep = self._dev[n]
            step = sign * (-lr * opts.deepr_l1)
            if std > 0:
                step = step + std * torch.randn(p.shape, generator=self.noise, device=p.device, dtype=p.dtype)
            p.add_(step * keep)
            over = keep & (p * sign < 0)  # it would cross zero: held at zero, marked to go dormant
            p.masked_fill_(over, 0)
            crossed |= over
        super().on_step_end(state)

    def propose(self, state: TrainState, fraction: float) -> dict[str, Tensor]:
        masks = self.current(state)
        out, dormant = {}, 0
        for n, m in masks.items():
            went = m & self._dev[n][1].cpu() & (self.params[n].detach() == 0).cpu()
            dormant += int(went.sum())
            out[n] = m & ~went
        if dormant:  # activate as many dormant connections, uniformly over the network
            names_ = list(out)
            free = [torch.nonzero(~out[n].reshape(-1)).squeeze(1) for n in names_]
            scores = [torch.rand(f.numel(), generator=self.generator) for f in free]
            picks = [torch.zeros(f.numel(), dtype=torch.bool) for f in free]
            largest_k([f.numel() for f in free], lambda j: scores[j], dormant, picks)
            for n, f, pick in zip(names_, free, picks):
                flat = out[n].reshape(-1).clone()
                flat[f[pick]] = True
                out[n] = flat.view(out[n].shape)
        return out

    def after(self, state: TrainState, old: Mapping[str, Tensor], new: Mapping[str, Tensor]) -> None:
        for n, p in self.params.items():  # every connection starts afresh after an update
            sign, crossed, _ = self._dev[n]
            crossed.zero_()
            self._dev[n] = (sign, crossed, new[n].to(p.device))

    def own_state(self) -> dict[str, Any]:
        crossed = {n: v[1].cpu() for n, v in self._dev.items()} if self._dev else self.crossed
        return {"signs": self.signs, "crossed": crossed,
                "noise": self.noise.get_state() if self.noise is not None else None}

    def load_own_state(self, state: dict[str, Any]) -> None:
        self.signs, self.crossed = dict(state["signs"]), dict(state["crossed"])
        self._noise_state = state["noise"]


@dataclass(frozen=True)
class DnsOptions:
    dns_margin: float = setting(1.1, "DNS: hysteresis, the splice threshold over the prune threshold (b / a); a kept "
                                     "weight stays while margin * |w| is above the threshold a pruned one must pass.")

    def validate(self) -> None:
        check(math.isfinite(self.dns_margin) and self.dns_margin >= 1,
              f"dns_margin must be >= 1, got {self.dns_margin}")


class DNS(Updater):
    """Dynamic Network Surgery: pruned weights keep training in a shadow copy; two thresholds with
    hysteresis, set per layer to hold its count, prune and splice at the update steps."""

    method = "dns"
    moves_fraction = False

    def __init__(self, settings: UpdaterSettings) -> None:
        super().__init__(settings)
        self.shadow: dict[str, Tensor] = {}
        self._hooks: list[Any] = []

    def begin(self, state: TrainState) -> None:
        self.shadow = {n: torch.zeros_like(p.detach()) for n, p in self.params.items()}

    def on_start(self, state: TrainState) -> None:
        super().on_start(state)
        self.shadow = {n: s.to(self.params[n].device) for n, s in self.shadow.items()}
        self._pruned = {n: ~state.masks[n].to(p.device) for n, p in self.params.items()}
        self._state = state
        self._hooks = [p.register_hook(self._shadow_step(n)) for n, p in self.params.items()]

    def _shadow_step(self, name: str) -> Callable[[Tensor], None]:
        def hook(grad: Tensor) -> None:  # the dense gradient: the pruned weights take a plain step
            with torch.no_grad():
                lr = self._state.optimizer.param_groups[0]["lr"]
                self.shadow[name].sub_(grad.detach() * self._pruned[name] * lr)
        return hook

    def propose(self, state: TrainState, fraction: float) -> dict[str, Tensor]:
        masks, margin = self.current(state), self.options.dns_margin
        out = {}
        for n, m in masks.items():
            w = torch.where(m, self.params[n].detach().cpu(), self.shadow[n].cpu()).abs()
            score = torch.where(m, w * margin, w).reshape(-1)
            out[n] = _largest(score, int(m.sum())).view(m.shape)
        return out

    @torch.no_grad()
    def before_set(self, state: TrainState, old: Mapping[str, Tensor], new: Mapping[str, Tensor]) -> None:
        for n, p in self.params.items():  # a pruned weight's value moves to the shadow
            gone = (old[n] & ~new[n]).to(p.device)
            self.shadow[n] = torch.where(gone, p.detach(), self.shadow[n])

    @torch.no_grad()
    def after(self, state: TrainState, old: Mapping[str, Tensor], new: Mapping[str, Tensor]) -> None:
        for n, p in self.params.items():  # a spliced weight returns with its shadow value
            back = (new[n] & ~old[n]).to(p.device)
            p.copy_(torch.where(back, self.shadow[n], p))
            self.shadow[n].masked_fill_(new[n].to(p.device), 0)
            self._pruned[n] = ~new[n].to(p.device)

    def on_end(self, state: TrainState) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks = []
        super().on_end(state)

    def own_state(self) -> dict[str, Any]:
        return {"shadow": {n: s.detach().cpu() for n, s in self.shadow.items()}}

    def load_own_state(self, state: dict[str, Any]) -> None:
        self.shadow = dict(state["shadow"])


# ---- registration: one runner kind, one entry per updater ---------------------------------------------

class Updates(Runner):
    """The runner of DST updaters (``kind="update"``): they move a mask while the network trains and
    make none of their own, so ``prune`` refuses them with the way to use them."""

    kind = "update"
    data_label = "trains"
    needs_trainer = True  # prune() alone cannot run them: they act during training

    def validate(self, method: Any, opts: Any) -> None:
        raise _not_a_pruner(method.name)

    def run(self, ctx: Any, opts: Any, density: float) -> Any:
        raise _not_a_pruner(ctx.method.name)


def _not_a_pruner(name: str) -> SketchpruneError:
    return SketchpruneError(
        f"{name!r} is a dynamic sparse training method: it moves a mask while the network trains and makes none of "
        f"its own; use dst={name!r} with a starting mask (sketchprune train --method snip --dst {name}), or "
        f"sketchprune.dst.updater({name!r}) as a callback of sketchprune.train.train")


UPDATES = Updates()

Factory = Callable[[UpdaterSettings], "Updater | None"]


def _register(name: str, description: str, cls: type[Updater] | None, options: type | None = None) -> None:
    def make(settings: UpdaterSettings) -> Updater | None:
        return cls(settings) if cls is not None else None

    make.__doc__ = f"The {name} updater (None: the mask does not move)."
    make.updater_class = cls  # type: ignore[attr-defined]  # what uses_fraction asks
    kw = {"options": options} if options is not None else {}
    register(name, description=description, kind=UPDATES, **kw)(make)


_register("static", "Static sparse training: the mask never moves (the baseline every DST paper reports)", None)
_register("set", "SET (Mocanu et al., Nat. Commun. 2018): drop the smallest `|w|`, grow at random", SET)
_register("rigl", "RigL (Evci et al., ICML 2020): drop the smallest `|w|`, grow the largest `|dL/dw|` of the dense "
                  "gradient", RigL)
_register("dsr", "DSR (Mostafa & Wang, ICML 2019): a global adaptive magnitude threshold prunes, regrowth "
                 "reallocated to layers by their survivors", DSR, DsrOptions)
_register("deepr", "Deep Rewiring (Bellec et al., ICLR 2018): fixed signs, L1 and noise steps; a connection "
                   "crossing zero goes dormant, a random one is activated", DeepR, DeeprOptions)
_register("dns", "Dynamic Network Surgery (Guo et al., NeurIPS 2016): masked weights keep training; hysteresis "
                 "thresholds prune and splice (ours hold the density)", DNS, DnsOptions)


def names() -> list[str]:
    """Every registered DST updater (``static`` first)."""
    return [n for n in method_names() if get_method(n).kind == UPDATES.kind]


def moves(name: str) -> bool:
    """Whether updater ``name`` moves the mask (every one but ``static``)."""
    return name != "static"


def uses_fraction(name: str) -> bool:
    """Whether ``dst_fraction`` / ``dst_schedule`` apply to updater ``name``."""
    cls = getattr(get_method(name).fn, "updater_class", None)
    return cls is None or cls.moves_fraction


def updater(name: str, *, interval: int = DEFAULTS["interval"], start: float = DEFAULTS["start"],
            end: float = DEFAULTS["end"], fraction: float = DEFAULTS["fraction"],
            schedule: str = DEFAULTS["schedule"], seed: int = 0, **options: Any) -> Updater | None:
    """The training callback of DST updater ``name`` (None for ``static``): pass it to
    ``sketchprune.train.train(model, data, cfg, masks=..., callbacks=[it])`` with any starting masks.
    ``options`` are the updater's own (``sketchprune methods`` lists them)."""
    check(name in names(), f"unknown dst {name!r}; use one of {', '.join(names())}")
    check_schedule(interval, start, end, fraction, schedule)
    spec = get_method(name)
    return spec.fn(UpdaterSettings(interval, start, end, fraction, schedule, seed,  # type: ignore[misc]
                                   spec.make_options(options)))


@dataclass(frozen=True)
class RunSettings:
    """The DST settings of a run, as ``RunConfig`` holds them (for :func:`check_run`)."""

    dst: str
    interval: int
    start: float
    end: float
    fraction: float
    schedule: str
    options: Mapping[str, Any] = field(default_factory=dict)


def check_run(s: RunSettings, *, density: float, structure: str) -> Any:
    """The one check of a run's DST settings (at config time); returns the updater's options object.
    Bad settings are one-line errors: a moving mask on a dense run or on units, schedule settings
    on a static run, fractions outside [0, 1], a fraction for an updater that moves by its own rule."""
    spec = get_method(s.dst)
    canonical_options(s.dst, s.options)
    given = {"dst_interval": s.interval != DEFAULTS["interval"], "dst_start": s.start != DEFAULTS["start"],
             "dst_end": s.end != DEFAULTS["end"], "dst_fraction": s.fraction != DEFAULTS["fraction"],
             "dst_schedule": s.schedule != DEFAULTS["schedule"]}
    if not moves(s.dst):
        extra = [k for k, v in given.items() if v]
        check(not extra, f"{extra[0] if extra else ''} applies to a mask that moves; drop it or set dst (one of "
                         f"{', '.join(n for n in names() if moves(n))})")
        return spec.make_options(s.options)
    check(structure == "weights", f"dst={s.dst} moves a weight mask; structure=units has none: drop dst or use "
                                  "structure=weights")
    check(density < 1, f"dst={s.dst} moves a sparse mask; a dense run (density 1) has none: lower the density or "
                       "drop dst")
    check_schedule(s.interval, s.start, s.end, s.fraction, s.schedule)
    if not uses_fraction(s.dst):
        extra = [k for k in ("dst_fraction", "dst_schedule") if given[k]]
        check(not extra, f"{extra[0] if extra else ''} does not apply to dst={s.dst} (its own rule decides how many "
                         "weights move); drop it")
    return spec.make_options(s.options)


def unused_settings(name: str) -> tuple[str, ...]:
    """The run settings updater ``name`` does not take: the whole schedule for ``static``, the
    fraction and its decay for the updaters that move by their own rule (a sweep leaves them out)."""
    if not moves(name):
        return ("dst_interval", "dst_start", "dst_end", "dst_fraction", "dst_schedule")
    return () if uses_fraction(name) else ("dst_fraction", "dst_schedule")


def canonical_options(name: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """The options of updater ``name`` with their defaults dropped (so equal runs hash equally); an
    option of another updater, or of none, is a one-line error."""
    check(name in names(), f"unknown dst {name!r}; use one of {', '.join(names())}")
    for key in options:
        owner = next((n for n in names() if any(f.name == key for f in get_method(n).option_fields())), None)
        check(owner is not None, f"unknown dst option {key!r}; the updaters' options: "
                                 f"{', '.join(f.name for n in names() for f in get_method(n).option_fields())}")
        check(owner == name, f"option {key!r} applies to dst={owner}, not dst={name}; drop it or set dst={owner}")
    return get_method(name).non_default(options)


def check_steps(s: RunSettings, total_steps: int) -> None:
    """The schedule of a moving mask fits ``total_steps`` of training (a one-line error if not)."""
    if moves(s.dst):
        Schedule(total_steps, s.interval, s.start, s.end, s.fraction, s.schedule)


def for_run(s: RunSettings, seed: int) -> Updater | None:
    """The updater of a run's DST settings (None for ``static``)."""
    return updater(s.dst, interval=s.interval, start=s.start, end=s.end, fraction=s.fraction, schedule=s.schedule,
                   seed=seed, **dict(s.options))


__all__ = ["DEFAULTS", "DNS", "DSR", "SCHEDULES", "SET", "DeepR", "RigL", "RunSettings", "Schedule", "Updater",
           "UpdaterSettings", "Updates", "allocate", "canonical_options", "check_run", "check_schedule", "check_steps",
           "drop_grow", "for_run", "moves", "names", "unused_settings", "updater", "uses_fraction"]
