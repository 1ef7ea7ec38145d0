"""The layer types pruning knows, defined once: whose weights are prunable, the norm and embedding
layers, and what a model's input is (features, or the token indices of an ``Embedding``)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

WEIGHT_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
"""Layers whose ``weight`` is prunable by default (and whose units ``prune_units`` removes)."""
CONV_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
NORM_LAYERS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.LayerNorm, nn.GroupNorm)
ATTENTION_LAYERS = (nn.MultiheadAttention,)
"""Layers whose input projections are prunable weights by default: ``in_proj_weight``, or
``q_proj_weight`` / ``k_proj_weight`` / ``v_proj_weight`` when keys or values have other widths
(their ``out_proj`` is a ``Linear``, pruned as one)."""
ATTENTION_WEIGHTS = ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight")
ATTENTION_BIASES = ("in_proj_bias", "bias_k", "bias_v")
EMBEDDING_LAYERS = (nn.Embedding, nn.EmbeddingBag)
"""Known layers left dense by default (prune a table with ``include=``): their rows are token
vectors, not a product's terms."""


def weight_name(module_name: str) -> str:
    """The parameter name of the weight of the module called ``module_name`` (``""`` is the root)."""
    return f"{module_name}.weight" if module_name else "weight"


def weight_layers(model: nn.Module) -> list[nn.Module]:
    """The Linear/Conv layers of ``model``, in module order."""
    return [m for m in model.modules() if isinstance(m, WEIGHT_LAYERS)]


def is_layer_weight(module: nn.Module, name: str, bias: bool = False) -> bool:
    """Whether parameter ``name`` of ``module`` (its own, not a child's) is a weight pruning knows:
    a Linear/Conv ``weight`` or an attention input projection (with ``bias``: their biases too)."""
    if isinstance(module, WEIGHT_LAYERS):
        return name == "weight" or (bias and name == "bias")
    if isinstance(module, ATTENTION_LAYERS):
        return name in ATTENTION_WEIGHTS or (bias and name in ATTENTION_BIASES)
    return False


def attention_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of every attention layer of ``model``, in module order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, ATTENTION_LAYERS)]


def token_embedding(model: nn.Module) -> nn.Embedding | None:
    """The ``Embedding`` that a token model's input indexes: the model's first layer (in module order)
    when that is an ``Embedding``; None for a model that takes features."""
    for m in model.modules():
        if isinstance(m, nn.Embedding):
            return m
        if isinstance(m, (*WEIGHT_LAYERS, *ATTENTION_LAYERS, nn.EmbeddingBag)):
            return None
    return None


def random_inputs(model: nn.Module, input_shape: tuple[int, ...], samples: int, generator: torch.Generator,
                  device: torch.device | str | None = None) -> Tensor:
    """``samples`` random inputs of ``input_shape``: standard Gaussian features, or for a token model
    (:func:`token_embedding`) token indices drawn uniformly from its vocabulary."""
    embedding = token_embedding(model)
    if embedding is None:
        x = torch.randn((samples, *input_shape), generator=generator)
    else:
        x = torch.randint(embedding.num_embeddings, (samples, *input_shape), generator=generator)
    return x.to(device) if device is not None else x


def example_input(model: nn.Module, input_shape: tuple[int, ...], device: torch.device | str | None = None) -> Tensor:
    """One all-zero input of ``input_shape`` (token 0 for a token model): what counting and graph
    tracing run the model on."""
    dtype = torch.long if token_embedding(model) is not None else torch.get_default_dtype()
    return torch.zeros((1, *input_shape), dtype=dtype, device=device)
