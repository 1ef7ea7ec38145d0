"""One readable training loop for (pruned) models on tensor data sets, with events.

Data stay on the training device; batches are index slices of a per-epoch permutation drawn
from a seeded generator, and image augmentation (random crop with padding, horizontal flip)
runs on the whole batch at once. ``_loop`` is the loop itself; everything else a run needs is a
:class:`Callback`, given the run's :class:`TrainState`:

* ``on_start(state)``: once per call, after a resume (``state.epoch`` is the first epoch this
  call trains, ``state.step`` the optimizer steps taken before);
* ``on_step_start(state)``: before each step's forward pass (``state.batch`` is its ``(x, y)``);
* ``on_step_end(state)``: after each optimizer step (``state.step`` counts it, ``state.loss`` is
  its loss on the device: reading it synchronizes a GPU);
* ``on_epoch_end(state)``: after each epoch's evaluation (its row is ``state.history[-1]``);
* ``on_end(state)``: once per call, also when the loop stopped with an error (like ``finally``).

Only the events a callback defines are dispatched to it, so an unused event costs nothing per
step. A callback may change the masks at any event with ``state.set_masks(masks)``: the new
masks are enforced at once and from then on (pruned weights exactly zero, their optimizer state
zeroed, weights that the new masks keep train again). A callback that must survive a kill
defines ``state_dict()`` and ``load_state_dict(d)``: its state is saved in ``checkpoint.pt``
under its ``name`` (default: its class name) and restored before ``on_start`` when the run
resumes; the masks a callback set are saved and restored with it. A callback ends the training
early by setting ``state.stop`` (checked before each epoch starts: the epoch in progress finishes
with its metrics and checkpoint; a resumed run's callback sets it again in ``on_start``).

The run's own work is callbacks too: :class:`Snapshot` (the weights after k steps that IMP
rewinds to, ``snapshot-<k>.pt``), :class:`Metrics` (``metrics.jsonl``), :class:`Progress` (the
progress bar) and :class:`Checkpoint` (``checkpoint.pt``, written atomically after every epoch;
a run resumes from it). ``train`` runs them in this order: the snapshot, the caller's callbacks
in the order given, metrics, progress bar, checkpoint; so what a callback does at the end of an
epoch is in that epoch's metrics and checkpoint.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sketchprune import seeding
from sketchprune.config import Settings, config_hash, setting
from sketchprune.data import Dataset
from sketchprune.errors import SketchpruneError, check
from sketchprune.losses import task_loss
from sketchprune.masks import MaskHandle, Masks, zero_pruned_state
from sketchprune.atomic import atomic_path, write_text

OPTIMIZERS = ("sgd", "adam", "adamw")
LR_SCHEDULES = ("cosine", "step", "constant")


@dataclass(frozen=True)
class TrainConfig(Settings):
    """Training settings; every field is a flag of ``sketchprune train`` and a sweep key ``train.FIELD``."""

    epochs: int = setting(10, "Training epochs.")
    batch_size: int = setting(128, "Samples per step.")
    optimizer: str = setting("sgd", "Optimizer.", choices=OPTIMIZERS)
    lr: float = setting(0.1, "Base learning rate.")
    momentum: float = setting(0.9, "SGD momentum.")
    weight_decay: float = setting(5e-4, "L2 weight decay (pruned weights stay exactly zero).")
    lr_schedule: str = setting("cosine", "Learning-rate schedule over the epochs.", choices=LR_SCHEDULES)
    lr_drops: tuple[int, ...] = setting((), "Epochs at which the step schedule multiplies the rate by lr_gamma.")
    lr_gamma: float = setting(0.1, "Factor of each step drop.")
    augment: bool = setting(False, "Random crop (4-pixel padding) and horizontal flip, for image data sets.")

    def validate(self) -> None:
        check(self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}")
        check(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        check(self.lr > 0 and math.isfinite(self.lr), f"lr must be a positive number, got {self.lr}")
        check(self.lr_schedule == "step" or not self.lr_drops,
              "lr_drops only apply to lr_schedule='step'; drop them or set lr_schedule=step")
        check(self.optimizer == "sgd" or self.momentum == 0.9,
              "momentum only applies to optimizer='sgd'; drop it or use sgd")
        check(0 <= self.momentum < 1, f"momentum must be in [0, 1), got {self.momentum}")
        check(self.weight_decay >= 0 and math.isfinite(self.weight_decay),
              f"weight_decay must be a number >= 0, got {self.weight_decay}")
        check(0 < self.lr_gamma and math.isfinite(self.lr_gamma),
              f"lr_gamma must be a positive number (each drop multiplies the rate by it), got {self.lr_gamma}")
        late = [d for d in self.lr_drops if not 0 < d < self.epochs]
        check(not late, f"lr_drops must be epochs in 1..{self.epochs - 1} (a drop at {late[0] if late else 0} would "
                        "never apply or precede training); drop it or train longer")


def resolve_device(device: str | None) -> torch.device:
    """``cuda`` when present unless told otherwise; asking for cuda without a GPU is an error."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    check(device in ("cpu", "cuda") or device.startswith("cuda:"), f"unknown device {device!r}; use cpu or cuda")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SketchpruneError("--device cuda was asked for but no GPU is available; use --device cpu")
    return torch.device(device)


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    opt = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.AdamW
    return opt(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def lr_factor(cfg: TrainConfig, epoch: int) -> float:
    """Multiplier of the base learning rate during ``epoch`` (0-based)."""
    if cfg.lr_schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * epoch / cfg.epochs))
    if cfg.lr_schedule == "step":
        return cfg.lr_gamma ** sum(epoch >= d for d in cfg.lr_drops)
    return 1.0


