"""The sketch-optimal score (SPEC 3.2): the sketching probabilities of each layer's product.

Weight form: ``|W[j, k]| * ||out_j|| * ||input_k||``, the optimal probability of each term of a
layer's product. Unit form (SPEC 3.8): a unit ``i`` contributes the rank-one term
``W_next[:, i] h_i`` to the next layer's input, so keeping units is column sampling, with the
optimal probabilities ``∝ ||W_next[:, i]|| ||h_i||`` (``h_i``: the unit's activations over the data,
or over standard Gaussian inputs without data).
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sketchprune.config import setting
from sketchprune.errors import check
from sketchprune.hooks import forward_hooks
from sketchprune.layers import (CONV_LAYERS, WEIGHT_LAYERS, attention_layers, random_inputs, weight_layers,
                                weight_name)
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
    """``|W[j, k]| * ||out_j|| * ||input_k||`` for every Linear/Conv layer and attention projection.

    ``||input_k||`` is the norm over the batch (and positions) of the layer's input feature k (the
    unfolded patch entry for convolutions) and ``||out_j||`` the norm of ``v^T J`` for the layer's
    output unit j with a Gaussian ``v`` (``E (v^T J)_j^2 = ||J[:, j]||^2``). Without data the
    inputs are standard Gaussian (random tokens for a token model): the standardized-data case.
    A ``MultiheadAttention``'s products are its query, key and value projections (each its own
    input) and its output projection (its input the attention's output); they are run explicitly
    to read them (:func:`_attention_products`), with the same result.
    """
    model = ctx.model
    model.eval()
    x = ctx.inputs(ctx.options.sketch_samples)
    owner = {}
    for mname, m in model.named_modules():
        if isinstance(m, WEIGHT_LAYERS):
            owner[weight_name(mname)] = m
    in_norm2: dict[str, Tensor] = {}
    outs: dict[str, Tensor | list[Tensor]] = {}
    names = {m: name for name, m in owner.items() if name in ctx.params}
    attention = {m: mname for mname, m in attention_layers(model)
                 if any(n in ctx.params for n in _attention_weights(m, mname))}

    def hook(mod, inp, out) -> None:
        in_norm2[names[mod]] = _input_feature_norm2(mod, inp[0].detach())
        out.retain_grad()
        outs[names[mod]] = out

    def attention_hook(mod, args, kwargs, out):
        return _attention_products(mod, attention[mod], args, kwargs, in_norm2, outs)

    handles = [m.register_forward_hook(attention_hook, with_kwargs=True) for m in attention]
    try:
        with forward_hooks(names, hook):
            y = model(x)
            v = torch.randn(y.shape, generator=ctx.generator).to(y)
            (y * v).sum().backward()
    finally:
        for h in handles:
            h.remove()
    scores = {}
    for name, p in ctx.params.items():
        w = p.detach().abs()
        got = outs.get(name)
        grads = got if isinstance(got, list) else [got] if got is not None else []
        if not grads or any(g.grad is None for g in grads):
            scores[name] = w
            continue
        out_norm = torch.cat([_output_unit_norm(g.grad, conv=isinstance(owner.get(name), CONV_LAYERS))
                              for g in grads])
        a = in_norm2[name].sqrt()
        scores[name] = w * out_norm.view(-1, *([1] * (w.dim() - 1))) * a
    return scores


def _output_unit_norm(g: Tensor, conv: bool) -> Tensor:
    """The norm of each output unit's sensitivity over the batch and positions (a convolution's units
    on dim 1, a Linear's on the last dim)."""
    if conv or g.dim() <= 2:
        return g.transpose(0, 1).reshape(g.shape[1], -1).pow(2).sum(1).sqrt()
    return g.reshape(-1, g.shape[-1]).pow(2).sum(0).sqrt()


def _attention_weights(m: nn.MultiheadAttention, mname: str) -> list[str]:
    """The names of an attention layer's product weights: its input projection(s) and output projection."""
    inputs = ["in_proj_weight"] if m._qkv_same_embed_dim else ["q_proj_weight", "k_proj_weight", "v_proj_weight"]
    return [f"{mname}.{n}" for n in inputs] + [f"{mname}.out_proj.weight"]


def _attention_products(m: nn.MultiheadAttention, mname: str, args: tuple, kwargs: dict,
                        in_norm2: dict[str, Tensor], outs: dict) -> tuple[Tensor, Tensor | None]:
    """``m``'s output computed with its four products made explicit: the query, key and value
    projections (``F.linear`` here, then the attention with identity projections) and the output
    projection after it. Records each product's input feature norms and its output (for its
    gradient) under the weight's name, and returns the output (the same as ``m``'s)."""
    bound = inspect.signature(type(m).forward).bind(m, *args, **kwargs)
    bound.apply_defaults()
    a = bound.arguments
    query, key, value = a["query"], a["key"], a["value"]
    batched = query.dim() == 3
    if m.batch_first and batched:
        query, key, value = (t.transpose(1, 0) for t in (query, key, value))
    E = m.embed_dim
    if m._qkv_same_embed_dim:
        weights = m.in_proj_weight.split(E)
        names = [f"{mname}.in_proj_weight"] * 3
    else:
        weights = (m.q_proj_weight, m.k_proj_weight, m.v_proj_weight)
        names = [f"{mname}.{n}" for n in ("q_proj_weight", "k_proj_weight", "v_proj_weight")]
    biases = m.in_proj_bias.chunk(3) if m.in_proj_bias is not None else (None,) * 3
    projected, norms2 = [], []
    for t, w, b in zip((query, key, value), weights, biases):
        out = F.linear(t, w, b)
        out.retain_grad()
        projected.append(out)
        norms2.append(t.detach().reshape(-1, t.shape[-1]).pow(2).sum(0).unsqueeze(0).expand(w.shape[0], -1))
    if m._qkv_same_embed_dim:  # one tensor: the rows of q, k and v, each block with its own input
        in_norm2[names[0]], outs[names[0]] = torch.cat(norms2), projected
    else:
        for name, norm2, out in zip(names, norms2, projected):
            in_norm2[name], outs[name] = norm2, out
    eye = torch.eye(E, dtype=query.dtype, device=query.device)
    attended, attn_weights = F.multi_head_attention_forward(
        *(t.contiguous() for t in projected), E, m.num_heads, None, None, m.bias_k, m.bias_v, m.add_zero_attn,
        m.dropout, eye, None, training=m.training, key_padding_mask=a["key_padding_mask"],
        need_weights=a["need_weights"], attn_mask=a["attn_mask"], use_separate_proj_weight=True, q_proj_weight=eye,
        k_proj_weight=eye, v_proj_weight=eye, average_attn_weights=a["average_attn_weights"],
        is_causal=a["is_causal"])
    name = f"{mname}.out_proj.weight"
    out = F.linear(attended, m.out_proj.weight, m.out_proj.bias)
    out.retain_grad()
    in_norm2[name] = attended.detach().reshape(-1, E).pow(2).sum(0).unsqueeze(0)
    outs[name] = out
    return (out.transpose(1, 0) if m.batch_first and batched else out), attn_weights


@register_units("sketch")
def sketch_units(ctx: UnitContext) -> list[Tensor]:
    """``sqrt(sum_c ||W_c[:, i]||^2 ||h_c,i||^2)`` over the consumer layers c of each unit i: the norm
    of unit i's term in the next layers' products."""
    net = ctx.net
    x = torch.cat([b[0] for b in ctx.data]) if ctx.data else random_inputs(net, ctx.input_shape, 64, ctx.generator)
    norms: dict[nn.Module, Tensor] = {}

    def record(module, inputs) -> None:
        norms[module] = norms.get(module, 0) + channel_sum(inputs[0].detach().double().pow(2), module)

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
