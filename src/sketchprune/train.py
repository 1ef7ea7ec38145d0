"""One readable training loop for (pruned) models on tensor data sets.

Data stay on the training device; batches are index slices of a per-epoch permutation drawn
from a seeded generator, and image augmentation (random crop with padding, horizontal flip)
runs on the whole batch at once. A checkpoint is written atomically after every epoch and a
run resumes from it; metrics go to ``metrics.jsonl``.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sketchprune import seeding
from sketchprune.config import Settings, config_hash, setting
from sketchprune.data import Dataset
from sketchprune.errors import SketchpruneError, check
from sketchprune.masks import Masks
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
def evaluate(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 1000) -> tuple[float, float]:
    """(mean cross-entropy, top-1 accuracy) of ``model`` on ``(x, y)``, in eval mode."""
    was = model.training
    model.eval()
    loss, correct = 0.0, 0
    for i in range(0, len(y), batch_size):
        out = model(x[i:i + batch_size])
        loss += float(F.cross_entropy(out, y[i:i + batch_size], reduction="sum"))
        correct += int((out.argmax(1) == y[i:i + batch_size]).sum())
    model.train(was)
    return loss / len(y), correct / len(y)


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
) -> dict[str, Any]:
    """Train ``model`` on ``data`` (pruned weights kept at exactly zero), with checkpoints in ``out``.

    Returns final and best test accuracy, losses and wall time. ``stop_after`` ends after that
    many epochs in this call (the checkpoint lets a later call resume). ``seed`` fixes the batch
    order and augmentation (a stream apart from the one that initialized the model). Masks
    applied by the caller stay applied; ``masks`` is applied for the training only. With
    ``snapshot_step`` k, the result's ``snapshot`` holds the model's state after k optimizer steps
    (kept in ``out`` too, so a resumed run still has it): the weights rewinding returns to.
    """
    cfg.validate()
    check(not cfg.augment or data.image, f"augment (crop and flip) applies to image data; {data.name} has none")
    dev = resolve_device(device)
    model.to(dev)
    handle = masks.apply(model) if masks is not None else None
    try:
        return _loop(model, data.to(dev), cfg, dev, Path(out) if out is not None else None, progress, stop_after,
                     seed, snapshot_step)
    finally:
        if handle is not None:
            handle.remove()


def _loop(model: nn.Module, data: Dataset, cfg: TrainConfig, dev: torch.device, out: Path | None, progress: bool,
          stop_after: int | None, seed: int, snapshot_step: int | None) -> dict[str, Any]:
    """The epochs: resume from ``out``'s checkpoint, train, evaluate, checkpoint after each epoch.

    The loss is summed on the device and read once per epoch, so a GPU is not synchronized every
    step; a non-finite loss is caught at the end of the epoch in which it appeared.
    """
    opt = make_optimizer(model, cfg)
    gen = seeding.generator(seed, "train")  # batch order and augmentation, apart from the init stream
    start, history = 0, []
    ckpt = out / "checkpoint.pt" if out is not None else None
    key = f"{config_hash(cfg)}-s{seed}"
    if ckpt is not None and ckpt.exists():
        try:
            state = torch.load(ckpt, map_location=dev, weights_only=True)
        except Exception as e:  # a damaged file: torch raises several types
            raise SketchpruneError(f"checkpoint {ckpt} cannot be read ({type(e).__name__}); delete it to start "
                                   "over (a sweep's --retry-failed does)") from None
        if state.get("config_hash") != key:
            raise SketchpruneError(f"checkpoint {ckpt} is from another training config; use a fresh --out folder")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        gen.set_state(state["generator"])
        start, history = state["epoch"], json.loads(state["history"])
    t0 = time.perf_counter()
    n = len(data.train_y)
    steps_per_epoch = -(-n // cfg.batch_size)
    snapshot_file = out / f"snapshot-{snapshot_step}.pt" if out is not None and snapshot_step is not None else None
    snapshot = None
    if snapshot_step is not None and start > 0 and snapshot_step <= start * steps_per_epoch:  # taken before
        check(snapshot_file is not None and snapshot_file.exists(),
              f"the step-{snapshot_step} snapshot of {out} is missing; delete the folder to start over")
        snapshot = torch.load(snapshot_file, map_location=dev, weights_only=True)

    def take_snapshot() -> dict[str, Tensor]:
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if snapshot_file is not None:
            with atomic_path(snapshot_file) as tmp:
                torch.save(state, tmp)
        return state

    if snapshot_step == 0 and start == 0:
        snapshot = take_snapshot()
    epochs = range(start, cfg.epochs if stop_after is None else min(cfg.epochs, start + stop_after))
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=cfg.epochs, initial=start, desc="train", leave=False)
    try:
        for epoch in epochs:
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
                loss = F.cross_entropy(model(x), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += loss.detach().double() * len(y)
                if snapshot_step is not None and epoch * steps_per_epoch + i // cfg.batch_size + 1 == snapshot_step:
                    snapshot = take_snapshot()
            train_loss = float(total) / n
            if not math.isfinite(train_loss):
                raise SketchpruneError(f"training loss became {train_loss} in epoch {epoch + 1}; lower --lr")
            test_loss, test_acc = evaluate(model, data.test_x, data.test_y)
            row = {"epoch": epoch + 1, "train_loss": train_loss, "test_loss": test_loss, "test_acc": test_acc,
                   "lr": opt.param_groups[0]["lr"]}
            history.append(row)
            if out is not None:
                write_text(out / "metrics.jsonl", "".join(json.dumps(h) + "\n" for h in history))
                with atomic_path(ckpt) as tmp:  # type: ignore[arg-type]
                    torch.save({"config_hash": key, "epoch": epoch + 1, "model": model.state_dict(),
                                "optimizer": opt.state_dict(), "generator": gen.get_state(),
                                "history": json.dumps(history)}, tmp)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(acc=f"{test_acc:.3f}")
    finally:
        if bar is not None:
            bar.close()
    final = history[-1] if history else {}
    return {
        "epochs_done": len(history),
        "final_test_acc": final.get("test_acc"),
        "best_test_acc": max((h["test_acc"] for h in history), default=None),
        "final_train_loss": final.get("train_loss"),
        "wall_seconds": time.perf_counter() - t0,
        "history": history,
        "snapshot": snapshot,
    }
