"""PHEW (methods/phew.py): random walks make input-to-output paths, exact counts, residual graphs."""

import pytest
import torch
from torch import nn

from sketchprune import SketchpruneError, models, prune


def test_phew_keeps_exact_counts_and_makes_input_to_output_paths():
    torch.manual_seed(0)
    model = models.create("mlp", input_shape=(64,), width=50, depth=4)
    for seed in range(3):
        m = prune(model, "phew", 0.02, seed=seed)
        weights = [m[n] for n in m]
        assert sum(int(w.sum()) for w in weights) == round(0.02 * sum(w.numel() for w in weights))
        for before, after in zip(weights[:-1], weights[1:]):
            incoming = before.any(1)  # hidden unit j receives a kept weight
            outgoing = after.any(0)  # and sends one on
            assert torch.equal(incoming, outgoing), "a dead-end unit"


def test_phew_density_profile_is_stable_across_seeds_and_follows_residual_graphs():
    torch.manual_seed(0)
    model = models.create("resnet20")
    profiles = torch.tensor([list(prune(model, "phew", 0.05, seed=s).layer_density().values()) for s in range(3)])
    assert bool((profiles > 0).all())  # every layer, shortcuts included, on some path
    spread = profiles.std(0) / profiles.mean(0)
    assert float(spread.max()) < 0.15


def test_phew_refuses_what_it_cannot_follow():
    class Cat(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c = nn.Linear(4, 3), nn.Linear(4, 3), nn.Linear(6, 2)

        def forward(self, x):
            return self.c(torch.cat([self.a(x), self.b(x)], 1))

    with pytest.raises(SketchpruneError, match="cannot follow units through"):
        prune(Cat(), "phew", 0.5)
