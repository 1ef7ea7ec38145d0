"""GraSP (methods/grasp.py): the Hessian-gradient product against forward-over-reverse autograd, batches, signs."""

import pytest
import torch
from torch.func import grad, jvp

from sketchprune import prune
from sketchprune.pruning import prunable_parameters


def test_grasp_equals_forward_over_reverse_hvp(tiny_mlp, batches, round_scores, functional_loss):
    model = tiny_mlp().double()
    data = [(x.double(), y) for x, y in batches(n=1, size=20)]
    scores = round_scores("grasp", model, data, grasp_temperature=2.0)
    params = {k: v.detach() for k, v in model.named_parameters()}
    names = list(prunable_parameters(model))

    def loss_grad(p):
        return grad(lambda q: functional_loss(model, q, *data[0], T=2.0))(p)

    g = loss_grad(params)
    tangent = {k: (g[k] if k in names else torch.zeros_like(v)) for k, v in params.items()}
    _, hg = jvp(loss_grad, (params,), (tangent,))
    for n in names:
        assert torch.allclose(scores[n], params[n] * hg[n], rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("split", [{"grasp_chunk": 7}, {"batches": 3}])
def test_grasp_over_batches_or_micro_batches_equals_one_batch(split, tiny_mlp, batches, round_scores):
    model = tiny_mlp().double()
    x, y = batches(n=1, size=20)[0]
    whole = round_scores("grasp", model, [(x.double(), y)], grasp_temperature=2.0)
    if "batches" in split:
        data = list(zip(x.double().split(7), y.split(7)))
        parts = round_scores("grasp", model, data, grasp_temperature=2.0)
    else:
        parts = round_scores("grasp", model, [(x.double(), y)], grasp_temperature=2.0, **split)
    for n in whole:
        assert torch.allclose(parts[n], whole[n], rtol=1e-9, atol=1e-12)
    assert any(float(s.abs().max()) > 0 for s in whole.values())


def test_grasp_sampling_signed_maps(tiny_mlp, batches):
    model = tiny_mlp()
    for how in ("positive", "rank", "exp", "shift"):
        m = prune(model, "grasp", 0.2, mode="sample", data=batches(n=1, size=20), signed_map=how)
        assert m.density() == pytest.approx(round(0.2 * 344) / 344)
