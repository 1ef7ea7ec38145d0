"""Mask diagnostics against counts done by hand on a tiny network."""

import math

import torch
from torch import nn

from sketchprune.diagnostics import mask_diagnostics


def tiny():
    net = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, -2.0], [3.0, 0.5], [-1.0, 1.0]]))
        net[0].bias.fill_(-5.0)  # biases are left out of paths and flow
        net[2].weight.copy_(torch.tensor([[2.0, -1.0, 4.0]]))
    return net


def test_paths_and_flow_are_the_hand_counts():
    net = tiny()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    masks = {"0.weight": torch.tensor([[1, 1], [0, 1], [1, 0]], dtype=torch.bool),
             "2.weight": torch.tensor([[1, 1, 0]], dtype=torch.bool)}
    d = mask_diagnostics(net, masks, (2,))
    # paths: hidden 0 has 2 kept inputs and a kept output, hidden 1 has 1 and 1, hidden 2 none out
    assert d["log10_paths"] == math.log10(3)
    # flow: sum over the paths of |w1| |w2| = (1 + 2) * 2 + 0.5 * 1
    assert abs(d["log10_flow"] - math.log10(6.5)) < 1e-12
    assert d["min_layer_density"] == 2 / 3 and d["connected"]
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())


def test_a_collapsed_layer_has_no_paths():
    masks = {"0.weight": torch.ones(3, 2, dtype=torch.bool), "2.weight": torch.zeros(1, 3, dtype=torch.bool)}
    d = mask_diagnostics(tiny(), masks, (2,))
    assert d == {"min_layer_density": 0.0, "connected": False, "log10_paths": None, "log10_flow": None}
