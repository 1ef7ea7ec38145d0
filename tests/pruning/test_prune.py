"""prune() (pruning/__init__.py): exact counts, shuffle, the seed, the model left as it was, collapse, bad input."""

import warnings

import pytest
import torch
from torch import nn

from sketchprune import SketchpruneError, models, prune


@pytest.mark.parametrize("scope", ["global", "layer"])
@pytest.mark.parametrize("mode", ["topk", "sample"])
def test_exact_kept_counts(scope, mode, tiny_mlp):
    model = tiny_mlp()
    masks = prune(model, "magnitude", 0.3, mode=mode, scope=scope)
    counts = masks.counts()
    if scope == "global":
        assert sum(k for k, _ in counts.values()) == round(0.3 * sum(t for _, t in counts.values()))
    else:
        assert all(k == max(1, round(0.3 * t)) for k, t in counts.values())


def test_shuffle_keeps_per_layer_counts(tiny_mlp):
    model = tiny_mlp()
    a = prune(model, "magnitude", 0.2)
    b = prune(model, "magnitude", 0.2, shuffle=True)
    assert a.counts() == b.counts()
    assert any(not torch.equal(a[n], b[n]) for n in a)


def test_same_seed_same_mask(tiny_mlp, batches):
    model = tiny_mlp()
    a = prune(model, "snip", 0.1, mode="sample", data=batches(n=1, size=20), seed=3)
    b = prune(model, "snip", 0.1, mode="sample", data=batches(n=1, size=20), seed=3)
    c = prune(model, "snip", 0.1, mode="sample", data=batches(n=1, size=20), seed=4)
    assert all(torch.equal(a[n], b[n]) for n in a) and any(not torch.equal(a[n], c[n]) for n in a)


@pytest.mark.parametrize("train_mode", [False, True])
@pytest.mark.parametrize("method", ["random", "magnitude", "snip", "grasp", "synflow", "ntk", "sketch", "iterative_snip"])
def test_model_is_unchanged(method, train_mode):
    model = models.create("conv", input_shape=(3, 8, 8), width=4)
    model.train()
    model[1].eval()  # a mixed-mode model: each module's mode must come back
    model[0].weight.requires_grad_(False)
    model[1].weight.grad = torch.ones_like(model[1].weight)  # a gradient the caller holds
    held = model[1].weight.grad
    state = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [p.requires_grad for p in model.parameters()]
    modes = [m.training for m in model.modules()]
    data = [(torch.randn(6, 3, 8, 8), torch.randint(0, 10, (6,)))]
    prune(model, method, 0.2, data=data, iterations=2 if method in ("synflow", "iterative_snip") else None,
          mode="sample", train_mode=train_mode, **({"grasp_temperature": 1.0} if method == "grasp" else {}))
    assert [m.training for m in model.modules()] == modes
    assert [p.requires_grad for p in model.parameters()] == flags
    assert model[1].weight.grad is held and torch.equal(held, torch.ones_like(held))
    assert sum(p.grad is not None for p in model.parameters()) == 1
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_model_is_restored_when_scoring_fails():
    model = models.create("conv", input_shape=(3, 8, 8), width=4)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    bad = [(torch.randn(6, 3, 8, 8), torch.full((6,), 99))]  # labels out of range: cross_entropy raises
    with pytest.raises(SketchpruneError, match="failed.*IndexError"):
        prune(model, "snip", 0.2, data=bad, train_mode=True)
    assert model.training and all(p.grad is None for p in model.parameters())
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_layer_collapse_is_reported():
    model = nn.Sequential(nn.Linear(50, 50), nn.Linear(50, 2))
    with torch.no_grad():
        model[1].weight.mul_(1e-6)
    with pytest.warns(UserWarning, match="layer collapse"):
        m = prune(model, "magnitude", 0.1)
    assert m.collapsed() == ["1.weight"] and m.meta["collapsed"] == ["1.weight"]
    with pytest.raises(SketchpruneError, match="layer collapse"):
        prune(model, "magnitude", 0.1, on_collapse="error")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert prune(model, "magnitude", 0.1, scope="layer").collapsed() == []


@pytest.mark.parametrize(
    "kwargs, msg",
    [
        ({"method": "best"}, "unknown method"),
        ({"method": "snip"}, "needs data"),
        ({"method": "grasp"}, "needs data"),
        ({"method": "magnitude", "density": 1e-6}, "fewer than one"),
        ({"method": "synflow", "iterations": 0}, "iterations must be"),
        ({"method": "random", "iterations": 1e18}, "iterations must be an integer in"),  # not a list of 1e18 rounds
        ({"method": "magnitude", "exclude": ["*"]}, "nothing to prune"),
        ({"method": "magnitude", "colour": 1}, "unknown prune option"),
    ],
)
def test_bad_input(kwargs, msg, tiny_mlp):
    kwargs.setdefault("density", 0.5)
    with pytest.raises(SketchpruneError, match=msg):
        prune(tiny_mlp(), **kwargs)
