"""SynFlow (methods/synflow.py): conservation, closed forms, the plain iterative computation, overflow."""

import copy
import math

import pytest
import torch
from torch import nn

from sketchprune import models, prune, topk
from sketchprune.pruning import prunable_parameters


def test_synflow_conservation_every_layer_sums_to_R(tiny_mlp, round_scores):
    model = tiny_mlp(bias=False).double()
    scores = round_scores("synflow", model, input_shape=(12,))
    sums = [float(s.sum()) for s in scores.values()]
    assert max(sums) == pytest.approx(min(sums), rel=1e-10)
    # and R itself, computed independently with |W| products
    Ws = [m.weight.detach().abs().double() for m in tiny_mlp(bias=False) if isinstance(m, nn.Linear)]
    R = torch.ones(1, 3).double() @ Ws[2] @ Ws[1] @ Ws[0] @ torch.ones(12, 1).double()
    raw = {n: s * 1 for n, s in scores.items()}  # normalised by the max score: ratios are what count
    ratio = float(R) / sums[0]
    assert all(float(s.sum()) * ratio == pytest.approx(float(R), rel=1e-10) for s in raw.values())


def test_synflow_closed_form_on_deep_linear(round_scores):
    model = models.create("deep-linear", input_shape=(6,), width=5, depth=3, num_classes=4).double()
    scores = round_scores("synflow", model, input_shape=(6,))
    W = [m.weight.detach().abs() for m in model if isinstance(m, nn.Linear)]
    after = torch.ones(1, 4).double() @ W[2]           # 1^T |W3|
    before = W[0] @ torch.ones(6, 1).double()          # |W1| 1
    closed = W[1] * after.T * before.T                 # |W2[j,k]| (1^T|W3|)_j (|W1|1)_k
    got = scores["1.weight"]
    assert torch.allclose(got / got.max(), closed / closed.max(), rtol=1e-10)


def test_iterative_synflow_counts_and_no_regrowth(tiny_mlp):
    model = tiny_mlp()
    masks = prune(model, "synflow", 0.05, iterations=10, input_shape=(12,))
    total = sum(t for _, t in masks.counts().values())
    assert sum(k for k, _ in masks.counts().values()) == round(0.05 * total)
    assert masks.meta["round_densities"][-1] == pytest.approx(0.05)


def reference_synflow(model, density, rounds, input_shape):
    """Iterative SynFlow written the plain way: float64 autograd, full masks, stable global sort."""
    m = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        for t in list(m.parameters()) + [b for b in m.buffers() if b.is_floating_point()]:
            t.abs_()
    params = prunable_parameters(m)
    orig = {n: p.detach().clone() for n, p in params.items()}
    masks = {n: torch.ones(p.shape, dtype=torch.bool) for n, p in params.items()}
    total = sum(p.numel() for p in params.values())
    for r in range(1, rounds + 1):
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(orig[n] * masks[n])
        m.zero_grad()
        m(torch.ones(1, *input_shape, dtype=torch.float64)).sum().backward()
        flat = torch.cat([(p.grad * p).abs().masked_fill(~masks[n], -math.inf).reshape(-1)
                          for n, p in params.items()])
        keep = torch.zeros(total, dtype=torch.bool)
        keep[torch.sort(flat, descending=True, stable=True).indices[: round(density ** (r / rounds) * total)]] = True
        masks = dict(zip(params, (k.view(p.shape) for k, p in zip(keep.split([p.numel() for p in params.values()]),
                                                                   params.values()))))
    return masks


@pytest.mark.parametrize("name", ["vgg11_bn", "resnet20"])
def test_iterative_synflow_equals_the_plain_computation(name, monkeypatch):
    monkeypatch.setattr(topk, "FINISH_LIMIT", 512)  # small sets take the sample-bracket select too
    torch.manual_seed(0)
    model = models.create(name, width=0.25 if name.startswith("vgg") else 4)
    got = prune(model, "synflow", 0.02, iterations=12, input_shape=(3, 32, 32))
    want = reference_synflow(model, 0.02, 12, (3, 32, 32))
    assert all(torch.equal(got[n], want[n]) for n in want)


class TiedHead(nn.Module):
    """Uses its first layer's weight again outside that layer (a weight with two uses)."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(6, 6, bias=False)
        self.b = nn.Linear(6, 3, bias=False)

    def forward(self, x):
        return self.b(self.a(x) @ self.a.weight)


def test_synflow_on_a_model_that_reuses_a_weight():
    torch.manual_seed(0)
    model = TiedHead()
    got = prune(model, "synflow", 0.3, iterations=4, input_shape=(6,))
    assert all(torch.equal(got[n], w) for n, w in reference_synflow(model, 0.3, 4, (6,)).items())


@pytest.mark.parametrize("name", ["vgg16_bn", "resnet20"])
def test_synflow_float32_equals_float64(name):
    torch.manual_seed(0)
    model = models.create(name, width=0.25 if name.startswith("vgg") else 4)
    m32 = prune(model, "synflow", 0.05, iterations=3, input_shape=(3, 32, 32))
    m64 = prune(model.double(), "synflow", 0.05, iterations=3, input_shape=(3, 32, 32))
    assert all(torch.equal(m32[n], m64[n]) for n in m32)


def test_synflow_has_no_inf_on_resnet110_where_float32_overflows(round_scores):
    torch.manual_seed(0)
    model = models.create("resnet110")
    # the common implementation: float32, |theta|, all-ones input -> R overflows
    naive = models.create("resnet110")
    naive.load_state_dict(model.state_dict())
    naive.eval()
    with torch.no_grad():
        for p in naive.parameters():
            p.abs_()
        assert not bool(torch.isfinite(naive(torch.ones(1, 3, 32, 32)).sum()))
    scores = round_scores("synflow", model, input_shape=(3, 32, 32))
    assert all(bool(torch.isfinite(s).all()) for s in scores.values())
    masks = prune(model, "synflow", 0.1, iterations=1, input_shape=(3, 32, 32))
    assert masks.density() == pytest.approx(0.1, abs=1e-6)
