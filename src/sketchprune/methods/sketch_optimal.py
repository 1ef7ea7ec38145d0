"""The sketch-optimal score (SPEC 3.2): the sketching probabilities of each layer's product.

Weight form: ``|W[j, k]| * ||out_j|| * ||input_k||``, the optimal probability of each term of a
layer's product. Unit form (SPEC 3.8): a unit ``i`` contributes the rank-one term
``W_next[:, i] h_i`` to the next layer's input, so keeping units is column sampling, with the
optimal probabilities ``∝ ||W_next[:, i]|| ||h_i||`` (``h_i``: the unit's activations over the data,
or over standard Gaussian inputs without data).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sketchprune.config import setting
from sketchprune.errors import check
from sketchprune.hooks import forward_hooks
from sketchprune.layers import WEIGHT_LAYERS, weight_layers, weight_name
from sketchprune.methods.context import Context, Scores, UnitContext
from sketchprune.methods.registry import register, register_units
from sketchprune.unit_groups import channel_sum, reduce


@dataclass(frozen=True)
class SketchOptions:
    sketch_samples: int = setting(64, "Standard Gaussian inputs used without data.")

    def validate(self) -> None:
        check(self.sketch_samples >= 1, f"sketch_samples must be >= 1, got {self.sketch_samples}")


@register("sketch", options=SketchOptions, data="optional",
          description="Sketch-optimal score (Bar & Giryes, SPEC 3.2): `|W[j,k]| * ||out-sensitivity_j|| * "
                      "||input_k||`, the optimal sketching probability of each layer's product")
def sketch_scores(ctx: Context) -> Scores:
    """``|W[j, k]| * ||out_j|| * ||input_k||`` for every Linear/Conv layer.

    ``||input_k||`` is the norm over the batch (and positions) of the layer's input feature k (the
    unfolded patch entry for convolutions) and ``||out_j||`` the norm of ``v^T J`` for the layer's
    output unit j with a Gaussian ``v`` (``E (v^T J)_j^2 = ||J[:, j]||^2``). Without data the
    inputs are standard Gaussian: the standardized-data case.
    """
    model = ctx.model
    model.eval()
    x = ctx.inputs(ctx.options.sketch_samples)
    owner = {}
    for mname, m in model.named_modules():
        if isinstance(m, WEIGHT_LAYERS):
            owner[weight_name(mname)] = m
    in_norm2: dict[str, Tensor] = {}
    outs: dict[str, Tensor] = {}
    names = {m: name for name, m in owner.items() if name in ctx.params}

    def hook(mod, inp, out) -> None:
        in_norm2[names[mod]] = _input_feature_norm2(mod, inp[0].detach())
        out.retain_grad()
        outs[names[mod]] = out

    with forward_hooks(names, hook):
        y = model(x)
        v = torch.randn(y.shape, generator=ctx.generator).to(y)
        (y * v).sum().backward()
    scores = {}
    for name, p in ctx.params.items():
        w = p.detach().abs()
        if name not in outs or outs[name].grad is None:
            scores[name] = w
            continue
        g = outs[name].grad
        out_norm = g.transpose(0, 1).reshape(g.shape[1], -1).pow(2).sum(1).sqrt()  # per output unit
        a = in_norm2[name].sqrt()
        scores[name] = w * out_norm.view(-1, *([1] * (w.dim() - 1))) * a
    return scores


@register_units("sketch")
def sketch_units(ctx: UnitContext) -> list[Tensor]:
    """``sqrt(sum_c ||W_c[:, i]||^2 ||h_c,i||^2)`` over the consumer layers c of each unit i: the norm
    of unit i's term in the next layers' products."""
    net = ctx.net
    x = torch.cat([b[0] for b in ctx.data]) if ctx.data else torch.randn((64, *ctx.input_shape),
                                                                          generator=ctx.generator)
    norms: dict[nn.Module, Tensor] = {}

    def record(module, inputs) -> None:
        norms[module] = norms.get(module, 0) + channel_sum(inputs[0].detach().double().pow(2))

    with forward_hooks(weight_layers(net), record, pre=True), torch.no_grad():
        net(x.to(ctx.device))

    def consumer(layer, idxs, out_side):
        if out_side:
            return None
        w = layer.weight.detach().double()
        col = w.transpose(0, 1).reshape(w.shape[1], -1).pow(2).sum(1)  # ||W[:, j]||^2 per input feature j
        return col[idxs] * norms[layer].to(col.device)[idxs]

    return [reduce(g, consumer).sqrt() for g in ctx.groups]


def _input_feature_norm2(m: nn.Module, x: Tensor) -> Tensor:
    """Squared norm of each input feature of layer ``m``, shaped like ``m.weight`` (broadcast over outputs)."""
    if isinstance(m, nn.Linear):
        return x.reshape(-1, x.shape[-1]).pow(2).sum(0).unsqueeze(0)
    # convolution: norm of each (in-channel, kernel offset) entry of the unfolded patches
    dims = x.dim() - 2
    k, s, p, d = (tuple(getattr(m, a)) for a in ("kernel_size", "stride", "padding", "dilation"))
    if isinstance(m.padding, str) or dims != 2:
        # generic path: x^2 convolved with a one-hot kernel per (channel, offset) equals the patch norms
        c = x.shape[1]
        eye = torch.eye(c * math.prod(k), dtype=x.dtype, device=x.device).view(c * math.prod(k), c, *k)
        conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[dims]
        sq = conv(x.pow(2), eye, stride=s, padding=m.padding, dilation=d)
        a = sq.transpose(0, 1).reshape(c * math.prod(k), -1).sum(1).view(c, *k)
    else:
        cols = F.unfold(x.pow(2), k, dilation=d, padding=p, stride=s)
        a = cols.sum((0, 2)).view(x.shape[1], *k)
    groups = m.groups
    out = m.weight.shape[0]
    a = a.view(groups, -1, *k)
    return a.repeat_interleave(out // groups, dim=0)
