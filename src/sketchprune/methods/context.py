"""What a method sees: :class:`Context` for weight scores and masks, :class:`UnitContext` for unit scores.

Everything a method needs is given to it explicitly: the model and its prunable parameters, the
data, the round index and the current masks (score rounds), the original weights (methods that
rescore pruned weights), the budget (methods that build their mask), a trainer (methods that
train). ``memo`` is the method's own cache across the rounds of one ``prune`` call; nothing else
reads it. What a method hands back besides its scores or masks goes in a :class:`Built`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from sketchprune.errors import SketchpruneError
from sketchprune.layers import random_inputs, token_embedding
from sketchprune.losses import task_loss
from sketchprune.methods.registry import Method, needs_data

Scores = dict[str, Tensor]


@dataclass
class Built:
    """What a mask- or train-kind method returns: one bool mask per prunable tensor and, when it
    rewound the weights (``imp``), the state to train the pruned network from."""

    masks: dict[str, Tensor]
    start_state: dict[str, Tensor] | None = None


@dataclass
class Context:
    """What a method sees during one ``prune`` call (one round of it, for score rounds).

    ``model`` is the model being scored (``prune``'s working copy when the method ``copies`` or
    runs several rounds, with the dropped weights zeroed); ``params`` its prunable parameters.
    """

    method: Method
    model: nn.Module
    params: dict[str, nn.Parameter]
    options: Any
    generator: torch.Generator
    data: list[tuple[Tensor, Tensor]] | None = None
    input_shape: tuple[int, ...] | None = None
    budget: int = 0
    """Weights to keep in all (mask and train methods; score methods' rounds are the runner's job)."""
    density: float = 1.0
    """The density ``prune`` is heading for."""
    round: int = 0
    """The index of this scoring round (0 for the first)."""
    masks: Mapping[str, Tensor] | None = None
    """The current bool mask of each prunable tensor (None before any round dropped a weight:
    all kept); use :meth:`current_masks` for a full mapping either way."""
    originals: dict[str, Tensor] | None = None
    """Regrowing methods: the original values of ``params`` (the model holds them masked)."""
    trainer: Any = None
    """Train methods: a :class:`sketchprune.experiment.Trainer` (our training loop, with checkpoints)."""
    memo: dict[str, Any] = field(default_factory=dict)
    """The method's own cache, kept across the rounds of one ``prune`` call (e.g. SynFlow's dtype)."""

    def current_masks(self) -> Mapping[str, Tensor]:
        """The current bool mask of each prunable tensor (all True before a round has dropped anything)."""
        if self.masks is not None:
            return self.masks
        return {n: torch.ones(p.shape, dtype=torch.bool, device=p.device) for n, p in self.params.items()}

    @property
    def device(self) -> torch.device:
        return next(iter(self.params.values())).device

    def batches(self) -> list[tuple[Tensor, Tensor]]:
        """The data batches on the model's device; an error naming the method when there are none."""
        if not self.data:
            raise needs_data(self.method.name)
        return [(x.to(self.device), y.to(self.device)) for x, y in self.data]

    def shape(self) -> tuple[int, ...]:
        """The shape of one input; an error naming the fix when it is unknown."""
        if self.input_shape is None:
            raise SketchpruneError(f"{self.method.name} needs the input shape: pass data or input_shape=(C, H, W)")
        return tuple(self.input_shape)

    def inputs(self, samples: int) -> Tensor:
        """The data's inputs, or ``samples`` random inputs of the input shape (data-free): standard
        Gaussian, or uniform token indices for a token model (:func:`sketchprune.layers.random_inputs`)."""
        if self.data:
            return torch.cat([x for x, _ in self.batches()])
        return random_inputs(self.model, self.shape(), samples, self.generator, self.device)

    def loss_grads(self, loss: Callable[[Tensor, Tensor], Tensor] | None = None,
                   batches: list[tuple[Tensor, Tensor]] | None = None) -> Scores:
        """Gradient of the loss summed over ``batches`` (default: all) w.r.t. the prunable parameters
        (fresh tensors; ``.grad`` is left cleared). The loss defaults to the data's loss, summed
        (:func:`sketchprune.losses.task_loss`: cross-entropy on class labels, squared error on float
        regression targets)."""
        loss = loss or (lambda out, y: task_loss(out, y, reduction="sum"))
        params = list(self.params.values())
        clear_grads(params)
        for x, y in batches if batches is not None else self.batches():
            loss(self.model(x), y).backward(inputs=params)
        grads = {n: grad_or_zeros(p) for n, p in self.params.items()}
        clear_grads(params)
        return grads


@dataclass
class UnitContext:
    """What a unit method sees in ``prune_units``: the network (a copy), its unit groups from
    Torch-Pruning's dependency graph, the data, and a generator. A unit method returns one float64
    score tensor per group, one entry per root unit (higher = keep)."""

    method: Method
    net: nn.Module
    groups: list
    options: Any
    generator: torch.Generator
    data: list[tuple[Tensor, Tensor]] | None = None
    input_shape: tuple[int, ...] | None = None
    keep: float = 1.0
    """The ``keep`` fraction ``prune_units`` was asked for (of units; of params or MACs with ``keep_by``)."""
    trainer: Any = None
    """A :class:`sketchprune.experiment.Trainer` for unit methods that train (``early_bird``)."""

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def batches(self) -> list[tuple[Tensor, Tensor]]:
        """The data batches; an error naming the method when there are none."""
        if not self.data:
            raise needs_data(self.method.name, units=True)
        return self.data


def clear_grads(params: list[nn.Parameter]) -> None:
    for p in params:
        p.grad = None


def grad_or_zeros(p: nn.Parameter) -> Tensor:
    """``p.grad``, or zeros when ``p`` got no gradient (unused in the forward)."""
    return p.grad if p.grad is not None else torch.zeros_like(p)


def state_copy(model: nn.Module) -> dict[str, Tensor]:
    """A detached copy of ``model``'s state (parameters and buffers): what a method hands back as the
    weights to train the pruned network from (``Built.start_state``)."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@torch.no_grad()
def make_absolute(model: nn.Module) -> nn.Module:
    """Every parameter and floating-point buffer of ``model`` replaced by its absolute value, in place
    (SynFlow's linearized network, fed an all-ones input). Returns ``model``."""
    for t in list(model.parameters()) + [b for b in model.buffers() if b.is_floating_point()]:
        t.abs_()
    return model


def synaptic_flow(model: nn.Module, input_shape: tuple[int, ...], dtype: torch.dtype = torch.float64) -> Tensor:
    """``R = 1^T f(1)``: the sum of ``model``'s output on one all-ones input. On a network made
    absolute (:func:`make_absolute`) it is SynFlow's synaptic flow ``R = 1^T f_|theta|(1)``.

    A token model (its first layer an ``Embedding``, :func:`sketchprune.layers.token_embedding`) has
    no input to fill with ones: the ones enter after the embedding (token 0 goes in, and the
    embedding's output is replaced by ones), so the flow runs through every layer that follows."""
    device = next(model.parameters()).device
    embedding = token_embedding(model)
    if embedding is None:
        return model(torch.ones((1, *input_shape), dtype=dtype, device=device)).sum()
    handle = embedding.register_forward_hook(lambda module, args, out: torch.ones_like(out))
    try:
        return model(torch.zeros((1, *input_shape), dtype=torch.long, device=device)).sum()
    finally:
        handle.remove()
