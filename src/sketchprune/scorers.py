"""Scorers: one small function per pruning method, registered by name (SPEC 3.5, 3.7).

A scorer takes a :class:`ScoreContext` (the working copy of the model with the current mask
applied, its prunable parameters, the data, a generator) and returns name -> score tensor.
Scores are non-negative importances, except ``grasp`` (signed; higher = keep).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sketchprune.errors import SketchpruneError, check
from sketchprune.matmul_conv import convs_as_matmuls

Scores = dict[str, Tensor]


@dataclass
class ScoreContext:
    """What a scorer sees: the model copy (masked), its prunable parameters, data and randomness."""

    model: nn.Module
    params: dict[str, nn.Parameter]
    data: list[tuple[Tensor, Tensor]] | None
    generator: torch.Generator
    device: torch.device
    options: dict[str, Any] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)
    """Kept across the rounds of one ``prune`` call (e.g. synflow's prepared model)."""

    def batches(self, method: str) -> list[tuple[Tensor, Tensor]]:
        if not self.data:
            raise needs_data(method)
        return [(x.to(self.device), y.to(self.device)) for x, y in self.data]


def needs_data(method: str) -> SketchpruneError:
    """The error for a data-dependent method called without data."""
    return SketchpruneError(
        f"method {method!r} needs data: pass data=[(inputs, targets), ...] (a DataLoader works), "
        "or use a data-free method (random, magnitude, synflow, ntk)"
    )


Scorer = Callable[[ScoreContext], Scores]
SCORERS: dict[str, Scorer] = {}
SIGNED = {"grasp"}  # scorers whose scores may be negative
NEEDS_DATA = {"snip", "grasp", "iterative_snip"}


def register(name: str) -> Callable[[Scorer], Scorer]:
    """Register a scorer under ``name``. A scorer returns fresh score tensors (the caller may
    change them) and must leave the weights as they are: one-round methods score the caller's
    model itself (``pruning.scoring_state`` restores flags, gradients, modes and buffers only)."""

    def deco(fn: Scorer) -> Scorer:
        SCORERS[name] = fn
        return fn

    return deco


def _zero_grads(params: Iterable[nn.Parameter]) -> None:
    for p in params:
        p.grad = None


def _grad_or_zeros(p: nn.Parameter) -> Tensor:
    """``p.grad``, or zeros when ``p`` got no gradient (unused in the forward)."""
    return p.grad if p.grad is not None else torch.zeros_like(p)


def _loss_grads(ctx: ScoreContext, method: str) -> Scores:
    """Gradient of the summed cross-entropy over all batches w.r.t. the prunable parameters.

    The returned tensors are the caller's to change: the parameters' ``.grad`` is cleared.
    """
    params = list(ctx.params.values())
    _zero_grads(params)
    for x, y in ctx.batches(method):
        F.cross_entropy(ctx.model(x), y, reduction="sum").backward(inputs=params)
    grads = {n: _grad_or_zeros(p) for n, p in ctx.params.items()}
    _zero_grads(params)
    return grads


def _score_inputs(ctx: ScoreContext, method: str, samples: int) -> Tensor:
    """The given data's inputs, or ``samples`` standard Gaussian inputs of ``input_shape`` (data-free)."""
    if ctx.data:
        return torch.cat([b[0] for b in ctx.batches(method)])
    shape = ctx.options.get("input_shape")
    check(shape is not None, f"{method} without data needs input_shape=(C, H, W)")
    return torch.randn((samples, *shape), generator=ctx.generator).to(ctx.device)


@register("random")
def random_scores(ctx: ScoreContext) -> Scores:
    """Uniform random scores: top-k of them is random pruning."""
    return {n: torch.rand(p.shape, generator=ctx.generator).to(ctx.device) for n, p in ctx.params.items()}


@register("magnitude")
def magnitude(ctx: ScoreContext) -> Scores:
    """``|theta|``: optimal sketching probabilities for a linear layer on standardized data (SPEC 3.4)."""
    return {n: p.detach().abs() for n, p in ctx.params.items()}


@register("snip")
def snip(ctx: ScoreContext) -> Scores:
    """SNIP (Lee et al. 2019): ``|theta * dL/dtheta|`` with L summed over the given batches."""
    grads = _loss_grads(ctx, "snip")
    return {n: grads[n].mul_(p.detach()).abs_() for n, p in ctx.params.items()}


register("iterative_snip")(snip)  # same score, re-evaluated every round on the surviving network


@register("grasp")
def grasp(ctx: ScoreContext) -> Scores:
    """GraSP (Wang et al. 2020): ``theta * (H g)``, signed; higher = keep.

    Wang et al. remove the weights with the largest ``-theta * Hg``, i.e. keep the largest
    ``theta * Hg`` (this scorer). ``g`` is the loss gradient at temperature ``T`` (option
    ``grasp_temperature``, default 200) and ``Hg`` a Hessian-gradient product by double backward,
    summed over the batches. The last batch's differentiable gradient also completes ``g``, so
    one batch costs one forward and one double backward. Option ``grasp_chunk`` splits batches
    into micro-batches of that size: less memory, one more forward/backward per extra micro-batch
    (exact in eval mode, where samples do not interact).
    """
    T = float(ctx.options.get("grasp_temperature", 200.0))
    params = list(ctx.params.values())
    batches = ctx.batches("grasp")
    chunk = ctx.options.get("grasp_chunk")
    if chunk is not None:
        check(isinstance(chunk, int) and chunk >= 1, f"grasp_chunk must be an integer >= 1, got {chunk!r}")
        batches = [(xc, yc) for x, y in batches for xc, yc in zip(x.split(chunk), y.split(chunk))]

    def loss(x: Tensor, y: Tensor) -> Tensor:
        return F.cross_entropy(ctx.model(x) / T, y, reduction="sum")

    def add_hessian_times_g(x: Tensor, y: Tensor, g: list[Tensor] | None) -> list[Tensor]:
        """``.grad += d(g . grad_b)/dtheta`` for batch b; ``g=None``: g is this batch's gradient
        plus what ``.grad`` holds (returned). The differentiable gradient is dropped before the
        double backward, so only its graph stays alive."""
        gb = torch.autograd.grad(loss(x, y), params, create_graph=True, allow_unused=True)
        if g is None:  # g = the other batches' gradients (in .grad) + this one's
            g = [_plus(p.grad, t.detach() if t is not None else None, p) for p, t in zip(params, gb)]
            _zero_grads(params)
        z = sum((a * b).sum() for a, b in zip(g, gb) if b is not None and b.requires_grad)
        del gb
        if isinstance(z, Tensor):
            z.backward(inputs=params)
        return g

    _zero_grads(params)
    for x, y in batches[:-1]:  # g of all batches but the last, accumulated in .grad
        loss(x, y).backward(inputs=params)
    g = add_hessian_times_g(*batches[-1], None)
    for x, y in batches[:-1]:
        add_hessian_times_g(x, y, g)
    hg = [_grad_or_zeros(p) for p in params]
    _zero_grads(params)
    return {n: hg_n.mul_(p.detach()) for (n, p), hg_n in zip(ctx.params.items(), hg)}


def _plus(a: Tensor | None, b: Tensor | None, like: Tensor) -> Tensor:
    """``a + b`` where None is zero, adding in place into ``a`` (no copy when one is None)."""
    if a is None:
        return b if b is not None else torch.zeros_like(like)
    return a.add_(b) if b is not None else a


@register("synflow")
def synflow(ctx: ScoreContext) -> Scores:
    """SynFlow (Tanaka et al. 2020): ``|theta| * dR/d|theta|``, ``R = 1^T f_{|theta|}(1)``, eval mode.

    Computed on the model made absolute (parameters and floating buffers) in float64 by default,
    so deep networks (ResNet-110: R ~ 1e130, beyond float32) neither overflow nor lose the ranking.
    ``synflow_dtype="float32"`` is faster and falls back to float64 when R overflows. The model
    is prepared once per ``prune`` call; later rounds see it with the dropped weights zeroed.
    """
    shape = ctx.options.get("input_shape")
    check(shape is not None, "synflow needs the input shape: pass data or input_shape=(C, H, W)")
    model = ctx.model
    if "synflow_dtype" not in ctx.state:
        dtype = ctx.options.get("synflow_dtype", "float64")
        check(dtype in ("float32", "float64"), f"synflow_dtype must be float32 or float64, got {dtype!r}")
        model.eval()
        with torch.no_grad():
            for t in list(model.parameters()) + [b for b in model.buffers() if b.is_floating_point()]:
                t.abs_()
        for p in model.parameters():  # autograd computes no other parameter's gradient
            p.requires_grad_(False)
        for p in ctx.params.values():
            p.requires_grad_(True)
        ctx.state["synflow_dtype"] = getattr(torch, dtype)
    while True:
        dt = ctx.state["synflow_dtype"]
        if ctx.state.get("synflow_model_dtype") != dt:
            model.to(dt)
            ctx.state["synflow_model_dtype"] = dt
        R, grads = _synflow_grads(ctx, torch.ones((1, *shape), dtype=dt, device=ctx.device))
        if R is not None or dt == torch.float64:
            break
        ctx.state["synflow_dtype"] = torch.float64  # float32 overflowed: this and later rounds in float64
    check(R is not None, "SynFlow's R overflowed even in float64; the model is too deep for SynFlow")
    return {n: grads[n].mul_(p.detach()) for n, p in ctx.params.items()}


def _synflow_grads(ctx: ScoreContext, ones: Tensor) -> tuple[Tensor | None, Scores]:
    """``R`` and ``dR/dp`` for the prunable parameters (``R`` is None when it is not finite)."""
    with convs_as_matmuls(ctx.model):
        R = ctx.model(ones).sum()
    if not bool(torch.isfinite(R)):
        return None, {}
    params = list(ctx.params.values())
    got = torch.autograd.grad(R, params, allow_unused=True) if R.requires_grad else [None] * len(params)
    return R.detach(), {n: g if g is not None else torch.zeros_like(p) for (n, p), g in zip(ctx.params.items(), got)}


@register("ntk")
def ntk(ctx: ScoreContext) -> Scores:
    """NTK column norms ``||J[:, i]||^2`` summed over a batch (SPEC 3.7), eval mode, via ``torch.func``.

    Inputs are the given data, or ``ntk_samples`` (default 16) standard Gaussian inputs of
    ``input_shape`` (data-free).
    """
    from torch.func import functional_call, grad, vmap

    model = ctx.model
    model.eval()
    x = _score_inputs(ctx, "ntk", int(ctx.options.get("ntk_samples", 16)))
    names = list(ctx.params)
    fixed = {k: v.detach() for k, v in model.named_parameters() if k not in ctx.params}
    fixed.update({k: v for k, v in model.named_buffers()})
    prm = {k: v.detach() for k, v in ctx.params.items()}
    outputs = model(x[:1]).shape[-1]
    scores = {k: torch.zeros_like(v) for k, v in prm.items()}
    for o in range(outputs):
        def f(p, xi, o=o):
            return functional_call(model, {**fixed, **p}, (xi.unsqueeze(0),))[0, o]

        for chunk in x.split(int(ctx.options.get("ntk_chunk", 64))):
            per_sample = vmap(grad(f), in_dims=(None, 0))(prm, chunk)
            for k in names:
                scores[k] += (per_sample[k] ** 2).sum(0)
    return scores


@register("sketch")
def sketch_scores(ctx: ScoreContext) -> Scores:
    """The linear-theory optimal score (SPEC 3.2): ``|W[j, k]| * ||out-sensitivity_j|| * ||input_k||``.

    For each Linear/Conv layer, ``||input_k||`` is the norm over the batch (and positions) of the
    layer's input feature k (the unfolded patch entry for convolutions) and ``||out_j||`` the norm
    of ``v^T J`` for the layer's output unit j with a Gaussian ``v`` (``E (v^T J)_j^2 = ||J[:, j]||^2``).
    Data-free (no data): standard Gaussian inputs of ``input_shape``, the standardized-data case.
    """
    model = ctx.model
    model.eval()
    x = _score_inputs(ctx, "sketch", int(ctx.options.get("sketch_samples", 64)))
    owner = {}
    for mname, m in model.named_modules():
        if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            owner[f"{mname}.weight" if mname else "weight"] = m
    in_norm2: dict[str, Tensor] = {}
    outs: dict[str, Tensor] = {}
    hooks = []
    for name, m in owner.items():
        if name not in ctx.params:
            continue

        def hook(mod, inp, out, name=name):
            in_norm2[name] = _input_feature_norm2(mod, inp[0].detach())
            out.retain_grad()
            outs[name] = out

        hooks.append(m.register_forward_hook(hook))
    try:
        y = model(x)
        v = torch.randn(y.shape, generator=ctx.generator).to(y)
        (y * v).sum().backward()
    finally:
        for h in hooks:
            h.remove()
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


def nonnegative(scores: Scores, how: str = "positive") -> tuple[Scores, bool]:
    """Map signed scores to sampling weights; returns ``(weights, are_log_weights)``.

    * ``positive``: ``max(s, 0)`` (keeps the ranking among helpful weights; default);
    * ``rank``: the rank of s among all scores, divided by their number;
    * ``exp``: tempered exponential ``exp(s / std(s))``, returned as log-weights;
    * ``shift``: ``s - min(s)``: nearly uniform weights, so about a random mask (documented for comparison).
    """
    if how == "positive":
        return {n: s.clamp_min(0) for n, s in scores.items()}, False
    if how == "shift":
        lo = min(float(s.min()) for s in scores.values())
        return {n: s - lo for n, s in scores.items()}, False
    flat = torch.cat([s.reshape(-1) for s in scores.values()])
    if how == "rank":
        ranks = torch.empty_like(flat)
        ranks[torch.argsort(flat, stable=True)] = torch.arange(1, flat.numel() + 1, dtype=flat.dtype,
                                                               device=flat.device) / flat.numel()
        return _unflatten(ranks, scores), False
    if how == "exp":
        std = float(flat.std()) if flat.numel() > 1 else 1.0
        return {n: s / (std if std > 0 else 1.0) for n, s in scores.items()}, True
    raise SketchpruneError(f"unknown signed-score map {how!r}; use positive, rank, exp or shift")


def _unflatten(flat: Tensor, like: Scores) -> Scores:
    out, i = {}, 0
    for n, s in like.items():
        out[n] = flat[i:i + s.numel()].view_as(s)
        i += s.numel()
    return out
