"""Which parameters are pruned, the data batches, and the shape of one input."""

from __future__ import annotations

import fnmatch
import warnings
from collections.abc import Iterable, Sequence
from typing import Any

from torch import Tensor, nn

from sketchprune.errors import check
from sketchprune.layers import ATTENTION_LAYERS, EMBEDDING_LAYERS, NORM_LAYERS, WEIGHT_LAYERS, is_layer_weight


class UnprunedWarning(UserWarning):
    """Weight tensors of layers that prune does not know were left dense."""


def prunable_parameters(
    model: nn.Module, *, include_bias: bool = False, include_norm: bool = False, exclude: Sequence[str] = (),
    include: Sequence[str] = (),
) -> dict[str, nn.Parameter]:
    """Name -> parameter for the weights of Linear/Conv layers and the input projections of
    ``MultiheadAttention`` (``in_proj_weight``; its ``out_proj`` is a Linear), plus biases / norm
    weights by option and any parameter whose name matches a glob of ``include``, minus those
    matching ``exclude``.

    A parameter shared by several modules is one entry, under its first name. Embeddings stay
    dense (include their ``weight`` to prune them); other weight tensors (a raw ``nn.Parameter``,
    a layer type prune does not know) are left out with an :class:`UnprunedWarning` that names them.
    """
    first: dict[int, tuple[str, nn.Parameter, nn.Module]] = {}  # each tensor under its first name
    wanted: set[int] = set()
    for mname, m in model.named_modules():
        prefix = f"{mname}." if mname else ""
        for pname, p in m.named_parameters(recurse=False):
            name = prefix + pname
            first.setdefault(id(p), (name, p, m))
            take = is_layer_weight(m, pname, bias=include_bias) or (
                include_norm and isinstance(m, NORM_LAYERS) and pname == "weight")
            if take or any(fnmatch.fnmatchcase(name, pat) for pat in include):
                wanted.add(id(p))  # a tensor is prunable if any of its uses is
    out: dict[str, nn.Parameter] = {}
    skipped: list[str] = []
    for key, (name, p, m) in first.items():
        if any(fnmatch.fnmatchcase(name, pat) for pat in exclude):
            continue
        if key in wanted:
            check(not isinstance(p, nn.parameter.UninitializedParameter),
                  f"parameter {name} ({type(m).__name__}) is not initialized yet (a lazy layer); "
                  f"run one forward pass first, or pass exclude=('{name}',)")
            out[name] = p
        elif p.dim() >= 2 and not isinstance(m, (*NORM_LAYERS, *EMBEDDING_LAYERS, *ATTENTION_LAYERS)):
            skipped.append(f"{name} ({type(m).__name__})")
    if skipped:
        warnings.warn(f"not pruned: {len(skipped)} weight tensor(s) of layers prune does not know: "
                      f"{', '.join(skipped[:4])}{', ...' if len(skipped) > 4 else ''}; prune them with "
                      f"include=('{skipped[0].split(' ')[0]}', ...) or leave them out with exclude=(...)",
                      UnprunedWarning, stacklevel=2)
    return out


def as_batches(data: Any) -> list[tuple[Tensor, Tensor]] | None:
    """``data`` (an iterable of ``(inputs, targets)``: a DataLoader or a list) as a list of batches."""
    if data is None:
        return None
    what = "data must yield (inputs, targets) tensor batches, e.g. a DataLoader or [(x, y)]"
    check(isinstance(data, Iterable) and not isinstance(data, (str, bytes, Tensor)), what)
    out = []
    for i, item in enumerate(data):
        check(isinstance(item, (tuple, list)) and len(item) >= 2 and all(isinstance(t, Tensor) for t in item[:2]),
              what)
        x, y = item[0], item[1]
        check(x.dim() >= 1 and len(x) >= 1, f"data batch {i} is empty; give batches of at least one sample "
                                            "(fewer prune batches, or a smaller batch size)")
        check(y.dim() >= 1 and len(y) == len(x),
              f"data batch {i} has {len(x)} inputs but {len(y) if y.dim() else 'a scalar'} targets; give one target "
              "per input")
        out.append((x, y))
    return out


def input_shape_of(model: nn.Module) -> tuple[int, ...] | None:
    """The shape of one input: what a registry model records, or the width of a first Linear layer
    (None when the model starts with attention or an embedding: a sequence's length is not in the
    weights)."""
    shape = getattr(model, "input_shape", None)
    if shape is not None:
        return tuple(shape)
    first = next((m for m in model.modules() if isinstance(m, (*WEIGHT_LAYERS, *ATTENTION_LAYERS, *EMBEDDING_LAYERS))),
                 None)
    return (first.in_features,) if isinstance(first, nn.Linear) else None
