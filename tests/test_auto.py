"""mode="auto" (auto.py): top-k where it feeds every layer, sampling where it starves one, its own power."""

import warnings

import pytest
import torch
from torch import nn

from sketchprune import SketchpruneError, prune


def test_auto_keeps_top_k_where_it_feeds_every_layer_and_samples_where_it_starves_one(mlp, flat):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(40, 60), nn.ReLU(), nn.Linear(60, 10))
    with torch.no_grad():
        model[2].weight.mul_(1e-3)  # the classifier's magnitudes lose every global ranking
    from sketchprune.auto import STARVED

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        topk = prune(model, "magnitude", 0.1)
        auto = prune(model, "magnitude", 0.1, mode="auto", seed=3)
    assert topk.collapsed() == ["2.weight"]
    assert auto.meta["auto"]["mode"] == "sample" and auto.collapsed() == []
    assert min(auto.layer_density().values()) >= 0.5 * STARVED * 0.1  # expected >= STARVED x density
    again = prune(model, "magnitude", 0.1, mode="auto", seed=3)
    assert torch.equal(flat(auto), flat(again))  # deterministic given the seed
    balanced = mlp()
    a = prune(balanced, "magnitude", 0.5, mode="auto")
    assert a.meta["auto"]["mode"] == "topk" and torch.equal(flat(a), flat(prune(balanced, "magnitude", 0.5)))
    assert prune(model, "magnitude", 0.1, mode="auto", scope="layer").meta["auto"]["mode"] == "topk"


def test_auto_chooses_its_own_power_and_refuses_mask_methods(mlp):
    with pytest.raises(SketchpruneError, match="chooses the power"):
        prune(mlp(), "magnitude", 0.5, mode="auto", power=2.0)
    with pytest.raises(SketchpruneError, match="no sampled form"):
        prune(mlp(), "phew", 0.5, mode="auto")
