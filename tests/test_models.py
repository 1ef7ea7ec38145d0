"""The model registry (models/): unknown names listed, models that give their input shape."""

import pytest
import torch
from torch import nn

from sketchprune import SketchpruneError, models, prune


def test_unknown_model_lists_names():
    with pytest.raises(SketchpruneError, match="known models: .*resnet20"):
        models.create("resnet7")


def test_models_give_their_input_shape():
    torch.manual_seed(0)
    masks = prune(models.create("vgg11", width=0.125), "synflow", 0.05, iterations=2)  # no input_shape
    assert masks.density() == pytest.approx(0.05, abs=1e-4)
    mlp = nn.Sequential(nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 3))  # a first Linear layer gives it too
    assert prune(mlp, "synflow", 0.5, iterations=2).density() == pytest.approx(0.5, abs=0.02)
    conv = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(144, 2))
    with pytest.raises(SketchpruneError, match="needs the input shape"):
        prune(conv, "synflow", 0.5)
