"""PX's ReLU patterns stay inside px: torch.nn.functional is never changed, other threads see plain ReLUs."""

import threading

import torch
import torch.nn.functional as F
from torch import nn

from sketchprune import prune
from sketchprune.pruning import score

RELU = F.relu
LEAKY = F.leaky_relu


def batches(classes=3, size=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(size, 12, generator=g), torch.randint(0, classes, (size,), generator=g))]


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


def test_px_leaves_functional_relu_alone_for_other_threads():
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
    prune(model, "px", 0.3, data=batches(), iterations=2)
    # 2 rounds x (record on the model, replay on the path-activation copy, linear on the path-kernel copy)
    # x 2 ReLUs
    assert len(seen) == 2 * 3 * 2
    assert all(all(s) for s in seen), seen


def test_px_finds_functional_relus_in_a_custom_forward():
    """A forward calling F.relu / F.leaky_relu scores exactly as the same network built of ReLU modules."""
    x, y = batches(size=30)[0]
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
