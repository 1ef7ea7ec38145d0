"""What prune reads from its inputs: the data batches and the prunable parameters."""

import pytest
import torch
from torch import nn

from sketchprune import SketchpruneError, prune


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
