"""NTK-SAP (methods/ntk_sap.py): data- and weight-free masks, the kernel's saliency, re-draws summed signed."""

import copy
import warnings

import torch
from torch import nn
from torch.func import functional_call

from sketchprune import methods, prune, seeding
from sketchprune.methods.ntk_sap import redraw
from sketchprune.pruning import prunable_parameters, score


def test_ntk_sap_mask_depends_on_neither_data_nor_weight_values(mlp, flat):
    a = prune(mlp(seed=0), "ntk_sap", 0.2, iterations=3, seed=1)
    b = prune(mlp(seed=7), "ntk_sap", 0.2, iterations=3, seed=1)  # other weights
    c = prune(mlp(seed=0), "ntk_sap", 0.2, iterations=3, seed=2)
    assert torch.equal(flat(a), flat(b)) and not torch.equal(flat(a), flat(c))
    model = mlp()
    before = copy.deepcopy(model.state_dict())
    prune(model, "ntk_sap", 0.2, iterations=2)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # theta_0 kept (the reference


def test_ntk_sap_score_is_the_finite_difference_saliency_of_the_kernel():
    # a linear network: J = sum_x ||(m * eps z) x||^2 does not depend on theta, so its mask-gradient
    # is 2 eps^2 sum_x [(m * z) x]_i z_ij x_j on one re-draw; with theta re-drawn the scores of a
    # one-layer net depend on z and x only: check against that formula with the same draws
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 4, bias=False))
    g = torch.Generator().manual_seed(123)
    from sketchprune.methods import ntk_sap as module

    scratch = copy.deepcopy(model)
    module.redraw(scratch, g)  # the draws the method makes, in its order
    z = torch.randn((4, 5), generator=g)
    x = torch.randn((7, 5), generator=g)
    eps = 0.01
    want = (2 * eps**2 * ((x @ z.t()).unsqueeze(2) * z.unsqueeze(0) * x.unsqueeze(1)).sum(0)).abs()
    spec = methods.get("ntk_sap")
    ctx = methods.Context(spec, model, prunable_parameters(model),
                          spec.make_options({"ntk_sap_redraws": 1, "ntk_sap_samples": 7}),
                          torch.Generator().manual_seed(123), None, (5,))
    got = spec.fn(ctx)["0.weight"]
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-12)


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
