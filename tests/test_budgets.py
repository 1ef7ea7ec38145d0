"""Budgets: scopes and round schedules, and the capped proportional allocation they share."""

import math

import pytest
import torch
from torch import nn

from sketchprune import prune
from sketchprune.budgets import budgets, capped_proportional, erk_densities, round_densities


def test_capped_proportional_caps_at_one_and_rescales_the_rest():
    # sizes 10, 10, 80; weights 1, 4, 1; total 40: layer 1 would want 4c > 1 -> dense, the rest share 30
    c, capped = capped_proportional([10, 10, 80], [1.0, 4.0, 1.0], 40)
    assert capped == {1} and c == pytest.approx(30 / 90)
    assert capped_proportional([5, 5], [1.0, 2.0], 10) == (1.0, {1})  # the other at exactly 1: all dense


def test_erk_at_density_one_keeps_everything():
    shapes = {"a": (16, 3, 3, 3), "b": (32, 16, 3, 3), "c": (10, 32)}
    assert erk_densities(shapes, 1.0) == dict.fromkeys(shapes, 1.0)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 16, 3), nn.ReLU(), nn.Conv2d(16, 32, 3), nn.Flatten(), nn.LazyLinear(10))
    net(torch.zeros(1, 3, 8, 8))
    assert prune(net, "magnitude", 1.0, scope="erk").density() == 1.0


def test_erk_densities_hit_the_budget():
    shapes = {"a": (16, 3, 3, 3), "b": (32, 16, 3, 3), "c": (10, 128)}
    d = erk_densities(shapes, 0.2)
    sizes = {n: math.prod(s) for n, s in shapes.items()}
    assert sum(d[n] * sizes[n] for n in d) == pytest.approx(0.2 * sum(sizes.values()))
    assert d["a"] > d["b"]  # the small first conv is denser


def test_round_schedules_end_at_the_density():
    assert round_densities(0.01, 2, "exponential") == pytest.approx([0.1, 0.01])
    assert round_densities(0.2, 4, "linear") == pytest.approx([0.8, 0.6, 0.4, 0.2])
    params = {"w": torch.zeros(10, 10), "v": torch.zeros(5)}
    assert budgets(params, 0.5, "global") == 52 and budgets(params, 0.5, "layer") == {"w": 50, "v": 2}


def test_erk_densities_are_fractions_that_hit_the_budget():
    shapes = {"a": (64, 3, 3, 3), "b": (128, 64, 3, 3), "c": (10, 128)}
    d = erk_densities(shapes, 0.1)
    sizes = {n: math.prod(s) for n, s in shapes.items()}
    assert sum(d[n] * sizes[n] for n in shapes) == pytest.approx(0.1 * sum(sizes.values()))
    assert all(0 < v <= 1 for v in d.values()) and d["a"] > d["b"]
