"""Edge cases of the public API found by a hostile run (issue 23): what is refused in one line and
what now works, each checked by its result."""

import copy

import pytest
import torch
from torch import nn

from sketchprune import Masks, SketchpruneError, prune


def _masked_mlp():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    return model, prune(model, "magnitude", 0.3)


def _train_steps(model, steps=3):
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=0.1)
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        opt.zero_grad()
        model(torch.randn(4, 6, generator=g)).sum().backward()
        opt.step()


def test_a_deep_copy_of_a_masked_model_keeps_its_pruned_weights_exactly_zero():
    model, masks = _masked_mlp()
    handle = masks.apply(model)
    twin = copy.deepcopy(model)
    handle.remove()  # the original's handle does not reach the copy
    _train_steps(twin)
    _train_steps(model)
    for name, p in twin.named_parameters():
        if name in masks:
            assert torch.all(p[~masks[name]] == 0) and torch.all(p[masks[name]] != 0)
    assert any(bool((p[~masks[n]] != 0).any()) for n, p in model.named_parameters() if n in masks)  # unmasked now
    assert not hasattr(model[0], "_sketchprune_keep_masks")  # remove() leaves nothing on the model
    again = copy.deepcopy(model)  # a copy of an unmasked model is unmasked
    _train_steps(again)
    assert any(bool((p[~masks[n]] != 0).any()) for n, p in again.named_parameters() if n in masks)


def test_pickling_a_masked_model_carries_no_masks(tmp_path):
    import pickle

    model, masks = _masked_mlp()
    masks.apply(model)
    back = pickle.loads(pickle.dumps(model[0].__dict__["_sketchprune_keep_masks"]))
    assert back.params == []
