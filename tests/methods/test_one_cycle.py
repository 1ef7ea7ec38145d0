"""One-Cycle Pruning (methods/one_cycle.py): the logistic schedule as fasterai writes it, pruning from
the first step to the last, exactly the budget at the end."""

import math

import pytest
import torch

from sketchprune import models, prune
from sketchprune.experiment import Trainer
from sketchprune.methods import one_cycle
from sketchprune.train import Callback, TrainConfig


def fasterai_sched_onecycle(start, end, pos, alpha=14, beta=6):
    """fasterai/sparse/schedule.py (commit 20da8eb), written plainly."""
    out = (1 + math.exp(-alpha + beta)) / (1 + math.exp(-alpha * pos + beta))
    return start + (end - start) * out


@pytest.mark.parametrize("beta", [5.0, 6.0])
def test_the_schedule_is_fasteais(beta):
    for pos in (0.0, 0.1, 0.37, 0.5, 0.8, 1.0):
        assert one_cycle.sparsity(pos, 0.9, 14.0, beta) == pytest.approx(fasterai_sched_onecycle(0, 0.9, pos, 14, beta))
    assert one_cycle.sparsity(0.0, 0.9) < 0.01 and one_cycle.sparsity(1.0, 0.9) == pytest.approx(0.9)
    values = [one_cycle.sparsity(p / 20, 0.9) for p in range(21)]
    assert all(a < b for a, b in zip(values, values[1:]))


def test_one_cycle_prunes_over_the_whole_training_to_the_budget(digits, monkeypatch):
    torch.manual_seed(0)
    model = models.create("mlp", input_shape=digits.input_shape, width=48, depth=2)
    kept = []

    class Spy(Callback):
        def on_step_end(self, state):
            kept.append(sum(int(m.sum()) for m in state.masks.values()))

    trainer = Trainer(digits, TrainConfig(epochs=2, optimizer="adam", lr=3e-3, weight_decay=0.0, batch_size=64))
    real = trainer.__call__
    monkeypatch.setattr(Trainer, "__call__",
                        lambda self, *a, callbacks=(), **kw: real(*a, callbacks=[*callbacks, Spy()], **kw))
    m = prune(model, "one_cycle", 0.1, trainer=trainer, one_cycle_interval=6)
    total = m.report()["total"]
    assert m.report()["kept"] == round(0.1 * total) and kept[-1] == m.report()["kept"]
    # 42 steps, pruning at 6, 12, ..., 42: the logistic density at each, the last one exact
    for t in range(6, 42, 6):
        assert kept[t - 1] == round((1 - one_cycle.sparsity(t / 42, 0.9)) * total)
    assert kept[5] > 0.9 * total and kept[-2] > kept[-1]  # barely pruned early, still pruning near the end
