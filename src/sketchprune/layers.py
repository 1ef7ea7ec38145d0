"""The layer types pruning knows, defined once: whose ``weight`` is prunable, and the norm layers."""

from __future__ import annotations

from torch import nn

WEIGHT_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
"""Layers whose ``weight`` is prunable by default (and whose units ``prune_units`` removes)."""
CONV_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
NORM_LAYERS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.LayerNorm, nn.GroupNorm)


def weight_name(module_name: str) -> str:
    """The parameter name of the weight of the module called ``module_name`` (``""`` is the root)."""
    return f"{module_name}.weight" if module_name else "weight"


def weight_layers(model: nn.Module) -> list[nn.Module]:
    """The Linear/Conv layers of ``model``, in module order."""
    return [m for m in model.modules() if isinstance(m, WEIGHT_LAYERS)]
