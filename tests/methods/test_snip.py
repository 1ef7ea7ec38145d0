"""SNIP, Iterative SNIP and FORCE (methods/snip.py): against autograd and the reference algorithm written plainly."""

import copy
import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import grad

from sketchprune import methods, prune


def test_snip_equals_independent_autograd(tiny_mlp, batches, round_scores, functional_loss):
    model = tiny_mlp()
    data = batches(n=1, size=20)
    scores = round_scores("snip", model, data)
    params = {k: v.detach() for k, v in model.named_parameters()}
    g = grad(lambda p: functional_loss(model, p, *data[0]))(params)
    for n, s in scores.items():
        assert torch.allclose(s, (params[n] * g[n]).abs(), atol=1e-6)


def reference_progressive(model, data, density, steps, force, loss):
    """naver/force's iterative_pruning, written plainly: exponential schedule, one batch per step,
    saliency |w g| (Iter-SNIP: the masked network, pruned weights stay pruned) or |w0 g| at the
    sparsified weights (FORCE: every weight), global threshold."""
    net = copy.deepcopy(model)
    layers = [m for m in net.modules() if isinstance(m, nn.Linear)]
    originals = [m.weight.detach().clone() for m in layers]
    masks = [torch.ones_like(w, dtype=torch.bool) for w in originals]
    total = sum(w.numel() for w in originals)
    for step in range(steps):
        keep = round(math.exp(-(step + 1) * math.log(1 / density) / steps) * total)
        with torch.no_grad():
            for m, w0, mask in zip(layers, originals, masks):
                m.weight.copy_(w0 * mask)
        for m in layers:
            m.weight.grad = None
        x, y = data[step % len(data)]
        out = net(x)
        (F.nll_loss(out, y) if loss == "nll_logits" else F.cross_entropy(out, y)).backward()
        sal = []
        for m, w0, mask in zip(layers, originals, masks):
            s = (w0 * m.weight.grad).abs() if force else (m.weight.detach() * m.weight.grad).abs()
            sal.append(s if force else s.masked_fill(~mask, -1.0))
        flat_s = torch.cat([s.reshape(-1) for s in sal])
        threshold = torch.topk(flat_s, keep).values[-1]
        masks = [s >= threshold for s in sal]
    return masks


@pytest.mark.parametrize("method", ["force", "iterative_snip"])
@pytest.mark.parametrize("loss", ["cross_entropy", "nll_logits"])
def test_progressive_skeletonization_equals_the_reference_algorithm(method, loss, mlp, batches):
    model = mlp(bias=True).double()
    data_ = [(x.double(), y) for x, y in batches(n=4, size=32)]
    got = prune(model, method, 0.1, data=data_, **{f"{method}_loss": loss})
    want = reference_progressive(model, data_, 0.1, 10, method == "force", loss)
    assert all(torch.equal(got[n], w) for n, w in zip(got, want))


def test_force_lets_pruned_weights_come_back(scratch_registry, mlp, batches):
    """Each round sees the masks the last one chose (``ctx.masks``): FORCE's grow back, Iter-SNIP's only shrink."""
    seen: dict[str, list] = {"force": [], "iterative_snip": []}
    for name in seen:
        inner = methods.get(name)

        def spy(ctx, inner=inner, name=name):
            seen[name].append((ctx.round, torch.cat([m.reshape(-1) for m in ctx.current_masks().values()]).clone()))
            return inner.fn(dataclasses.replace(ctx, options=inner.options()))

        methods.register(f"{name}_spy", description="spy", data="required", rounds=10, regrow=inner.regrow,
                         copies=inner.copies)(spy)
    model = mlp(bias=True).double()
    data_ = [(x.double(), y) for x, y in batches(n=4, size=32)]
    for name in seen:
        spied = prune(model, f"{name}_spy", 0.1, data=data_)
        assert all(torch.equal(spied[n], m) for n, m in prune(model, name, 0.1, data=data_).items())
    force = [m for _, m in seen["force"]]
    assert [r for r, _ in seen["force"]] == list(range(10))
    assert sum(int((b & ~a).sum()) for a, b in zip(force[:-1], force[1:])) > 0  # weights dropped, then back
    snip = [m for _, m in seen["iterative_snip"]]
    assert all(not bool((b & ~a).any()) for a, b in zip(snip[:-1], snip[1:]))  # pruned weights stay pruned
    assert [int(m.sum()) for m in snip] == sorted((int(m.sum()) for m in snip), reverse=True)
