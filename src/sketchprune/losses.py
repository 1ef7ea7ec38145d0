"""The loss of a task: cross-entropy for classification, mean squared error for regression.

A :class:`~sketchprune.data.Dataset` declares its ``task``; its targets follow it (int64 class
labels for classification, float targets of shape ``(n, outputs)`` for regression). Where only
batches are at hand (the methods of ``prune``, which take any iterable of ``(inputs, targets)``),
the targets' dtype tells the task: floating-point targets are regression targets, integer ones
class labels. Classification is computed exactly as before this module existed
(``F.cross_entropy``), so class-label masks and training are unchanged bit for bit.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from sketchprune.errors import check

TASKS = ("classification", "regression")


def task_of(targets: Tensor) -> str:
    """``regression`` for floating-point targets, ``classification`` for integer class labels."""
    return "regression" if targets.is_floating_point() else "classification"


def task_loss(out: Tensor, targets: Tensor, reduction: str = "mean", task: str | None = None) -> Tensor:
    """The task's loss of ``out`` against ``targets``: cross-entropy on class labels, squared error
    on regression targets (``reduction="mean"``: over all entries; ``"sum"``: the per-sample mean
    over the outputs, summed over the samples, so one sample weighs the same under both losses).
    ``task`` defaults to :func:`task_of` the targets."""
    task = task or task_of(targets)
    check(task in TASKS, f"unknown task {task!r}; use one of {', '.join(TASKS)}")
    if task == "classification":
        return F.cross_entropy(out, targets, reduction=reduction)
    check(out.shape == targets.shape, f"regression outputs of shape {tuple(out.shape)} do not match targets of "
                                      f"shape {tuple(targets.shape)}; the model needs one output per target column")
    if reduction == "sum":
        return F.mse_loss(out, targets, reduction="sum") / out.shape[1:].numel()
    return F.mse_loss(out, targets, reduction=reduction)
