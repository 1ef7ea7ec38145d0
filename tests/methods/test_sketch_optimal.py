"""The sketch method (methods/sketch_optimal.py): its unit score is the norm of each unit's term."""

import torch
from torch import nn


def test_sketch_score_is_the_norm_of_each_units_term(unit_scores):
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    x = torch.randn(40, 6)
    (score,) = unit_scores(model, "sketch", [(x, torch.zeros(40, dtype=torch.long))], (6,))
    H = torch.relu(model[0](x)).detach()  # the next layer's input: unit i's row of H
    want = model[2].weight.detach().norm(dim=0) * H.norm(dim=0)
    assert torch.allclose(score.float(), want, rtol=1e-5)
