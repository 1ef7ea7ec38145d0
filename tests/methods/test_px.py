"""PX (methods/px.py): the path-kernel score written out, every layer kept, ReLU patterns that stay inside px."""

import threading

import torch
import torch.nn.functional as F
from torch import nn

from sketchprune import models, prune
from sketchprune.pruning import score


def test_px_score_equals_the_path_kernel_formula(mlp, batches):
    torch.manual_seed(0)
    model = mlp(bias=True).double()
    x, y = batches(n=1, size=30)[0]
    x = x.double()
    W = [m.weight.detach() for m in model if isinstance(m, nn.Linear)]
    b = [m.bias.detach() for m in model if isinstance(m, nn.Linear)]
    # ReLU patterns of the real network (with its biases), on x
    h1 = x @ W[0].t() + b[0]
    a1 = (h1 > 0).double()
    h2 = h1.clamp_min(0) @ W[1].t() + b[1]
    a2 = (h2 > 0).double()
    ones = [torch.ones_like(w) for w in W]
    z1 = ((((x**2) @ ones[0].t()) * a1) @ ones[1].t() * a2) @ ones[2].t()  # path activations, weights one
    V = [(w**2).requires_grad_() for w in W]  # squared weights, no biases, no ReLUs
    z2 = torch.ones(1, 12, dtype=torch.float64) @ V[0].t() @ V[1].t() @ V[2].t()
    grads = torch.autograd.grad((z1.sum(0, keepdim=True) * z2).sum(), V)
    want = [g.abs() * v.detach() for g, v in zip(grads, V)]
    got = score(model, "px", data=[(x, y)], px_examples_per_class=100)
    for w_, g_ in zip(want, got.values()):
        assert torch.allclose(g_, w_, rtol=1e-10)


def test_px_keeps_every_layer_of_vgg_where_the_reference_empties_its_classifier():
    torch.manual_seed(0)
    model = models.create("vgg11_bn", width=0.125)
    x = torch.randn(40, 3, 32, 32)
    masks = prune(model, "px", 0.02, data=[(x, torch.arange(40) % 10)], iterations=20)
    assert masks.collapsed() == [] and masks["classifier.weight"].any()


RELU = F.relu

LEAKY = F.leaky_relu


class FunctionalMLP(nn.Module):
    """The ReLU / LeakyReLU modules of ``module_mlp`` written as F.relu / F.leaky_relu calls in forward."""

    def __init__(self, layers: nn.Sequential) -> None:
        super().__init__()
        self.layers = layers

    def forward(self, x):
        a, _, b, _, c = self.layers
        return c(F.leaky_relu(b(F.relu(a(x))), 0.2))


def module_mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 10), nn.LeakyReLU(0.2), nn.Linear(10, 3))


def test_px_leaves_functional_relu_alone_for_other_threads(batches):
    """From inside every ReLU px runs (record, replay and linear passes), F.relu is the original
    function, and another thread's F.relu / F.leaky_relu give ordinary values while px holds its patterns."""
    model = module_mlp()
    probe = torch.tensor([-2.0, 0.0, 3.0])
    seen = []

    def check_other_thread(module, inputs, output):
        got = {}

        def other():
            got["relu"] = F.relu(probe)
            got["leaky"] = F.leaky_relu(probe, 0.5)

        t = threading.Thread(target=other)
        t.start()
        t.join()
        seen.append((F.relu is RELU and F.leaky_relu is LEAKY,
                     torch.equal(got["relu"], torch.tensor([0.0, 0.0, 3.0])),
                     torch.equal(got["leaky"], torch.tensor([-1.0, 0.0, 3.0]))))

    for m in model:
        if isinstance(m, (nn.ReLU, nn.LeakyReLU)):
            m.register_forward_hook(check_other_thread)  # deep copies (px's two networks) keep the hook
    prune(model, "px", 0.3, data=batches(n=1), iterations=2)
    # 2 rounds x (record on the model, replay on the path-activation copy, linear on the path-kernel copy)
    # x 2 ReLUs
    assert len(seen) == 2 * 3 * 2
    assert all(all(s) for s in seen), seen


def test_px_finds_functional_relus_in_a_custom_forward(batches):
    """A forward calling F.relu / F.leaky_relu scores exactly as the same network built of ReLU modules."""
    x, y = batches(n=1, size=30)[0]
    with_modules = score(module_mlp(), "px", data=[(x, y)], px_examples_per_class=100)
    layers = module_mlp()
    functional = score(FunctionalMLP(layers), "px", data=[(x, y)], px_examples_per_class=100)
    assert list(functional) == [f"layers.{n}" for n in with_modules]
    for a, b in zip(with_modules.values(), functional.values()):
        assert torch.equal(a, b)
    # and the ReLU patterns matter: without them (all units on) the scores differ
    linear = nn.Sequential(layers[0], nn.Identity(), layers[2], nn.Identity(), layers[4])
    plain = score(linear, "px", data=[(x, y)], px_examples_per_class=100)
    assert not all(torch.equal(a, b) for a, b in zip(with_modules.values(), plain.values()))
