"""ProsPr (methods/prospr.py): the meta-gradient against finite differences."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from sketchprune.pruning import score


def test_prospr_meta_gradient_equals_finite_differences(mlp, batches):
    torch.manual_seed(0)
    model = mlp(widths=(12, 6, 3)).double()
    x, y = batches(n=1, size=16)[0]
    x = x.double()
    got = score(model, "prospr", data=[(x, y)], prospr_steps=3, prospr_lr=0.2, prospr_momentum=0.5)
    names = [n for n, _ in model.named_parameters()]
    theta = {n: p.detach().clone() for n, p in model.named_parameters()}

    def meta_loss(masks):  # 3 SGD steps (momentum 0.5) on theta * m, written plainly, then the loss
        params = {n: theta[n] * masks[n] if n in masks else theta[n] for n in names}
        velocity = {}
        for _ in range(3):
            params = {n: p.detach().requires_grad_() for n, p in params.items()}
            loss = F.cross_entropy(functional_call(model, params, (x,)), y)
            grads = dict(zip(names, torch.autograd.grad(loss, [params[n] for n in names])))
            new = {}
            for n in names:
                v = grads[n] if n not in velocity else velocity[n] * 0.5 + grads[n]
                velocity[n] = v
                new[n] = params[n] - 0.2 * v
            params = new
        return float(F.cross_entropy(functional_call(model, params, (x,)), y))

    ones = {n: torch.ones_like(theta[n]) for n in got}
    h = 1e-6
    g = torch.Generator().manual_seed(0)
    for n in got:
        for _ in range(4):
            i = int(torch.randint(got[n].numel(), (1,), generator=g))
            plus, minus = copy.deepcopy(ones), copy.deepcopy(ones)
            plus[n].view(-1)[i] += h
            minus[n].view(-1)[i] -= h
            fd = abs(meta_loss(plus) - meta_loss(minus)) / (2 * h)
            assert float(got[n].view(-1)[i]) == pytest.approx(fd, rel=1e-4, abs=1e-9)
