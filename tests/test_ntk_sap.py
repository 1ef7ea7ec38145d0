"""NTK-SAP: the mask gradients are summed signed over the re-draws, then made absolute (as the reference)."""

import warnings

import torch
from torch import nn
from torch.func import functional_call

from sketchprune import methods, prune, seeding
from sketchprune.methods.ntk_sap import redraw
from sketchprune.pruning import score


def _net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 4, bias=False), nn.ReLU(), nn.Linear(4, 2, bias=False))


def _per_redraw_grads(model: nn.Module, redraws: int, eps: float, samples: int, seed: int) -> list[dict]:
    """dJ/dm of each re-draw, written plainly (the draws in the method's order, from its generator)."""
    g = seeding.generator(seed, "prune")
    scratch = __import__("copy").deepcopy(model)
    names = ["0.weight", "2.weight"]
    out = []
    for _ in range(redraws):
        redraw(scratch, g)
        theta = {n: p.detach() for n, p in scratch.named_parameters()}
        m = {n: torch.ones_like(theta[n], requires_grad=True) for n in names}
        z = {n: torch.randn(theta[n].shape, generator=g) for n in names}
        x = torch.randn((samples, 3), generator=g)
        f = functional_call(scratch, {n: m[n] * theta[n] for n in names}, (x,))
        f_eps = functional_call(scratch, {n: m[n] * (theta[n] + eps * z[n]) for n in names}, (x,))
        J = (f - f_eps).pow(2).sum()
        out.append(dict(zip(names, torch.autograd.grad(J, [m[n] for n in names]))))
    return out


def test_two_redraws_are_summed_signed_before_the_absolute_value():
    model = _net()
    got = score(model, "ntk_sap", seed=4, ntk_sap_redraws=2, ntk_sap_samples=5)
    g1, g2 = _per_redraw_grads(model, 2, 0.01, 5, seed=4)
    opposite = sum(int((g1[n] * g2[n] < 0).sum()) for n in g1)
    assert opposite > 0, "the case must have gradients of opposite sign"
    for n in g1:
        assert torch.allclose(got[n], (g1[n] + g2[n]).abs(), rtol=1e-5, atol=1e-12)
    assert any(not torch.allclose(got[n], g1[n].abs() + g2[n].abs()) for n in g1)  # not the sum of |.|


def test_layer_fractions_are_the_references_on_the_four_layer_mlp():
    """The issue's case: 40-100-100-100-10 bias-free MLP, density 0.1, seeds 0-2; the reference
    (YiteWang/NTK-SAP) keeps 0.162, 0.088, 0.064, 0.338 of the layers (means over the seeds)."""
    fractions = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for seed in range(3):
            torch.manual_seed(seed)
            widths = [40, 100, 100, 100, 10]
            layers = []
            for a, b in zip(widths[:-1], widths[1:]):
                layers += [nn.Linear(a, b, bias=False), nn.ReLU()]
            m = prune(nn.Sequential(*layers[:-1]), "ntk_sap", 0.1, seed=seed)
            fractions.append([k / t for k, t in m.counts().values()])
    mean = torch.tensor(fractions).mean(0)
    assert torch.allclose(mean, torch.tensor([0.162, 0.088, 0.064, 0.338]), atol=0.006), mean
    assert methods.get("ntk_sap").rounds == 20
