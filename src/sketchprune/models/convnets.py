"""Small models for quick runs: an MLP, a small 2-D conv net, LeNet-5 and a 1-D conv net (MNIST-1D)."""

from __future__ import annotations

import math

from torch import nn


def kaiming_init(model: nn.Module) -> nn.Module:
    """Kaiming-normal (fan-out) conv weights, unit/zero batch-norm affine: the CIFAR VGG/ResNet init."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return model


def mlp(*, num_classes: int = 10, input_shape: tuple[int, ...] = (3, 32, 32), width: int = 256,
        depth: int = 2) -> nn.Module:
    """``depth`` hidden ReLU layers of ``width`` units on the flattened input."""
    layers: list[nn.Module] = [nn.Flatten()]
    fan_in = math.prod(input_shape)
    for _ in range(depth):
        layers += [nn.Linear(fan_in, width), nn.ReLU()]
        fan_in = width
    layers.append(nn.Linear(fan_in, num_classes))
    return nn.Sequential(*layers)


def small_conv(*, num_classes: int = 10, input_shape: tuple[int, ...] = (3, 32, 32), width: int = 32) -> nn.Module:
    """Two conv-BN-ReLU-pool stages and a linear classifier."""
    c = input_shape[0]
    return nn.Sequential(
        nn.Conv2d(c, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(width, 2 * width, 3, padding=1, bias=False), nn.BatchNorm2d(2 * width), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, num_classes),
    )


def conv1d(*, num_classes: int = 10, input_shape: tuple[int, ...] = (40,), width: int = 32) -> nn.Module:
    """Three 1-D conv-ReLU layers (stride 2) and a linear classifier, sized for MNIST-1D (length 40)."""
    c, length = (1, input_shape[0]) if len(input_shape) == 1 else input_shape[:2]
    layers: list[nn.Module] = [nn.Unflatten(1, (c, length))] if len(input_shape) == 1 else []
    layers += [
        nn.Conv1d(c, width, 5, stride=2, padding=2), nn.ReLU(),
        nn.Conv1d(width, width, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv1d(width, width, 3, stride=2, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(width * math.ceil(length / 8), num_classes),
    ]
    return nn.Sequential(*layers)


def lenet5(*, num_classes: int = 10, input_shape: tuple[int, ...] = (1, 28, 28), width: int = 1) -> nn.Module:
    """LeNet-5 (LeCun et al. 1998) with ReLU and max-pooling: conv 5x5 (6 maps) - pool - conv 5x5
    (16 maps) - pool - fully connected 120 - 84 - classes; ``width`` multiplies every layer."""
    c, h, w = input_shape
    side_h, side_w = ((h - 4) // 2 - 4) // 2, ((w - 4) // 2 - 4) // 2  # two valid 5x5 convolutions, each pooled
    if min(side_h, side_w) < 1:
        raise TypeError(f"lenet5 needs inputs of at least 16x16, got {h}x{w}")
    return nn.Sequential(
        nn.Conv2d(c, 6 * width, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6 * width, 16 * width, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(16 * width * side_h * side_w, 120 * width), nn.ReLU(),
        nn.Linear(120 * width, 84 * width), nn.ReLU(), nn.Linear(84 * width, num_classes),
    )
