"""IteRand: edge-popup that re-draws pruned weights only, with probability lambda every K steps; the
re-drawn weights are the result's start state; seeded; the re-draw stream survives a resume."""

import torch

from sketchprune import prune
from sketchprune.experiment import Trainer
from sketchprune.methods.edge_popup import Supermask, layer_budgets, uniform_scores
from sketchprune.methods.iterand import Rerandomize, draw_like
from sketchprune.train import TrainConfig

from tests.methods.test_edge_popup import blobs, mlp


def supermask(lam: float, how: str = "kaiming_normal") -> tuple[Supermask, Rerandomize, dict]:
    model = mlp()
    params = {n: p for n, p in model.named_parameters()}
    g = torch.Generator().manual_seed(0)
    counts = layer_budgets({n: p.numel() for n, p in params.items()}, 2000)
    sm = Supermask(model, list(params), counts, {n: uniform_scores(p, g) for n, p in params.items()})
    before = {n: p.detach().clone() for n, p in params.items()}
    return sm, Rerandomize(sm, lam, 1, how, seed=1), before


def test_redraw_touches_pruned_weights_only():
    sm, rerand, before = supermask(0.5)
    masks = sm.masks()
    changed = rerand.redraw()
    for n, w in sm.weights().items():
        moved = w.detach() != before[n]
        assert not bool((moved & masks[n]).any())  # a kept weight is never re-drawn
        assert torch.equal(moved, changed[n])  # every re-drawn one moved (a continuous draw)
        assert not bool((changed[n] & masks[n]).any())
    pruned = sum(int((~m).sum()) for m in masks.values())
    drawn = sum(int(c.sum()) for c in changed.values())
    assert abs(drawn - 0.5 * pruned) < 4 * (0.25 * pruned) ** 0.5  # Binomial(pruned, 1/2)


def test_lambda_zero_and_one():
    sm, rerand, before = supermask(0.0)
    rerand.redraw()
    assert all(torch.equal(w.detach(), before[n]) for n, w in sm.weights().items())
    sm, rerand, before = supermask(1.0)
    masks = sm.masks()
    rerand.redraw()
    assert all(bool((w.detach() != before[n])[~masks[n]].all()) for n, w in sm.weights().items())


def test_empirical_draw_comes_from_the_layer_values():
    initial = torch.tensor([[0.5, -2.0], [3.0, 7.0]])
    draw = draw_like(initial, "empirical", torch.Generator().manual_seed(0))
    assert draw.shape == initial.shape and set(draw.flatten().tolist()) <= set(initial.flatten().tolist())


def test_generator_state_survives_a_resume():
    sm, rerand, _ = supermask(0.5)
    state = rerand.state_dict()
    first = rerand.redraw()
    sm2, rerand2, _ = supermask(0.5)
    rerand2.load_state_dict(state)
    second = rerand2.redraw()
    assert all(torch.equal(first[n], second[n]) for n in first)


def test_prune_returns_the_redrawn_weights_seeded_with_exact_counts():
    data = blobs(300)
    cfg = TrainConfig(epochs=2, batch_size=32, optimizer="adam", lr=0.01, weight_decay=0.0, lr_schedule="constant")
    model = mlp()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    a = prune(model, "iterand", 0.3, trainer=Trainer(data, cfg), iterand_every=5, seed=2)
    b = prune(mlp(), "iterand", 0.3, trainer=Trainer(data, cfg), iterand_every=5, seed=2)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the caller's model untouched
    assert a.report()["kept"] == round(0.3 * sum(p.numel() for n, p in model.named_parameters() if "weight" in n))
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert all(torch.equal(a.start_state[k], b.start_state[k]) for k in before)
    moved = {k: a.start_state[k] != before[k] for k in before}
    assert sum(int(m.sum()) for m in moved.values()) > 0
    assert all(not bool(moved[k].any()) for k in before if k.endswith("bias"))  # biases are not pruned here
