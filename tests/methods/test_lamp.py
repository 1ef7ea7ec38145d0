"""LAMP (methods/lamp.py): the score by hand on a small layer, and a global top-k that never empties a layer."""

import torch
from torch import nn

from sketchprune import prune
from sketchprune.pruning import score


def test_lamp_scores_are_the_hand_computed_ratios():
    net = nn.Sequential(nn.Linear(3, 2, bias=False))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, -3.0, 2.0], [0.5, 2.0, 4.0]]))
    # squares 1, 9, 4, 0.25, 4, 16 (total 34.25); ascending: 0.25, 1, 4 (flat 2), 4 (flat 4), 9, 16
    want = torch.tensor([[1 / 34, 9 / 25, 4 / 33], [0.25 / 34.25, 4 / 29, 16 / 16]], dtype=torch.float64)
    assert torch.allclose(score(net, "lamp")["0.weight"], want)


def test_global_lamp_keeps_every_layers_largest_weight_and_exact_counts():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(50, 40), nn.ReLU(), nn.Linear(40, 30), nn.ReLU(), nn.Linear(30, 10))
    with torch.no_grad():
        net[4].weight.mul_(1e-3)  # tiny classifier weights: a global magnitude top-k would empty it
    masks = prune(net, "lamp", 0.01)
    assert sum(k for k, _ in masks.counts().values()) == round(0.01 * (50 * 40 + 40 * 30 + 30 * 10))
    for name, p in net.named_parameters():
        if name in masks:
            assert bool(masks[name].reshape(-1)[p.detach().abs().argmax()])  # its score is 1
    assert not masks.collapsed() and "4.weight" in prune(net, "magnitude", 0.01).collapsed()
    within = masks["0.weight"]  # within a layer LAMP keeps the largest magnitudes
    w = net[0].weight.detach().abs()
    assert float(w[within].min()) >= float(w[~within].max())
