"""What prune reads from its inputs (pruning/params.py): the data batches and the prunable parameters."""

import warnings

import pytest
import torch
from torch import nn

from sketchprune import SketchpruneError, prune
from sketchprune.pruning import UnprunedWarning


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))


@pytest.mark.parametrize("method", ["snip", "iterative_snip", "force", "grasp"])
def test_an_empty_batch_is_an_error_not_a_random_mask(method):
    x, y = torch.randn(10, 6), torch.randint(0, 3, (10,))
    for data in ([(x[:0], y[:0])], [(x, y), (x[:0], y[:0])]):
        with pytest.raises(SketchpruneError, match="is empty"):
            prune(_net(), method, 0.3, data=data)


def test_inputs_and_targets_of_different_lengths_are_an_error():
    with pytest.raises(SketchpruneError, match="has 10 inputs but 9 targets"):
        prune(_net(), "snip", 0.3, data=[(torch.randn(10, 6), torch.randint(0, 3, (9,)))])


@pytest.mark.parametrize("model", [nn.Linear(0, 5), nn.Sequential(nn.Linear(4, 0), nn.Linear(0, 3))])
def test_a_model_of_empty_layers_is_a_one_line_error(model):
    with pytest.raises(SketchpruneError, match="prunable weights are all empty") as e:
        prune(model, "magnitude", 0.5)
    assert "\n" not in str(e.value)


# ---- a shared parameter is one prunable entry; layers prune cannot handle are named -------------------

class Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(16, 16, bias=False)
        self.b = nn.Linear(16, 16, bias=False)
        self.b.weight = self.a.weight
        self.c = nn.Linear(16, 4)

    def forward(self, x):
        return self.c(torch.relu(self.b(torch.relu(self.a(x)))))


def test_a_shared_weight_is_pruned_once():
    torch.manual_seed(0)
    model = Tied()
    m = prune(model, "magnitude", 0.5)
    assert list(m) == ["a.weight", "c.weight"] and sum(t for _, t in m.counts().values()) == 320
    h = m.apply(model)  # the masks fit the model
    h.remove()
    s = prune(model, "synflow", 0.2, iterations=4, input_shape=(16,))
    assert sum(k for k, _ in s.counts().values()) == round(0.2 * 320)


def test_a_tied_embedding_and_head_is_one_tensor_under_its_first_name():
    class LM(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(10, 6)
            self.head = nn.Linear(6, 10, bias=False)
            self.head.weight = self.emb.weight

        def forward(self, x):
            return self.head(self.emb(x))

    m = prune(LM(), "magnitude", 0.5)
    assert m.counts() == {"emb.weight": (30, 60)}


def test_unknown_layers_are_named_and_can_be_included_or_excluded():
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = nn.MultiheadAttention(8, 2)
            self.raw = nn.Parameter(torch.randn(8, 8))
            self.fc = nn.Linear(8, 3)

        def forward(self, x):
            a, _ = self.attn(x, x, x)
            return self.fc(a @ self.raw)

    model = Odd()
    with pytest.warns(UnprunedWarning) as record:
        m = prune(model, "magnitude", 0.5)
    message = str(record[0].message)
    assert "raw (Odd)" in message and "include=" in message and "attn" not in message  # attention is known
    assert "attn.in_proj_weight" in m and "raw" not in m  # its input projection is a weight by default
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnprunedWarning)
        m = prune(model, "magnitude", 0.5, include=("raw",))
        assert {"attn.in_proj_weight", "attn.out_proj.weight", "raw", "fc.weight"} == set(m)
        m = prune(model, "magnitude", 0.5, exclude=("attn.in_proj_weight", "raw"))
        assert "attn.in_proj_weight" not in m


def test_a_lazy_layer_is_a_one_line_error_naming_it():
    model = nn.Sequential(nn.LazyLinear(4), nn.ReLU(), nn.Linear(4, 2))
    with pytest.raises(SketchpruneError, match=r"0.weight.*not initialized.*exclude="):
        prune(model, "magnitude", 0.5)
