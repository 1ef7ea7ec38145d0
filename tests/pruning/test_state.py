"""The scoring state: what prune changes on the model while it scores is put back, and random draws
during scoring come from the seed."""

import torch
from torch import nn

from sketchprune import prune


class Counting(nn.Module):
    """A forward that replaces one of its buffers (a call counter) and draws dropout."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 3))
        self.register_buffer("calls", torch.zeros(()))

    def forward(self, x):
        self.calls = self.calls + 1  # a new tensor, not an in-place update
        return self.body(x)


def _data():
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(20, 6, generator=g), torch.randint(0, 3, (20,), generator=g))]


def test_a_buffer_the_forward_replaces_is_restored():
    torch.manual_seed(0)
    model = Counting()
    buffer = model.calls
    prune(model, "snip", 0.3, data=_data())
    assert model.calls is buffer and float(model.calls) == 0.0


def test_dropout_in_train_mode_is_seeded_and_leaves_the_callers_stream_alone():
    torch.manual_seed(0)
    model = Counting()
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    a = prune(model, "snip", 0.3, data=_data(), train_mode=True, seed=4)
    assert torch.equal(torch.random.get_rng_state(), before)  # the caller's global stream is not consumed
    b = prune(model, "snip", 0.3, data=_data(), train_mode=True, seed=4)
    c = prune(model, "snip", 0.3, data=_data(), train_mode=True, seed=5)
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert not all(torch.equal(a[n], c[n]) for n in a)  # another seed, other dropout draws
