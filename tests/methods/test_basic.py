"""The basic methods (methods/basic.py: random, magnitude, the l1 unit form): random scores are their own draws."""

import torch
from torch import nn

from sketchprune import prune


def test_random_pruning_is_independent_of_the_init_stream():
    # the model is initialized with torch.manual_seed(s) and pruned with seed=s: the random scores
    # must not replay the draws that made the weights (which would keep the largest weights)
    kept_pos, kept_abs, all_abs = [], [], []
    for s in range(5):
        torch.manual_seed(s)
        model = nn.Sequential(nn.Linear(200, 200), nn.ReLU(), nn.Linear(200, 10))
        w = model[0].weight.detach()
        m = prune(model, "random", 0.3, seed=s)["0.weight"]
        kept_pos.append(float((w[m] > 0).float().mean()))
        kept_abs.append(float(w[m].abs().mean()))
        all_abs.append(float(w.abs().mean()))
    # 12,000 kept weights per draw: a fair coin's standard error is ~0.005
    assert abs(sum(kept_pos) / 5 - 0.5) < 0.02
    assert abs(sum(kept_abs) / sum(all_abs) - 1) < 0.02