def augment(x: Tensor, generator: torch.Generator, pad: int = 4) -> Tensor:
    """Random crop with ``pad`` zero padding and horizontal flip, for a whole image batch at once."""
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(x.device)
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(x.device)
    rows = (dy.view(n, 1) + torch.arange(h, device=x.device)).view(n, 1, h, 1)
    cols = (dx.view(n, 1) + torch.arange(w, device=x.device)).view(n, 1, 1, w)
    idx_n = torch.arange(n, device=x.device).view(n, 1, 1, 1)
    idx_c = torch.arange(x.shape[1], device=x.device).view(1, -1, 1, 1)
    out = padded[idx_n, idx_c, rows, cols]
    flip = (torch.rand(n, generator=generator) < 0.5).to(x.device)
    return torch.where(flip.view(n, 1, 1, 1), out.flip(3), out)


@torch.no_grad()
def evaluate(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 1000,
             task: str = "classification") -> tuple[float, float]:
    """(mean loss, metric) of ``model`` on ``(x, y)``, in eval mode: (cross-entropy, top-1 accuracy)
    for classification, (mean squared error, the same MSE) for ``task="regression"``."""
    was = model.training
    model.eval()
    if task == "regression":
        sq = sum(float(F.mse_loss(model(x[i:i + batch_size]), y[i:i + batch_size], reduction="sum"))
                 for i in range(0, len(y), batch_size))
        model.train(was)
        mse = sq / y.numel()
        return mse, mse
    loss, correct = 0.0, 0
    for i in range(0, len(y), batch_size):
        out = model(x[i:i + batch_size])
        loss += float(F.cross_entropy(out, y[i:i + batch_size], reduction="sum"))
        correct += int((out.argmax(1) == y[i:i + batch_size]).sum())
    model.train(was)
    return loss / len(y), correct / len(y)


class Callback:
    """Base class of training callbacks: override the events you need (see the module docstring);
    the others are never called. ``name`` keys the callback's state in the checkpoint."""

    name: str | None = None

    def on_start(self, state: TrainState) -> None:
        """Once per call, after a resume and before the first step."""

    def on_step_start(self, state: TrainState) -> None:
        """Before each step's forward pass; ``state.batch`` is its ``(x, y)``."""

    def on_step_end(self, state: TrainState) -> None:
        """After each optimizer step; ``state.step`` counts it."""

    def on_epoch_end(self, state: TrainState) -> None:
        """After each epoch's evaluation; ``state.history[-1]`` is its row."""

    def on_end(self, state: TrainState) -> None:
        """Once per call, after the last epoch or when the loop stopped with an error."""

    def state_dict(self) -> dict[str, Any]:
        """What the callback needs after a resume (tensors, numbers, strings, lists, dicts)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (tensors come back on the CPU)."""


EVENTS = ("on_start", "on_step_start", "on_step_end", "on_epoch_end", "on_end")


def _defines(callback: object, method: str) -> bool:
    """Whether ``callback`` has its own ``method`` (not :class:`Callback`'s no-op)."""
    bound = getattr(callback, method, None)
    return callable(bound) and getattr(bound, "__func__", None) is not getattr(Callback, method)


