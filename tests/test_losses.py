"""The task's loss (sketchprune.losses): classification unchanged, regression by mean squared error in
training, evaluation and the data-driven methods."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sketchprune import prune
from sketchprune.pruning import score
from sketchprune.data import Dataset
from sketchprune.errors import SketchpruneError
from sketchprune.losses import task_loss, task_of
from sketchprune.train import TrainConfig, evaluate, train


def test_class_labels_give_cross_entropy_bit_for_bit():
    g = torch.Generator().manual_seed(0)
    out, y = torch.randn(7, 4, generator=g), torch.randint(0, 4, (7,), generator=g)
    assert task_of(y) == "classification"
    for reduction in ("mean", "sum"):
        assert torch.equal(task_loss(out, y, reduction=reduction), F.cross_entropy(out, y, reduction=reduction))


def test_regression_loss_by_hand():
    out = torch.tensor([[1.0, 2.0], [0.0, -1.0]])
    y = torch.tensor([[0.0, 0.0], [0.0, 1.0]])  # squared errors 1, 4, 0, 4
    assert task_of(y) == "regression"
    assert float(task_loss(out, y)) == pytest.approx(9 / 4)
    assert float(task_loss(out, y, reduction="sum")) == pytest.approx(9 / 2)  # per-sample means, summed
    with pytest.raises(SketchpruneError, match="one output per target"):
        task_loss(out, y[:, :1])


def test_dataset_targets_must_fit_the_task():
    x = torch.zeros(4, 2)
    with pytest.raises(SketchpruneError, match="float targets"):
        Dataset("d", x, torch.zeros(4, dtype=torch.long), x, torch.zeros(4, dtype=torch.long), 1, task="regression")
    with pytest.raises(SketchpruneError, match="integer class labels"):
        Dataset("d", x, torch.zeros(4, 1), x, torch.zeros(4, 1), 1)
    with pytest.raises(SketchpruneError, match="task must be"):
        Dataset("d", x, torch.zeros(4, 1), x, torch.zeros(4, 1), 1, task="ranking")
    d = Dataset("d", x, torch.zeros(4, 1), x, torch.zeros(4, 1), 1, task="regression")
    assert d.to("cpu").task == "regression"


def _regression_data(n: int = 256) -> Dataset:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 3, generator=g)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5]]) + 0.01 * torch.randn(n, 1, generator=g)
    return Dataset("lin", x[: n // 2], y[: n // 2], x[n // 2:], y[n // 2:], 1, task="regression")


def test_training_on_regression_data_minimizes_the_mse():
    data = _regression_data()
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    before = evaluate(model, data.test_x, data.test_y, task="regression")
    with torch.no_grad():
        expected = float(((model(data.test_x) - data.test_y) ** 2).mean())
    assert before == pytest.approx((expected, expected))
    out = train(model, data, TrainConfig(epochs=20, batch_size=16, optimizer="adam", lr=0.05, weight_decay=0.0,
                                         lr_schedule="constant"))
    assert out["final_test_acc"] is None and out["best_test_acc"] is None
    assert "test_mse" in out["history"][-1] and "test_acc" not in out["history"][-1]
    assert out["final_test_mse"] < 1e-3 < expected
    assert out["best_test_mse"] == min(h["test_mse"] for h in out["history"])


def test_snip_uses_the_squared_error_on_regression_targets():
    data = _regression_data(64)
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    x, y = data.train_x, data.train_y
    s = score(model, "snip", data=[(x, y)])
    w = model.weight.detach()
    residual = model(x).detach() - y  # d/dw of sum_i (f_i - y_i)^2 = 2 sum_i r_i x_i
    assert torch.allclose(s["weight"], (w * 2 * (residual * x).sum(0, keepdim=True)).abs(), rtol=1e-5)
    with pytest.raises(SketchpruneError, match="nll_logits needs class labels"):
        prune(model, "iterative_snip", 0.5, data=[(x, y)], iterative_snip_loss="nll_logits")
    for method in ("grasp", "prospr", "iterative_snip", "force", "px"):  # every data-driven method runs on it
        masks = prune(nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 1)), method, 0.5, data=[(x, y)])
        assert masks.report()["kept"] == round(0.5 * (24 + 8))
