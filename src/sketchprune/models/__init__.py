"""Model registry: ``create(name, num_classes=10, **options)`` and ``names()``.

Every model is a plain ``nn.Module`` built from standard layers; pruning and training work on
any other ``nn.Module`` too.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from torch import nn

from sketchprune import config as cfgmod
from sketchprune.errors import SketchpruneError
from sketchprune.models import attention, convnets, linear, resnets, vgg

_REGISTRY: dict[str, Callable[..., nn.Module]] = {
    "mlp": convnets.mlp,
    "conv": convnets.small_conv,
    "lenet5": convnets.lenet5,
    "conv1d": convnets.conv1d,
    "deep-linear": linear.deep_linear,
    "transformer": attention.transformer,
    "gpt": attention.gpt,
    "resnet18": resnets.resnet18,
    "wrn": resnets.wide_resnet,
    **{f"vgg{d}": vgg.factory(d, batch_norm=False) for d in (11, 13, 16, 19)},
    **{f"vgg{d}_bn": vgg.factory(d, batch_norm=True) for d in (11, 13, 16, 19)},
    **{f"resnet{d}": resnets.cifar_factory(d) for d in (20, 32, 44, 56, 110)},
}


def names() -> list[str]:
    """Names accepted by :func:`create`."""
    return sorted(_REGISTRY)


def factory(name: str) -> Callable[..., nn.Module]:
    """The function that builds model ``name``; an unknown name is an error listing the known ones."""
    if name not in _REGISTRY:
        raise SketchpruneError(f"unknown model {name!r}; known models: {', '.join(names())}")
    return _REGISTRY[name]


def options(name: str, values: dict[str, Any]) -> dict[str, Any]:
    """``values`` checked against model ``name``'s keywords (other than ``num_classes`` and
    ``input_shape``, which come from the data) and converted to their types."""
    return cfgmod.keyword_values(factory(name), values, f"model {name!r}", skip=("num_classes", "input_shape"))


def create(name: str, *, num_classes: int = 10, **options: Any) -> nn.Module:
    """Build model ``name`` (see :func:`names`); options such as ``input_shape``, ``width``, ``depth``.

    The model records its ``input_shape`` (so data-free pruning needs no shape argument).
    """
    make = factory(name)
    try:
        model = make(num_classes=num_classes, **options)
    except TypeError as e:
        raise SketchpruneError(f"bad option for model {name!r}: {e}") from None
    shape = options.get("input_shape", inspect.signature(make).parameters["input_shape"].default)
    model.input_shape = tuple(shape)
    return model
