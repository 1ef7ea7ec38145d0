"""3SP (methods/three_sp.py): the unit score is the gate saliency per multiply-accumulate."""

import torch
from torch import nn


def test_3sp_is_the_gate_saliency_per_mac(unit_scores):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    x, y = torch.randn(40, 6), torch.randint(0, 3, (40,))
    (score,) = unit_scores(model, "3sp", [(x, y)], (6,))
    gate = torch.ones(8, requires_grad=True)  # a gate on each hidden unit, written out
    out = model[2](torch.relu(model[0](x) * gate))
    (g,) = torch.autograd.grad(torch.nn.functional.cross_entropy(out, y, reduction="sum"), gate)
    macs_per_unit = 6 + 3  # its row of the first layer and its column of the second
    assert torch.allclose(score.float(), g.abs() / macs_per_unit, rtol=1e-4)
