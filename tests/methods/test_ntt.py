"""NTT: the empirical NTK by hand, the kernel distance falls while the mask trains, the weights stay as
drawn, exact counts, seeded."""

import torch
from torch import nn

from sketchprune import prune
from sketchprune.methods.edge_popup import layer_budgets, top_mask
from sketchprune.methods.ntt import ntk, transfer

from tests.methods.test_edge_popup import blobs, mlp


def test_ntk_of_a_linear_layer_by_hand():
    lin = nn.Linear(3, 2)
    x1, x2 = torch.randn(2, 3), torch.randn(3, 3)
    k = ntk(lin, {}, x1, x2)
    # f_i = w_i . x + b_i: K[(a, i), (b, j)] = (x1_a . x2_b + 1) [i == j]
    expected = torch.kron(x1 @ x2.T + 1, torch.eye(2))
    assert torch.allclose(k, expected, atol=1e-6)
    mask = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]])
    km = ntk(lin, {}, x1, x2, {"weight": mask})
    for i in range(2):  # output i sees the inputs its row keeps
        sub = km[i::2, i::2]
        assert torch.allclose(sub, (x1 * mask[i]) @ x2.T + 1, atol=1e-6)
    assert torch.allclose(km[0::2, 1::2], torch.zeros(2, 3))


def test_kernel_distance_falls_and_the_weights_stay():
    model = mlp()
    params = dict(model.named_parameters())
    before = {n: p.detach().clone() for n, p in params.items()}
    weights = {n: p for n, p in params.items() if n.endswith("weight")}
    counts = layer_budgets({n: p.numel() for n, p in weights.items()}, 400)
    x = blobs(200).train_x
    masks, history = transfer(model, weights, x, counts, steps=60, lr=0.01, kernel_weight=1.0, batch=32,
                              generator=torch.Generator().manual_seed(0))
    first = history[0].kernel
    last = sum(h.kernel for h in history[-10:]) / 10
    assert last < 0.8 * first
    assert {n: int(m.sum()) for n, m in masks.items()} == counts
    assert all(torch.equal(before[n], p.detach()) for n, p in params.items())


def test_registered_exact_counts_and_seeded():
    data = [(blobs(100).train_x, blobs(100).train_y)]
    a = prune(mlp(), "ntt", 0.2, data=data, ntt_steps=5, seed=1)
    b = prune(mlp(), "ntt", 0.2, data=data, ntt_steps=5, seed=1)
    total = sum(p.numel() for n, p in mlp().named_parameters() if n.endswith("weight"))
    assert a.report()["kept"] == round(0.2 * total)
    assert all(torch.equal(a[n], b[n]) for n in a)
    model = mlp()
    zero = prune(model, "ntt", 0.2, data=data, ntt_steps=0)  # no step: the layer-wise magnitude mask
    weights = {n: p for n, p in model.named_parameters() if n.endswith("weight")}
    counts = layer_budgets({n: p.numel() for n, p in weights.items()}, round(0.2 * total))
    assert all(torch.equal(zero[n], top_mask(p.detach().abs(), counts[n])) for n, p in weights.items())