def callback_name(callback: object) -> str:
    """The key of ``callback``'s state in the checkpoint: its ``name``, else its class name."""
    return getattr(callback, "name", None) or type(callback).__name__


@dataclass(eq=False)
class TrainState:
    """What callbacks see of a run: the model, its optimizer and data, where the loop is
    (``epoch``: 0-based, the one in progress; ``step``: optimizer steps taken, over all calls),
    the metrics so far, the step's batch and loss, and the masks that training enforces."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    data: Dataset
    config: TrainConfig
    generator: torch.Generator  # batch order and augmentation: a callback that draws from it changes them
    device: torch.device
    seed: int
    out: Path | None
    steps_per_epoch: int
    callbacks: list[Any] = field(default_factory=list)  # every callback of the run, the built-in ones too
    epoch: int = 0
    step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    batch: tuple[Tensor, Tensor] | None = None
    loss: Tensor | None = None
    masks_changed: bool = False  # a callback set masks: the checkpoint keeps them
    stop: bool = False  # a callback ends the training: no epoch starts after this one
    _masks: Masks | None = None
    _handle: MaskHandle | None = None

    @property
    def masks(self) -> Masks | None:
        """The masks training enforces (``train``'s ``masks``, or the last ``set_masks``); masks
        the caller applied before ``train`` stay enforced besides them."""
        return self._masks

    def set_masks(self, masks: Mapping[str, Tensor] | None) -> None:
        """Train with ``masks`` from now on, in place of the current ones (None: no masks of
        train's own). The newly pruned weights become exactly zero and their optimizer state
        (momentum, Adam moments) zero; weights the new masks keep train again, with the values they
        have (the old masks are taken back first, so a weight only they pruned is not zeroed: a
        resumed run's grown weights keep their checkpointed values)."""
        new = masks if masks is None or isinstance(masks, Masks) else Masks(masks)
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        handle = new.apply(self.model) if new is not None else None
        self._masks, self._handle, self.masks_changed = new, handle, True
        zero_pruned_state(self.optimizer)


class _Events:
    """Per event, the bound methods of the callbacks that define it, in callback order."""

    def __init__(self, callbacks: Sequence[object]) -> None:
        def handlers(event: str) -> list[Callable[[TrainState], None]]:
            return [getattr(c, event) for c in callbacks if _defines(c, event)]

        self.on_start, self.on_step_start, self.on_step_end = handlers("on_start"), handlers("on_step_start"), \
            handlers("on_step_end")
        self.on_epoch_end, self.on_end = handlers("on_epoch_end"), handlers("on_end")


class Snapshot(Callback):
    """The model's state after ``step`` optimizer steps (the weights IMP rewinds to), kept in
    ``out / snapshot-<step>.pt`` too, so a resumed run still has it."""

    def __init__(self, step: int, out: Path | None) -> None:
        check(step >= 0, f"snapshot_step must be >= 0, got {step}")
        self.step = step
        self.file = out / f"snapshot-{step}.pt" if out is not None else None
        self.snapshot: dict[str, Tensor] | None = None

    def on_start(self, state: TrainState) -> None:
        if state.step > 0 and self.step <= state.step:  # taken before this call
            check(self.file is not None and self.file.exists(),
                  f"the step-{self.step} snapshot of {state.out} is missing; delete the folder to start over")
            self.snapshot = torch.load(self.file, map_location=state.device, weights_only=True)
        elif self.step == 0:
            self._take(state)

    def on_step_end(self, state: TrainState) -> None:
        if state.step == self.step:
            self._take(state)

    def _take(self, state: TrainState) -> None:
        self.snapshot = {k: v.detach().clone() for k, v in state.model.state_dict().items()}
        if self.file is not None:
            with atomic_path(self.file) as tmp:
                torch.save(self.snapshot, tmp)


class Metrics(Callback):
    """Writes ``metrics.jsonl`` (one JSON row per epoch) atomically after every epoch."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_epoch_end(self, state: TrainState) -> None:
        write_text(self.path, "".join(json.dumps(h) + "\n" for h in state.history))

    def on_end(self, state: TrainState) -> None:
        if state.history:  # a run resumed with no epoch left writes its rows too (a damaged file is whole again)
            self.on_epoch_end(state)


class Progress(Callback):
    """A tqdm progress bar over the epochs, with the last test accuracy."""

    def __init__(self) -> None:
        self.bar: Any = None

    def on_start(self, state: TrainState) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=state.config.epochs, initial=state.epoch, desc="train", leave=False)

    def on_epoch_end(self, state: TrainState) -> None:
        self.bar.update(1)
        row = state.history[-1]
        if "test_mse" in row:
            self.bar.set_postfix(mse=f"{row['test_mse']:.3g}")
        else:
            self.bar.set_postfix(acc=f"{row['test_acc']:.3f}")

    def on_end(self, state: TrainState) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class Checkpoint(Callback):
    """``checkpoint.pt``: written atomically after every epoch (model, optimizer, batch-order
    generator, metrics, the state of every callback that has one, the masks when a callback set
    them); :meth:`restore` resumes a run from it. ``key`` ties it to one training config and seed."""

    def __init__(self, path: Path, key: str) -> None:
        self.path, self.key = path, key

    def restore(self, state: TrainState) -> None:
        """Resume ``state`` from the checkpoint, when there is one."""
        if not self.path.exists():
            return
        try:  # on the CPU: the generator's state must be, and load_state_dict moves the rest
            saved = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as e:  # a damaged file: torch raises several types
            raise SketchpruneError(f"checkpoint {self.path} cannot be read ({type(e).__name__}); delete it to start "
                                   "over (a sweep's --retry-failed does)") from None
        if saved.get("config_hash") != self.key:
            raise SketchpruneError(f"checkpoint {self.path} is from another training config; use a fresh --out folder")
        states = saved.get("callbacks", {})
        stateful = _stateful(state.callbacks)
        check(sorted(states) == sorted(stateful),
              f"checkpoint {self.path} holds the state of callbacks {sorted(states) or 'none'} but this run has "
              f"{sorted(stateful) or 'none'}; resume with the same callbacks or use a fresh --out folder")
        state.model.load_state_dict(saved["model"])
        state.optimizer.load_state_dict(saved["optimizer"])
        state.generator.set_state(saved["generator"])
        state.epoch, state.history = saved["epoch"], json.loads(saved["history"])
        state.step = state.epoch * state.steps_per_epoch
        for name, callback in stateful.items():
            callback.load_state_dict(states[name])
        if "masks" in saved:  # a callback had set them (None: no masks of train's own)
            state.set_masks(Masks(saved["masks"]) if saved["masks"] is not None else None)

    def on_epoch_end(self, state: TrainState) -> None:
        saved: dict[str, Any] = {"config_hash": self.key, "epoch": state.epoch + 1, "model": state.model.state_dict(),
                                 "optimizer": state.optimizer.state_dict(), "generator": state.generator.get_state(),
                                 "history": json.dumps(state.history)}
        stateful = _stateful(state.callbacks)
        if stateful:
            saved["callbacks"] = {name: c.state_dict() for name, c in stateful.items()}
        if state.masks_changed:
            saved["masks"] = {n: m.detach().cpu() for n, m in state.masks.items()} if state.masks is not None else None
        with atomic_path(self.path) as tmp:
            torch.save(saved, tmp)


def _stateful(callbacks: Sequence[object]) -> dict[str, Any]:
    """Name -> callback, for the callbacks that define ``state_dict``."""
    return {callback_name(c): c for c in callbacks if _defines(c, "state_dict")}


def train(
    model: nn.Module,
    data: Dataset,
    cfg: TrainConfig = TrainConfig(),
    *,
    masks: Masks | None = None,
    out: str | Path | None = None,
    device: str | None = None,
    progress: bool = False,
    stop_after: int | None = None,
    seed: int = 0,
    snapshot_step: int | None = None,
    callbacks: Sequence[Callback] = (),
    run_key: str | None = None,
) -> dict[str, Any]:
    """Train ``model`` on ``data`` (pruned weights kept at exactly zero), with checkpoints in ``out``.

    Returns final and best test accuracy, losses and wall time (a regression data set,
    ``data.task == "regression"``, trains on the mean squared error and returns the final and best
    test MSE instead; its accuracies are None). ``stop_after`` ends after that
    many epochs in this call (the checkpoint lets a later call resume). ``seed`` fixes the batch
    order and augmentation (a stream apart from the one that initialized the model). Masks
    applied by the caller stay applied; ``masks`` is applied for the training only. With
    ``snapshot_step`` k, the result's ``snapshot`` holds the model's state after k optimizer steps
    (kept in ``out`` too, so a resumed run still has it): the weights rewinding returns to.
    ``callbacks`` receive the loop's events (see the module docstring). A checkpoint resumes only
    the training it was written by: ``run_key`` names it (a run passes the hash of its whole
    config); by default the training settings and the seed do.
    """
    cfg.validate()
    check(not cfg.augment or data.image, f"augment (crop and flip) applies to image data; {data.name} has none")
    stateful = [callback_name(c) for c in callbacks if _defines(c, "state_dict")]
    check(len(set(stateful)) == len(stateful), f"two callbacks with state share a name ({', '.join(stateful)}); "
                                               "give each its own `name`")
    dev = resolve_device(device)
    model.to(dev)
    folder = Path(out) if out is not None else None
    snapshot = Snapshot(snapshot_step, folder) if snapshot_step is not None else None
    key = run_key if run_key is not None else f"{config_hash(cfg)}-s{seed}"
    checkpoint = Checkpoint(folder / "checkpoint.pt", key) if folder is not None else None
    everything: list[Any] = [snapshot] if snapshot is not None else []  # in the order of the module docstring
    everything += callbacks
    if folder is not None:
        everything.append(Metrics(folder / "metrics.jsonl"))
    if progress:
        everything.append(Progress())
    if checkpoint is not None:
        everything.append(checkpoint)
    state = TrainState(model, make_optimizer(model, cfg), data.to(dev), cfg, seeding.generator(seed, "train"), dev,
                       seed, folder, -(-len(data.train_y) // cfg.batch_size), everything)
    try:
        if masks is not None:
            state._masks, state._handle = masks, masks.apply(model)
        if checkpoint is not None:
            checkpoint.restore(state)
        t0 = time.perf_counter()
        end = cfg.epochs if stop_after is None else min(cfg.epochs, state.epoch + stop_after)
        _loop(state, end, _Events(everything))
    finally:
        if state._handle is not None:
            state._handle.remove()
    history = state.history
    final = history[-1] if history else {}
    out = {
        "epochs_done": len(history),
        "final_test_acc": final.get("test_acc"),
        "best_test_acc": max((h["test_acc"] for h in history if "test_acc" in h), default=None),
        "final_train_loss": final.get("train_loss"),
        "wall_seconds": time.perf_counter() - t0,
        "history": history,
        "snapshot": snapshot.snapshot if snapshot is not None else None,
    }
    if data.task == "regression":  # the metric is the test MSE (lower is better)
        out["final_test_mse"] = final.get("test_mse")
        out["best_test_mse"] = min((h["test_mse"] for h in history), default=None)
    return out


def _loop(state: TrainState, end: int, events: _Events) -> None:
    """The epochs from ``state.epoch`` up to ``end``: train, evaluate, raise the events.

    The loss is summed on the device and read once per epoch, so a GPU is not synchronized every
    step; a non-finite loss is caught at the end of the epoch in which it appeared.
    """
    model, opt, data, cfg, gen = state.model, state.optimizer, state.data, state.config, state.generator
    dev = state.device
    n = len(data.train_y)
    regression = data.task == "regression"
    loss_of = (lambda out, y: task_loss(out, y, task="regression")) if regression else F.cross_entropy
    try:
        for f in events.on_start:
            f(state)
        for epoch in range(state.epoch, end):
            if state.stop:
                break
            state.epoch = epoch
            for g in opt.param_groups:
                g["lr"] = cfg.lr * lr_factor(cfg, epoch)
            model.train()
            perm = torch.randperm(n, generator=gen).to(dev)
            total = torch.zeros((), device=dev, dtype=torch.float64)
            for i in range(0, n, cfg.batch_size):
                idx = perm[i:i + cfg.batch_size]
                x, y = data.train_x[idx], data.train_y[idx]
                if cfg.augment:
                    x = augment(x, gen)
                state.batch = (x, y)
                for f in events.on_step_start:
                    f(state)
                loss = loss_of(model(x), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += loss.detach().double() * len(y)
                state.step += 1
                state.loss = loss
                for f in events.on_step_end:
                    f(state)
            train_loss = float(total) / n
            if not math.isfinite(train_loss):
                raise SketchpruneError(f"training loss became {train_loss} in epoch {epoch + 1}; lower --lr")
            test_loss, test_metric = evaluate(model, data.test_x, data.test_y, task=data.task)
            state.history.append({"epoch": epoch + 1, "train_loss": train_loss, "test_loss": test_loss,
                                  "test_mse" if regression else "test_acc": test_metric,
                                  "lr": opt.param_groups[0]["lr"]})
            for f in events.on_epoch_end:
                f(state)
    finally:
        for f in events.on_end:
            f(state)
