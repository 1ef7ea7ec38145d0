"""Sparse export (export.py): CSR layers give the masked model's outputs."""

import copy

import pytest
import torch
from torch import nn

from sketchprune import Masks, SketchpruneError, prune
from sketchprune.export import sparse


def test_sparse_export_gives_the_same_outputs():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    masks = prune(model, "magnitude", 0.05, scope="layer")
    masked = copy.deepcopy(model)
    masks.apply(masked).remove()
    x = torch.randn(16, 64)
    exported = sparse(model, masks, measure=False)
    assert type(exported[0]).__name__ == "SparseLinear"
    assert torch.allclose(exported(x), masked(x), atol=1e-5)
    chosen = sparse(model, masks, example=x)  # timed: whichever is faster, the same function
    assert torch.allclose(chosen(x), masked(x), atol=1e-5)
    assert all(isinstance(v, torch.Tensor) for v in model.state_dict().values())  # the model is untouched
    assert not torch.equal(model[0].weight, masked[0].weight)
    with pytest.raises(SketchpruneError, match="needs example"):
        sparse(model, Masks(dict(masks)))
