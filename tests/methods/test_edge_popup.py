"""edge-popup: a mask over frozen weights (the weights are never changed), per-layer top-k with exact
counts, straight-through gradients to the scores, seeded, and a mask that works untrained."""

import copy
import math

import pytest
import torch
from torch import nn

from sketchprune import prune
from sketchprune.data import Dataset
from sketchprune.errors import SketchpruneError
from sketchprune.experiment import Trainer, make_config, run
from sketchprune.methods.edge_popup import Supermask, layer_budgets, top_mask
from sketchprune.train import TrainConfig, evaluate

CFG = TrainConfig(epochs=4, batch_size=32, optimizer="adam", lr=0.01, weight_decay=0.0, lr_schedule="constant")


def blobs(n: int = 600, seed: int = 0) -> Dataset:
    """Two Gaussian blobs in 2-D: an easy task a good subnetwork of a random MLP solves."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    x = torch.randn(n, 2, generator=g) * 0.6 + (y.float() * 2 - 1)[:, None] * torch.tensor([1.0, -1.0])
    return Dataset("blobs", x[: n // 2], y[: n // 2], x[n // 2:], y[n // 2:], 2)


def mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(2, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 2))


def test_layer_budgets_by_hand():
    assert layer_budgets({"a": 10, "b": 30}, 7) == {"a": 2, "b": 5}  # quotas 1.75, 5.25: the larger remainder
    assert layer_budgets({"a": 10, "b": 30}, 40) == {"a": 10, "b": 30}
    assert layer_budgets({"a": 1, "b": 1000}, 10) == {"a": 1, "b": 9}  # at least one each
    assert sum(layer_budgets({"a": 7, "b": 13, "c": 101}, 37).values()) == 37


def test_straight_through_gradient_reaches_the_scores():
    torch.manual_seed(0)
    lin = nn.Linear(3, 2)
    scores = {"weight": torch.tensor([[0.3, -0.1, 0.2], [-0.5, 0.05, 0.4]]), "bias": torch.tensor([0.1, -0.2])}
    sm = Supermask(lin, ["weight", "bias"], {"weight": 3, "bias": 1}, scores)
    x = torch.randn(4, 3)
    sm(x).sum().backward()
    m = top_mask(scores["weight"].abs(), 3).float()
    assert m.tolist() == [[1, 0, 0], [1, 0, 1]]
    # d/ds of sum(x (w * m)^T) through m = top_k(|s|) with identity gradient: x.sum(0) * w * sign(s)
    expected = x.sum(0)[None, :] * lin.weight.detach() * scores["weight"].sign()
    assert torch.allclose(sm.scores[0].grad, expected)
    assert lin.weight.grad is None  # the weights are frozen


def test_weights_unchanged_and_the_mask_works_untrained():
    data = blobs()
    model = mlp()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    masks = prune(model, "edge_popup", 0.3, trainer=Trainer(data, CFG), include_bias=True, seed=0)
    assert masks.start_state is None  # nothing to train from but the original weights
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    total = sum(p.numel() for p in model.parameters())
    assert masks.report()["kept"] == round(0.3 * total)
    sizes = {n: p.numel() for n, p in model.named_parameters()}
    assert {n: int(m.sum()) for n, m in masks.items()} == layer_budgets(sizes, round(0.3 * total))
    # the strong ticket: the original weights under the mask, no weight training
    strong = copy.deepcopy(model)
    masks.apply(strong)
    _, acc = evaluate(strong, data.test_x, data.test_y)
    random_mask = prune(mlp(), "random", 0.3, include_bias=True, seed=0)
    ref = mlp()
    random_mask.apply(ref)
    _, acc_random = evaluate(ref, data.test_x, data.test_y)
    assert acc > 0.9 and acc > acc_random + 0.1


def test_seeded_and_signed_constant():
    data = blobs(200)
    a = prune(mlp(), "edge_popup", 0.5, trainer=Trainer(data, CFG), seed=3, edge_popup_epochs=1)
    b = prune(mlp(), "edge_popup", 0.5, trainer=Trainer(data, CFG), seed=3, edge_popup_epochs=1)
    c = prune(mlp(), "edge_popup", 0.5, trainer=Trainer(data, CFG), seed=4, edge_popup_epochs=1)
    assert all(torch.equal(a[n], b[n]) for n in a) and not all(torch.equal(a[n], c[n]) for n in a)
    model = mlp()
    s = prune(model, "edge_popup", 0.5, trainer=Trainer(data, CFG), edge_popup_signed_constant=True,
              edge_popup_epochs=1)
    w = s.start_state["2.weight"]
    assert torch.equal(w.abs(), torch.full_like(w, math.sqrt(2 / 64)))
    assert torch.equal(w.sign(), model[2].weight.detach().sign())
    assert torch.equal(s.start_state["2.bias"], model[2].bias.detach())
    with pytest.raises(SketchpruneError, match="trains while it prunes"):
        prune(mlp(), "edge_popup", 0.5)
    with pytest.raises(SketchpruneError, match="no sampled form"):
        prune(mlp(), "edge_popup", 0.5, mode="sample", trainer=Trainer(data, CFG))


def test_a_run_records_the_strong_ticket_and_trains_the_weights(tmp_path):
    cfg = make_config({"model": "mlp", "model_options": {"width": 16}, "dataset": "synthetic", "method": "edge_popup",
                       "density": 0.2, "train.epochs": 1, "edge_popup_epochs": 1})
    result = run(cfg, tmp_path / "run")
    assert result.kept == round(0.2 * result.total)
    strong = (tmp_path / "run" / "edge-popup" / "metrics.jsonl").read_text().splitlines()
    assert len(strong) == 1 and "test_acc" in strong[0]  # the supermask's own accuracy, before weight training
    assert 0 <= result.final_test_acc <= 1
