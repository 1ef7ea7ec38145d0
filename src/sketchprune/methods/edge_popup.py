"""edge-popup (Ramanujan et al., CVPR 2020, "What's hidden in a randomly weighted neural network?").

A score per prunable weight; the forward pass uses the weights times the mask of the top-k
``|score|`` of each layer, and the backward pass sends the gradient straight through the mask to
the scores (so ``dL/ds_i = dL/dm_i``, the gradient of the masked weight times the weight). Only
the scores train, with our training loop (``ctx.trainer``: the run's optimizer, learning rate and
epochs unless ``edge_popup_epochs`` / ``edge_popup_lr`` say otherwise); the weights stay as they
were drawn. The mask found is a *strong ticket* candidate: its network is evaluated as it is
(the trainer's ``metrics.jsonl`` under ``edge-popup/`` records its test metric per epoch); a run
then trains its weights as usual. Each layer keeps its share of the budget (the counts sum to
exactly the budget).

Compared with allenai/hidden-networks at commit 9321120ab8fd9f6464dd43bae65362760c2aaced
(``utils/conv_type.py``: ``GetSubnet``, ``SubnetConv``; ``utils/builder.py`` at faa35e2:
``_init_conv`` "signed_constant") and PlantNSeek's adaptation to planted tickets
(``edgepopup_benchmarkdata/ticket_models.py`` at 5d1cacd: ``SupermaskLinear``, which scores the
biases too). What agrees: scores initialized ``kaiming_uniform(a=sqrt(5))``, i.e. ``U(-1/sqrt(fan_in),
1/sqrt(fan_in))``, ranked by absolute value, the same density in every layer, the straight-through
gradient, and the signed-constant option ``sign(w) * sqrt(2 / fan_in)`` (the ReLU gain over the
fan-in; biases keep their values). Where we depart: the reference keeps ``int(density * n)`` per
layer; ours splits the budget over the layers by largest remainder so the total is exact. Bias
scores start like weight scores (PlantNSeek's start at zero, all tied).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from sketchprune.config import setting
from sketchprune.errors import check
from sketchprune.methods.context import Built, Context, state_copy
from sketchprune.methods.registry import register


def layer_budgets(sizes: Mapping[str, int], budget: int) -> dict[str, int]:
    """Weights each tensor keeps so that every tensor keeps the same share and the counts sum to
    exactly ``budget`` (largest remainder; at least one per tensor when the budget allows)."""
    total = sum(sizes.values())
    check(0 <= budget <= total, f"budget {budget} must lie in [0, {total}]")
    floor = 1 if budget >= len(sizes) else 0
    quota = {n: budget * s / total for n, s in sizes.items()}
    counts = {n: min(sizes[n], max(floor, math.floor(q))) for n, q in quota.items()}
    diff = budget - sum(counts.values())
    while diff:
        if diff > 0:
            n = max((n for n in sizes if counts[n] < sizes[n]), key=lambda n: quota[n] - counts[n])
            counts[n] += 1
            diff -= 1
        else:
            n = min((n for n in sizes if counts[n] > floor), key=lambda n: quota[n] - counts[n])
            counts[n] -= 1
            diff += 1
    return counts


def top_mask(scores: Tensor, k: int) -> Tensor:
    """Bool mask of the ``k`` largest entries of ``scores`` (same shape)."""
    flat = torch.zeros(scores.numel(), dtype=torch.bool, device=scores.device)
    if k:
        flat[scores.reshape(-1).topk(k, sorted=False).indices] = True
    return flat.view(scores.shape)


def uniform_scores(p: Tensor, generator: torch.Generator) -> Tensor:
    """``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``: hidden-networks' ``kaiming_uniform_(a=sqrt(5))``
    (``fan_in`` = entries per output unit; a bias vector counts its length)."""
    fan_in = p[0].numel() if p.dim() > 1 else p.numel()
    bound = 1.0 / math.sqrt(max(fan_in, 1))
    return (torch.rand(p.shape, generator=generator, dtype=torch.float64) * 2 - 1).mul_(bound).to(p.dtype)


class Supermask(nn.Module):
    """``model`` with its prunable tensors replaced in the forward pass by ``w * top_k(|s|)``, the
    gradient going straight through the mask to the scores ``s``. The model's own parameters are
    frozen (``requires_grad=False``); only the scores are parameters that train."""

    def __init__(self, model: nn.Module, names: Sequence[str], counts: Mapping[str, int],
                 scores: Mapping[str, Tensor]) -> None:
        super().__init__()
        self.net = model
        for p in model.parameters():
            p.requires_grad_(False)
        self.names = list(names)
        self.counts = dict(counts)
        self.scores = nn.ParameterList([nn.Parameter(scores[n].detach().clone().to(
            dict(model.named_parameters())[n].device)) for n in self.names])

    def score_of(self, name: str) -> nn.Parameter:
        return self.scores[self.names.index(name)]

    def relaxed_masks(self) -> dict[str, Tensor]:
        """Per tensor, the hard top-k mask in the forward pass with the identity gradient to ``|s|``."""
        out = {}
        for n, s in zip(self.names, self.scores):
            a = s.abs()
            out[n] = top_mask(a.detach(), self.counts[n]).to(a.dtype) + (a - a.detach())
        return out

    @torch.no_grad()
    def masks(self) -> dict[str, Tensor]:
        """The current bool masks (exactly ``counts[name]`` kept in each tensor)."""
        return {n: top_mask(s.abs(), self.counts[n]) for n, s in zip(self.names, self.scores)}

    def weights(self) -> dict[str, Tensor]:
        return {n: p for n, p in self.net.named_parameters() if n in self.counts}

    def forward(self, x: Tensor) -> Tensor:
        from torch.func import functional_call

        w = self.weights()
        return functional_call(self.net, {n: w[n] * m for n, m in self.relaxed_masks().items()}, (x,))


def signed_constant_(params: Mapping[str, nn.Parameter]) -> None:
    """The paper's signed-constant weights, in place: ``sign(w) * sqrt(2 / fan_in)`` for every
    tensor of two or more dimensions (biases keep their values)."""
    with torch.no_grad():
        for p in params.values():
            if p.dim() > 1:
                p.copy_(p.sign() * math.sqrt(2.0 / p[0].numel()))


def supermask_of(ctx: Context, signed_constant: bool) -> Supermask:
    """The score network of ``ctx.model`` (a copy ``prune`` made: the method ``copies``)."""
    if signed_constant:
        signed_constant_(ctx.params)
    counts = layer_budgets({n: p.numel() for n, p in ctx.params.items()}, ctx.budget)
    scores = {n: uniform_scores(p, ctx.generator) for n, p in ctx.params.items()}
    return Supermask(ctx.model, list(ctx.params), counts, scores)


def train_scores(ctx: Context, supermask: Supermask, tag: str, epochs: int, lr: float,
                 callbacks: Sequence[Any] = ()) -> dict[str, Any]:
    """Train ``supermask``'s scores with ``ctx.trainer`` (``epochs`` / ``lr``: 0 keeps the run's)."""
    trainer = ctx.trainer
    if lr:
        trainer = dataclasses.replace(trainer, config=dataclasses.replace(trainer.config, lr=lr))
    return trainer(supermask, None, tag, epochs=epochs or None, callbacks=callbacks)


@dataclass(frozen=True)
class EdgePopupOptions:
    edge_popup_epochs: int = setting(0, "Epochs of score training (0: the run's epochs).")
    edge_popup_lr: float = setting(0.0, "Learning rate of the scores (0: the run's lr).")
    edge_popup_signed_constant: bool = setting(False, "Replace the weights by the paper's signed constants "
                                                      "sign(w) * sqrt(2 / fan_in) first (the pruned network "
                                                      "trains from them).")

    def validate(self) -> None:
        check(self.edge_popup_epochs >= 0, f"edge_popup_epochs must be >= 0, got {self.edge_popup_epochs}")
        check(self.edge_popup_lr >= 0 and math.isfinite(self.edge_popup_lr),
              f"edge_popup_lr must be a number >= 0 (0: the run's lr), got {self.edge_popup_lr}")


@register("edge_popup", options=EdgePopupOptions, kind="train", copies=True,
          description="edge-popup (Ramanujan et al., CVPR 2020): train a score per weight, top-k of each layer in "
                      "the forward pass, straight-through gradients; the weights stay as drawn")
def edge_popup(ctx: Context) -> Built:
    """A supermask over the frozen weights (see the module docstring)."""
    o: EdgePopupOptions = ctx.options
    supermask = supermask_of(ctx, o.edge_popup_signed_constant)
    train_scores(ctx, supermask, "edge-popup", o.edge_popup_epochs, o.edge_popup_lr)
    masks = supermask.masks()
    start = state_copy(ctx.model) if o.edge_popup_signed_constant else None
    return Built(masks, start_state=start)
