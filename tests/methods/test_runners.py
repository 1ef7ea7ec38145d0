"""The runners (methods/runners.py): how a method's output becomes masks (score rounds, built masks,
training loops), in every mode and scope, inverted, the same for the same seed."""

import warnings

import pytest
import torch
from torch import nn

from sketchprune import SketchpruneError, methods, prune
from sketchprune.budgets import erk_densities
from sketchprune.pruning import score


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(10, 20), nn.ReLU(), nn.Linear(20, 5))


def test_every_method_has_one_runner_and_its_kind():
    for name in methods.names("weights"):
        m = methods.get(name)
        assert m.runner.kind == m.kind and m.kind in ("score", "mask", "train", "update")  # update: sketchprune.dst
        assert m.runner.gives_scores == (m.kind == "score")
        assert m.runner.needs_trainer == (m.kind in ("train", "update"))


SCORE_METHODS = ["ntk_sap", "px", "prospr", "force", "iterative_snip"]
ROUNDS = {"ntk_sap": 3, "px": 4, "force": 3, "iterative_snip": 3}


@pytest.mark.parametrize("method", SCORE_METHODS)
@pytest.mark.parametrize("mode, scope", [("topk", "global"), ("sample", "global"), ("sample", "layer"),
                                         ("topk", "erk")])
def test_score_methods_sample_and_take_any_scope(method, mode, scope, mlp, batches):
    model = mlp()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = prune(model, method, 0.3, mode=mode, scope=scope, data=batches(), iterations=ROUNDS.get(method))
    counts = m.counts()
    if scope == "global":
        assert sum(k for k, _ in counts.values()) == round(0.3 * sum(t for _, t in counts.values()))
    else:  # every layer keeps exactly its own budget: 0.3 of it, or its Erdos-Renyi-kernel share
        shapes = {n: tuple(t.shape) for n, t in m.items()}
        dens = erk_densities(shapes, 0.3) if scope == "erk" else dict.fromkeys(shapes, 0.3)
        assert {n: k for n, (k, _) in counts.items()} == {n: max(1, round(dens[n] * t)) for n, (_, t) in counts.items()}
        assert len(set(dens.values())) > 1 or scope == "layer"  # erk's densities differ between layers here


@pytest.mark.parametrize("method", SCORE_METHODS + ["phew", "smart_ratio"])
def test_same_seed_same_mask(method, mlp, batches, flat):
    model = mlp()
    kw = {"data": batches(), "iterations": ROUNDS.get(method)} if method not in ("phew", "smart_ratio") else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a, b = (prune(model, method, 0.2, seed=5, **kw) for _ in range(2))
    assert torch.equal(flat(a), flat(b))


def test_mask_methods_refuse_sampling(mlp):
    for method in ("phew", "smart_ratio"):
        with pytest.raises(SketchpruneError, match="no sampled form"):
            prune(mlp(), method, 0.2, mode="sample")


def test_inverted_sampling_at_power_inf_is_inverted_top_k():
    a = prune(_net(), "magnitude", 0.2, mode="sample", power=float("inf"), invert=True)
    b = prune(_net(), "magnitude", 0.2, invert=True)
    c = prune(_net(), "magnitude", 0.2)
    assert all(torch.equal(a[n], b[n]) for n in a) and not any(torch.equal(a[n], c[n]) for n in a)


def test_invert_with_zero_scores_has_no_nan(tiny_mlp):
    model = tiny_mlp()
    with torch.no_grad():
        model[1].weight[:, :6] = 0
    for mode in ("topk", "sample"):
        m = prune(model, "magnitude", 0.5, mode=mode, invert=True)
        assert m.density() == pytest.approx(round(0.5 * 12 * 16 + 0.5 * 128 + 0.5 * 24) / (192 + 128 + 24), abs=1e-2)
    m = prune(model, "magnitude", 0.1, invert=True)
    kept = model[1].weight.detach()[m["1.weight"]]
    assert bool((kept == 0).all())  # the lowest scores are the zeros


@pytest.mark.parametrize("method", ["magnitude", "snip"])
def test_inverted_sampling_keeps_low_scores(method):

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(100, 200), nn.ReLU(), nn.Linear(200, 10))
    batch = [(torch.randn(64, 100), torch.randint(0, 10, (64,)))]
    kw = {"data": batch} if method == "snip" else {}
    s = torch.cat([t.reshape(-1) for t in score(model, method, **kw).values()])

    def flat(m):
        return torch.cat([t.reshape(-1) for t in m.values()])

    normal = flat(prune(model, method, 0.1, mode="sample", seed=0, **kw))
    inverted = flat(prune(model, method, 0.1, mode="sample", seed=0, invert=True, **kw))
    rand = flat(prune(model, "random", 0.1, seed=0))
    assert float(s[inverted].mean()) < float(s[rand].mean()) < float(s[normal].mean())

    def overlap(a, b):
        return int((a & b).sum()) / int(a.sum())

    assert overlap(inverted, normal) < overlap(rand, normal)


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
