"""Deep linear networks: ``W_L ... W_1 x``, no biases, no activations (the paper's setting)."""

from __future__ import annotations

import math

from torch import nn


def deep_linear(*, num_classes: int = 10, input_shape: tuple[int, ...] = (32,), width: int = 64,
                depth: int = 3) -> nn.Module:
    """``depth`` bias-free linear layers: input -> width -> ... -> num_classes."""
    dims = [math.prod(input_shape)] + [width] * (depth - 1) + [num_classes]
    layers: list[nn.Module] = [nn.Flatten()] if len(input_shape) > 1 else []
    layers += [nn.Linear(a, b, bias=False) for a, b in zip(dims[:-1], dims[1:])]
    return nn.Sequential(*layers)
