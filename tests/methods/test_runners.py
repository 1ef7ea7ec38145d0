"""The runners: how a method's output becomes masks (score rounds, built masks, training loops)."""

import pytest
import torch
from torch import nn

from sketchprune import SketchpruneError, methods, prune


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(10, 20), nn.ReLU(), nn.Linear(20, 5))


def test_every_method_has_one_runner_and_its_kind():
    for name in methods.names("weights"):
        m = methods.get(name)
        assert m.runner.kind == m.kind and m.kind in ("score", "mask", "train")
        assert m.runner.gives_scores == (m.kind == "score") and m.runner.needs_trainer == (m.kind == "train")


def test_inverted_sampling_at_power_inf_is_inverted_top_k():
    a = prune(_net(), "magnitude", 0.2, mode="sample", power=float("inf"), invert=True)
    b = prune(_net(), "magnitude", 0.2, invert=True)
    c = prune(_net(), "magnitude", 0.2)
    assert all(torch.equal(a[n], b[n]) for n in a) and not any(torch.equal(a[n], c[n]) for n in a)


def test_a_train_method_needs_a_trainer_and_mask_methods_refuse_score_options():
    with pytest.raises(SketchpruneError, match="trains while it prunes"):
        prune(_net(), "imp", 0.2)
    for opts, msg in [({"mode": "sample"}, "no sampled form"), ({"scope": "layer"}, "own per-layer budgets"),
                      ({"iterations": 3}, "in one go"), ({"invert": True}, "invert applies to score methods")]:
        with pytest.raises(SketchpruneError, match=msg):
            prune(_net(), "smart_ratio", 0.2, **opts)


def test_a_unit_only_method_has_no_weight_form():
    with pytest.raises(SketchpruneError, match="'l1' has no weight form; methods that have one: random, magnitude"):
        prune(_net(), "l1", 0.2)
