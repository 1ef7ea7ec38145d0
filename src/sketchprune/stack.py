"""Many runs trained at once: ``K`` networks of one architecture stacked into one computation.

A sweep is hundreds of small trainings. :func:`stack_models` turns ``K`` networks of the same
architecture into one :class:`StackedModel` whose parameters carry a leading network dimension
(``weight`` of shape ``(K, out, in)``, under the same names), and :func:`train_stacked` trains
it: one forward, one backward and one optimizer step per step for all ``K``. Activations are
held sample-major as ``(K * B, ...)`` (network ``k``'s batch is rows ``k*B .. (k+1)*B``), so
every per-sample operation of the model's own ``forward`` (ReLU, pooling, flatten, residual
sums), the optimizer step (every optimizer of ``train`` is elementwise), the masks (one
:meth:`Masks.apply <sketchprune.masks.Masks.apply>` on the stacked tensors, exact zeros) and the
loss run once for the whole stack. Only the layers with parameters or batch statistics
(``Linear``, ``Conv1d``/``Conv2d``, ``BatchNorm``) call, network by network, exactly what
one-at-a-time training calls (``F.linear``, ``_conv_forward``, ``F.batch_norm``) on that
network's own slice, moved to a fresh tensor when it does not start where one would
(:data:`ALIGNMENT`: MKL rounds differently for data that starts elsewhere).

**A run's result does not depend on its companions.** Each network keeps its own batch order
and augmentation (its own generator, seeded as :func:`~sketchprune.train.train` seeds it), its
own mask, its own optimizer state and its own ``checkpoint.pt`` / ``metrics.jsonl`` in its own
folder, in the format of :class:`~sketchprune.train.Checkpoint`: a stack killed at any moment
resumes with nothing lost, alone or in another stack. Every number a network sees is computed
by the same call on the same data as when it trains alone, so a network trained in a stack of
any size gives the weights, metrics and checkpoint contents ``train`` gives it alone, bit for
bit, whatever the thread count (``tests/test_stack.py`` pins it for every layer kind). Batched
products (``bmm``, grouped convolutions) would be faster but are not: MKL's batched and single
products round differently for some shapes, thread counts and alignments, so the network's
result would depend on its stack.

What cannot stack trains alone (the sweep falls back to :func:`~sketchprune.train.train`): a
model with a module this file does not know (:func:`stack_problem` says which), a training
with callbacks, a regression data set, ``structure=units`` (each run's network has its own
shape) and a checkpoint whose masks a callback had set. Methods that train while they prune
(``imp``; the ``train``-kind methods) run their own loop one run at a time while pruning; their
final training stacks.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sketchprune import seeding
from sketchprune.atomic import atomic_path, write_text
from sketchprune.config import config_hash
from sketchprune.data import Dataset
from sketchprune.errors import SketchpruneError, check
from sketchprune.masks import Masks
from sketchprune.train import Checkpoint, TrainConfig, TrainState, augment, lr_factor, make_optimizer, resolve_device

# ---- the stacked layers --------------------------------------------------------------------

PER_SAMPLE = (nn.ReLU, nn.LeakyReLU, nn.GELU, nn.Tanh, nn.Sigmoid, nn.Identity, nn.Unflatten,
              nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d,
              nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d)
"""Modules without parameters that treat each sample on its own: they run on the whole stack."""


def _containers() -> tuple[type, ...]:
    """Module classes whose own ``forward`` only composes their children sample by sample."""
    from sketchprune.models import resnets, vgg

    return (nn.Sequential, resnets.BasicBlock, resnets.ResNet, vgg.VGG)


class _Span:
    """The networks a stacked forward computes: all ``K`` (training) or ``[start, stop)``
    (evaluation in parts); ``shared``: the input is one batch that every network takes (evaluation),
    until the first layer with parameters has read it."""

    def __init__(self, k: int) -> None:
        self.k, self.start, self.stop, self.shared = k, 0, k, False

    @property
    def count(self) -> int:
        return self.stop - self.start

    def take(self, t: Tensor) -> Tensor:
        return t if (self.start, self.stop) == (0, self.k) else t[self.start:self.stop]

    def split(self, x: Tensor) -> list[Tensor]:
        """Each network's samples of ``x``, every one where a fresh tensor would be (see :func:`_aligned`)."""
        if self.shared:
            self.shared = False
            return [x] * self.count
        return [_aligned(t) for t in x.reshape(self.count, -1, *x.shape[1:]).unbind(0)]

    def parts(self, t: Tensor | None) -> list[Tensor | None]:
        """Network by network, the slices of a stacked parameter (None: the layer has none)."""
        if t is None:
            return [None] * self.count
        return [_aligned(p) for p in self.take(t).unbind(0)]


ALIGNMENT = 64
"""Bytes: where PyTorch's CPU allocator puts every new tensor. MKL's products can round
differently for data that starts elsewhere, so a network's slice of a stacked tensor that does
not start on this boundary is copied to a fresh tensor before a product reads it."""


def _aligned(t: Tensor) -> Tensor:
    """``t``, or a fresh copy of it when it does not start on an :data:`ALIGNMENT` boundary."""
    return t if t.data_ptr() % ALIGNMENT == 0 else t.clone()


class _Join(torch.autograd.Function):
    """``torch.stack`` of the networks' outputs whose backward hands each network its gradient
    where a fresh tensor would be (as one-at-a-time training does)."""

    @staticmethod
    def forward(ctx: Any, *parts: Tensor) -> Tensor:
        return torch.stack(parts)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, ...]:
        return tuple(_aligned(g) for g in grad.unbind(0))


def _join(parts: Sequence[Tensor]) -> Tensor:
    """The networks' outputs as one ``(K * B, ...)`` tensor."""
    out = _Join.apply(*parts)
    return out.reshape(-1, *out.shape[2:])


def _stacked(layers: Sequence[nn.Module], name: str) -> nn.Parameter | None:
    """The layers' parameter ``name`` stacked along a new first dimension (None when they have none)."""
    if getattr(layers[0], name) is None:
        return None
    return nn.Parameter(torch.stack([getattr(m, name).detach() for m in layers]).clone())


class StackedLinear(nn.Module):
    """``K`` ``Linear`` layers: ``weight`` ``(K, out, in)``, ``bias`` ``(K, out)``; network ``k``'s
    samples go through ``F.linear`` with its own weights, as one-at-a-time training calls it."""

    def __init__(self, layers: Sequence[nn.Linear], span: _Span) -> None:
        super().__init__()
        self.span = span
        self.in_features, self.out_features = layers[0].in_features, layers[0].out_features
        self.weight, self.bias = _stacked(layers, "weight"), _stacked(layers, "bias")

    def forward(self, x: Tensor) -> Tensor:
        span = self.span
        return _join([F.linear(xi, wi, bi) for xi, wi, bi in
                      zip(span.split(x), span.parts(self.weight), span.parts(self.bias))])


class StackedConv(nn.Module):
    """``K`` ``Conv1d``/``Conv2d`` layers: ``weight`` ``(K, out, in, *kernel)``; each network's
    samples go through the convolution call one-at-a-time training makes."""

    def __init__(self, layers: Sequence[nn.Module], span: _Span) -> None:
        super().__init__()
        self.span = span
        self.conv = [layers[0]]  # the template's hyperparameters and _conv_forward (in a list: not a child)
        self.weight, self.bias = _stacked(layers, "weight"), _stacked(layers, "bias")

    def forward(self, x: Tensor) -> Tensor:
        span, conv = self.span, self.conv[0]
        return _join([conv._conv_forward(xi, wi, bi) for xi, wi, bi in
                      zip(span.split(x), span.parts(self.weight), span.parts(self.bias))])


class StackedBatchNorm(nn.Module):
    """``K`` ``BatchNorm`` layers with per-network statistics (``running_mean`` ``(K, C)``, ...);
    each network's slice is normalized by the call ``_BatchNorm.forward`` makes."""

    def __init__(self, layers: Sequence[nn.modules.batchnorm._BatchNorm], span: _Span) -> None:
        super().__init__()
        first = layers[0]
        self.span = span
        self.momentum, self.eps, self.track_running_stats = first.momentum, first.eps, first.track_running_stats
        self.weight, self.bias = _stacked(layers, "weight"), _stacked(layers, "bias")
        for name in ("running_mean", "running_var", "num_batches_tracked"):
            held = getattr(first, name)
            if held is None:
                setattr(self, name, None)
            else:
                self.register_buffer(name, torch.stack([getattr(m, name) for m in layers]).clone())

    def forward(self, x: Tensor) -> Tensor:
        span = self.span
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            span.take(self.num_batches_tracked).add_(1)  # the same count for every network of a stack
            if self.momentum is None:
                factor = 1.0 / float(span.take(self.num_batches_tracked)[0])
        batch_stats = self.training or (self.running_mean is None and self.running_var is None)
        use_stats = not self.training or self.track_running_stats
        # running statistics are updated in place: their slices, never copies
        means = list(span.take(self.running_mean).unbind(0)) if use_stats and self.running_mean is not None \
            else [None] * span.count
        variances = list(span.take(self.running_var).unbind(0)) if use_stats and self.running_var is not None \
            else [None] * span.count
        return _join([F.batch_norm(xi, m, v, w, b, batch_stats, factor, self.eps) for xi, m, v, w, b in
                      zip(span.split(x), means, variances, span.parts(self.weight), span.parts(self.bias))])


_STACKED = {nn.Linear: StackedLinear, nn.Conv1d: StackedConv, nn.Conv2d: StackedConv,
            nn.BatchNorm1d: StackedBatchNorm, nn.BatchNorm2d: StackedBatchNorm}


def stack_problem(model: nn.Module) -> str | None:
    """Why ``model`` cannot be stacked (the first module this engine does not know), or None."""
    containers = _containers()
    for name, m in model.named_modules():
        kind = type(m)
        if kind in _STACKED:
            if kind in (nn.Conv1d, nn.Conv2d) and m.padding_mode != "zeros":
                return f"{name or 'the model'} ({kind.__name__}) pads with {m.padding_mode!r}"
            continue
        if kind in containers or kind in PER_SAMPLE:
            continue
        if kind is nn.Flatten and m.start_dim != 0:
            continue
        if kind is nn.Unflatten and m.dim != 0:
            continue
        return f"{name or 'the model'} is a {kind.__name__}, which the stacked engine does not know"
    return None


class StackedModel(nn.Module):
    """``K`` networks of one architecture as one module; ``forward`` takes ``(K * B, ...)``
    (network-major) and returns ``(K * B, ...)``. Parameters and buffers have the template's names
    with a leading network dimension; :meth:`network_state` is network ``k``'s ``state_dict``."""

    def __init__(self, models: Sequence[nn.Module]) -> None:
        super().__init__()
        check(len(models) >= 1, "a stack needs at least one network")
        template = models[0]
        problem = stack_problem(template)
        check(problem is None, f"cannot stack this model: {problem}")
        layout = [(n, tuple(t.shape), t.dtype) for n, t in template.state_dict().items()]
        for other in models[1:]:
            check(type(other) is type(template) and repr(other) == repr(template)
                  and [(n, tuple(t.shape), t.dtype) for n, t in other.state_dict().items()] == layout,
                  "networks of a stack must have the same architecture (modules, parameter names and shapes)")
        self.k = len(models)
        self.span = _Span(self.k)
        import copy

        body = copy.deepcopy(template)
        for name, module in list(template.named_modules()):
            make = _STACKED.get(type(module))
            if make is None:
                continue
            stacked = make([m.get_submodule(name) for m in models], self.span)
            parent, _, leaf = name.rpartition(".")
            setattr(body.get_submodule(parent) if parent else body, leaf, stacked)
        self.body = body
        self.input_shape = getattr(template, "input_shape", None)
        self._names = [n for n, _ in template.named_parameters()]

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)

    def stacked_parameters(self) -> dict[str, nn.Parameter]:
        """Name (as in one network) -> stacked parameter ``(K, ...)``."""
        return {n[len("body."):]: p for n, p in self.named_parameters()}

    def network_state(self, k: int) -> dict[str, Tensor]:
        """Network ``k``'s ``state_dict`` (copies, in the template's key order)."""
        return {n[len("body."):]: t[k].clone() for n, t in self.state_dict().items()}

    def load_network_state(self, k: int, state: Mapping[str, Tensor]) -> None:
        """Set network ``k``'s parameters and buffers from a one-network ``state_dict``."""
        own = {n[len("body."):]: t for n, t in self.state_dict(keep_vars=True).items()}
        check(sorted(own) == sorted(state), "a network state must have every parameter and buffer of the stack")
        with torch.no_grad():
            for n, t in own.items():
                t[k].copy_(state[n])


def stack_models(models: Sequence[nn.Module]) -> StackedModel:
    """One :class:`StackedModel` of ``models`` (same architecture; their current weights and buffers)."""
    return StackedModel(models)


def stack_masks(stacked: StackedModel, masks: Sequence[Masks | None]) -> Masks:
    """The networks' masks as one :class:`Masks` over the stacked model's parameters (named
    ``body.<name>``); a network without a mask for a tensor keeps all of it."""
    check(len(masks) == stacked.k, f"{len(masks)} masks for a stack of {stacked.k} networks")
    params = stacked.stacked_parameters()
    names = [n for n in params if any(m is not None and n in m for m in masks)]
    out = {}
    for n in names:
        shape = params[n].shape[1:]
        rows = [m[n].to(params[n].device) if m is not None and n in m else torch.ones(shape, dtype=torch.bool,
                                                                                       device=params[n].device)
                for m in masks]
        check(all(tuple(r.shape) == tuple(shape) for r in rows), f"mask {n!r} has another shape than the parameter")
        out[f"body.{n}"] = torch.stack(rows)  # the stacked model's own parameter name
    return Masks(out)


# ---- optimizer state, one network at a time -------------------------------------------------

def network_optimizer_state(opt: torch.optim.Optimizer, k: int) -> dict[str, Any]:
    """Network ``k``'s part of a stacked optimizer's ``state_dict``: what one network's optimizer
    (made by ``make_optimizer``) would hold."""
    full = opt.state_dict()
    shapes = {i: p.shape for i, p in enumerate(p for g in opt.param_groups for p in g["params"])}
    state = {i: {key: (v[k].clone() if isinstance(v, Tensor) and v.dim() and v.shape == shapes[i] else
                       v.clone() if isinstance(v, Tensor) else v) for key, v in s.items()}
             for i, s in full["state"].items()}
    return {"state": state, "param_groups": full["param_groups"]}


def stacked_optimizer_state(opt: torch.optim.Optimizer, states: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The ``state_dict`` of a stacked optimizer from its networks' (inverse of :func:`network_optimizer_state`)."""
    shapes = {i: p.shape for i, p in enumerate(p for g in opt.param_groups for p in g["params"])}
    first = states[0]
    keys = [sorted(s["state"]) for s in states]
    check(all(k == keys[0] for k in keys), "the networks' optimizer states cover different parameters")
    merged: dict[int, dict[str, Any]] = {}
    for i in first["state"]:
        entry = {}
        for key, v in first["state"][i].items():
            if isinstance(v, Tensor) and v.dim() and (len(states),) + tuple(v.shape) == tuple(shapes[int(i)]):
                entry[key] = torch.stack([s["state"][i][key] for s in states])
            else:
                check(all(_same(s["state"][i][key], v) for s in states),
                      f"networks of a stack must share the optimizer's {key!r} (they are at one step)")
                entry[key] = v
        merged[i] = entry
    return {"state": merged, "param_groups": first["param_groups"]}


def _same(a: Any, b: Any) -> bool:
    return bool(torch.equal(a, b)) if isinstance(a, Tensor) and isinstance(b, Tensor) else a == b


# ---- training --------------------------------------------------------------------------------

@dataclass
class Job:
    """One network of a stack: what :func:`~sketchprune.train.train` would be given for it."""

    model: nn.Module
    masks: Masks | None = None
    seed: int = 0
    out: Path | None = None
    run_key: str | None = None


@dataclass
class _Network:
    """A job while it trains: its generator, history and where it stands."""

    job: Job
    index: int
    generator: torch.Generator
    epoch: int = 0
    history: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    optimizer_state: dict[str, Any] | None = None
    error: Exception | None = None
    seconds: float = 0.0


def _resume(job: Job, index: int, data: Dataset, cfg: TrainConfig, dev: torch.device) -> _Network:
    """Read ``job``'s checkpoint (when there is one) exactly as ``train`` would, into its own model."""
    net = _Network(job, index, seeding.generator(job.seed, "train"))
    if job.out is None:
        return net
    key = job.run_key if job.run_key is not None else f"{config_hash(cfg)}-s{job.seed}"
    checkpoint = Checkpoint(Path(job.out) / "checkpoint.pt", key)
    if not checkpoint.path.exists():
        return net
    optimizer = make_optimizer(job.model, cfg)
    state = TrainState(job.model, optimizer, data, cfg, net.generator, dev, job.seed, Path(job.out),
                       -(-len(data.train_y) // cfg.batch_size), [checkpoint])
    checkpoint.restore(state)
    if state.masks_changed:  # written by a training whose callback set masks: not this engine's
        if state._handle is not None:
            state._handle.remove()
        raise SketchpruneError(f"checkpoint {checkpoint.path} holds masks a callback set; train this run alone "
                               "(sketchprune.train.train with its callbacks)")
    net.epoch, net.history = state.epoch, state.history
    net.optimizer_state = optimizer.state_dict()
    return net


def train_stacked(
    jobs: Sequence[Job],
    data: Dataset,
    cfg: TrainConfig = TrainConfig(),
    *,
    device: str | None = None,
    progress: bool = False,
    stop_after: int | None = None,
    eval_memory: int = 2**28,
    timings: dict[str, float] | None = None,
) -> list[dict[str, Any] | Exception]:
    """Train the networks of ``jobs`` together; per job, what ``train`` returns for it alone (or
    the exception that stopped it, such as a non-finite loss: the others go on).

    Every job's model must have the same architecture; each is trained with its own masks,
    seed (batch order and augmentation), checkpoint folder ``out`` and ``run_key``, as
    ``train(model, data, cfg, masks=, out=, seed=, run_key=)`` trains it. Networks that resume
    from different epochs train in separate stacks. ``wall_seconds`` is each network's share of
    its stack's time. ``eval_memory`` caps the bytes of one evaluation forward (the stack is
    evaluated in parts when needed). The models are left holding their trained weights. With a
    ``timings`` dict, the seconds spent in training steps, evaluation and checkpoints (metrics
    and checkpoint files) are added to its keys ``steps``, ``evaluation``, ``checkpoints``.
    """
    cfg.validate()
    check(len(jobs) >= 1, "train_stacked needs at least one job")
    check(not cfg.augment or data.image, f"augment (crop and flip) applies to image data; {data.name} has none")
    dev = resolve_device(device)
    data = data.to(dev)
    for job in jobs:
        job.model.to(dev)
    nets = [_resume(job, i, data, cfg, dev) for i, job in enumerate(jobs)]
    end = [cfg.epochs if stop_after is None else min(cfg.epochs, n.epoch + stop_after) for n in nets]
    by_start: dict[tuple[int, int], list[_Network]] = {}
    for n, e in zip(nets, end):
        by_start.setdefault((n.epoch, e), []).append(n)
    for (start, stop), group in by_start.items():
        if start < stop:
            _train_group(group, data, cfg, dev, start, stop, progress, eval_memory, timings)
    results: list[dict[str, Any] | Exception] = []
    for n in nets:
        if n.error is not None:
            results.append(n.error)
            continue
        final = n.history[-1] if n.history else {}
        results.append({"epochs_done": len(n.history), "final_test_acc": final.get("test_acc"),
                        "best_test_acc": max((h["test_acc"] for h in n.history), default=None),
                        "final_train_loss": final.get("train_loss"), "wall_seconds": n.seconds,
                        "history": n.history, "snapshot": None})
    return results


def _train_group(nets: list[_Network], data: Dataset, cfg: TrainConfig, dev: torch.device, start: int, end: int,
                 progress: bool, eval_memory: int, timings: dict[str, float] | None) -> None:
    """Epochs ``start .. end`` of networks that all stand at ``start``: one stacked model, one optimizer."""
    t0 = time.perf_counter()
    stacked = stack_models([n.job.model for n in nets]).to(dev)
    handle = stack_masks(stacked, [n.job.masks for n in nets]).apply(stacked)
    try:
        opt = make_optimizer(stacked, cfg)
        if nets[0].optimizer_state is not None:
            opt.load_state_dict(stacked_optimizer_state(opt, [n.optimizer_state for n in nets]))
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=cfg.epochs, initial=start, desc=f"train x{len(nets)}", leave=False)
        try:
            for epoch in range(start, end):
                _epoch(stacked, opt, nets, data, cfg, dev, epoch, eval_memory, timings)
                if bar is not None:
                    bar.update(1)
                if all(n.error is not None for n in nets):
                    break
        finally:
            if bar is not None:
                bar.close()
    finally:
        handle.remove()
    with torch.no_grad():  # each job's model holds its trained weights, as after train()
        for k, n in enumerate(nets):
            n.job.model.load_state_dict(stacked.network_state(k))
    share = (time.perf_counter() - t0) / len(nets)
    for n in nets:
        n.seconds += share


def _epoch(stacked: StackedModel, opt: torch.optim.Optimizer, nets: list[_Network], data: Dataset,
           cfg: TrainConfig, dev: torch.device, epoch: int, eval_memory: int,
           timings: dict[str, float] | None = None) -> None:
    """One epoch of every network: train, evaluate, write each one's metrics and checkpoint."""
    clock = _Clock(timings, dev)
    k, n = len(nets), len(data.train_y)
    for g in opt.param_groups:
        g["lr"] = cfg.lr * lr_factor(cfg, epoch)
    stacked.train()
    perms = [torch.randperm(n, generator=net.generator).to(dev) for net in nets]
    total = torch.zeros(k, device=dev, dtype=torch.float64)
    for i in range(0, n, cfg.batch_size):
        idx = [p[i:i + cfg.batch_size] for p in perms]
        ys = [data.train_y[j] for j in idx]
        if cfg.augment:
            x = torch.cat([augment(data.train_x[j], net.generator) for j, net in zip(idx, nets)])
        else:
            x = data.train_x[torch.cat(idx)]
        losses = stacked_step(stacked, opt, x, ys)
        total += losses.double() * len(ys[0])
    train_loss = total.tolist()
    clock.lap("steps")
    test = evaluate_stacked(stacked, data.test_x, data.test_y, memory=eval_memory)
    clock.lap("evaluation")
    lr = opt.param_groups[0]["lr"]
    for j, net in enumerate(nets):
        if net.error is not None:
            continue
        loss = train_loss[j] / n
        if not math.isfinite(loss):
            net.error = SketchpruneError(f"training loss became {loss} in epoch {epoch + 1}; lower --lr")
            continue
        net.history.append({"epoch": epoch + 1, "train_loss": loss, "test_loss": test[j][0], "test_acc": test[j][1],
                            "lr": lr})
        net.epoch = epoch + 1
        if net.job.out is not None:
            _write(net, stacked, opt, j, cfg)
    clock.lap("checkpoints")


class _Clock:
    """Adds the seconds since its last lap to ``timings[key]`` (nothing when ``timings`` is None)."""

    def __init__(self, timings: dict[str, float] | None, device: torch.device) -> None:
        self.timings, self.device, self.t = timings, device, time.perf_counter()

    def lap(self, key: str) -> None:
        if self.timings is None:
            return
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        now = time.perf_counter()
        self.timings[key] = self.timings.get(key, 0.0) + now - self.t
        self.t = now


def stacked_step(stacked: StackedModel, opt: torch.optim.Optimizer, x: Tensor, ys: Sequence[Tensor]) -> Tensor:
    """One optimizer step of every network: ``x`` is ``(K * B, ...)``, ``ys[k]`` network ``k``'s
    labels. Each network's loss is its own ``F.cross_entropy`` (the sum of the ``K`` losses is
    differentiated, so each network gets the gradient of its own loss); returns the ``K`` losses."""
    out = stacked(x)
    losses = torch.stack([F.cross_entropy(_aligned(o), y)
                          for o, y in zip(out.reshape(len(ys), -1, out.shape[-1]).unbind(0), ys)])
    opt.zero_grad(set_to_none=True)
    losses.sum().backward()
    opt.step()
    return losses.detach()


def _write(net: _Network, stacked: StackedModel, opt: torch.optim.Optimizer, k: int, cfg: TrainConfig) -> None:
    """Network ``k``'s ``metrics.jsonl`` and ``checkpoint.pt``, as ``train``'s Metrics and Checkpoint write them."""
    folder = Path(net.job.out)  # type: ignore[arg-type]
    write_text(folder / "metrics.jsonl", "".join(json.dumps(h) + "\n" for h in net.history))
    key = net.job.run_key if net.job.run_key is not None else f"{config_hash(cfg)}-s{net.job.seed}"
    saved = {"config_hash": key, "epoch": net.epoch, "model": stacked.network_state(k),
             "optimizer": network_optimizer_state(opt, k), "generator": net.generator.get_state(),
             "history": json.dumps(net.history)}
    with atomic_path(folder / "checkpoint.pt") as tmp:
        torch.save(saved, tmp)


@torch.no_grad()
def evaluate_stacked(stacked: StackedModel, x: Tensor, y: Tensor, batch_size: int = 1000,
                     memory: int = 2**28) -> list[tuple[float, float]]:
    """Per network, (mean cross-entropy, top-1 accuracy) on ``(x, y)`` in eval mode: the numbers
    :func:`~sketchprune.train.evaluate` gives each alone. Networks are evaluated in parts so that
    one forward's largest activation stays under ``memory`` bytes."""
    was = stacked.training
    stacked.eval()
    k = stacked.k
    part = max(1, min(k, memory // max(1, _widest_activation(stacked, x[:1]) * min(batch_size, len(y)) * 4)))
    loss = [0.0] * k
    correct = [0] * k
    try:
        for a in range(0, k, part):
            b = min(k, a + part)
            stacked.span.start, stacked.span.stop = a, b
            for i in range(0, len(y), batch_size):
                xi, yi = x[i:i + batch_size], y[i:i + batch_size]
                stacked.span.shared = True  # every network reads this very slice, as evaluate() hands it over
                out = stacked(xi).reshape(b - a, len(yi), -1)
                sums = torch.stack([F.cross_entropy(_aligned(o), yi, reduction="sum") for o in out.unbind(0)]).tolist()
                hits = (out.argmax(2) == yi).sum(1).tolist()
                for j in range(b - a):
                    loss[a + j] += sums[j]
                    correct[a + j] += int(hits[j])
    finally:
        stacked.span.start, stacked.span.stop, stacked.span.shared = 0, k, False
        stacked.train(was)
    return [(loss[j] / len(y), correct[j] / len(y)) for j in range(k)]


def _widest_activation(stacked: StackedModel, sample: Tensor) -> int:
    """The most numbers one module outputs per sample per network (measured once per stack)."""
    cached = getattr(stacked, "_widest", None)
    if cached is not None:
        return cached
    widest = [int(sample[0].numel())]

    def hook(module: nn.Module, inputs: Any, output: Any) -> None:
        if isinstance(output, Tensor):
            widest[0] = max(widest[0], output.numel() // max(1, stacked.span.count))

    handles = [m.register_forward_hook(hook) for m in stacked.modules()]
    start, stop = stacked.span.start, stacked.span.stop
    try:
        stacked.span.start, stacked.span.stop = 0, 1
        was = stacked.training
        stacked.eval()
        stacked(sample)
        stacked.train(was)
    finally:
        stacked.span.start, stacked.span.stop = start, stop
        for h in handles:
            h.remove()
    stacked._widest = widest[0]  # type: ignore[attr-defined]
    return widest[0]


# ---- runs, stacked ---------------------------------------------------------------------------

STACK_MAX = 16
"""The largest stack ``auto`` forms."""

CACHE_BYTES = 4 * 2**20
"""On the CPU, ``auto`` sizes a stack so its widest activation (K networks x batch) stays within
this: layer-by-layer batching is then faster than one network at a time, past it the stack's
activations leave the cache and it is slower (``benchmarks/bench_grid.py``)."""


def stack_key(cfg: Any) -> str | None:
    """What runs must share to train in one stack (model, data, training settings), as a string;
    None for a run that trains alone (``structure=units``: each run's network has its own shape)."""
    if cfg.structure != "weights":
        return None
    return json.dumps([cfg.model, cfg.model_options, cfg.dataset, cfg.data_options, dataclasses.asdict(cfg.train)],
                      sort_keys=True, default=str)


def parse_stack(value: Any, where: str = "stack") -> int | str:
    """``stack`` as given in a sweep file or by ``--stack``: a whole number >= 1 or ``auto``."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    check(isinstance(value, int) and not isinstance(value, bool) and value >= 1,
          f"{where} must be a whole number >= 1 or auto, got {value!r}")
    return value


def auto_size(model: nn.Module, batch_size: int, device: str | torch.device | None) -> int:
    """How many networks like ``model`` ``stack: auto`` trains at once: on the CPU as many as keep
    the stack's widest activation (K x ``batch_size`` samples) within :data:`CACHE_BYTES`, at most
    :data:`STACK_MAX`; on CUDA one (cuBLAS's batched products there need not be bit-identical to
    one-at-a-time training, so stacking is asked for by ``stack: K``)."""
    if resolve_device(str(device) if device is not None else None).type != "cpu" or stack_problem(model):
        return 1
    shape = getattr(model, "input_shape", None)
    if shape is None:
        return 1
    widest = [math.prod(shape)]

    def hook(module: nn.Module, inputs: Any, output: Any) -> None:
        if isinstance(output, Tensor):
            widest[0] = max(widest[0], output[0].numel())

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    was = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, *shape, device=next(model.parameters()).device))
    finally:
        model.train(was)
        for h in handles:
            h.remove()
    return max(1, min(STACK_MAX, CACHE_BYTES // (widest[0] * batch_size * 4)))


def plan(cfgs: Sequence[Any], stack: int | str = "auto", device: str | None = None,
         parallel: int = 1) -> list[list[int]]:
    """The runs ``cfgs`` in batches for :func:`run_many` (lists of indices, in sweep order): runs
    with the same :func:`stack_key` ``stack`` at a time, the others alone. ``auto``: on the CPU up
    to :data:`STACK_MAX` (:func:`run_many` sizes the stacks), but no more than spreads a group over
    ``parallel`` workers; one on CUDA."""
    groups: dict[str, list[int]] = {}
    batches: list[list[int]] = []
    for i, cfg in enumerate(cfgs):
        key = stack_key(cfg)
        if key is None:
            batches.append([i])
        else:
            groups.setdefault(key, []).append(i)
    cpu = resolve_device(device).type == "cpu"
    for members in groups.values():
        k = int(stack) if stack != "auto" else min(STACK_MAX, -(-len(members) // parallel)) if cpu else 1
        batches += [members[j:j + k] for j in range(0, len(members), k)]
    return sorted(batches, key=lambda b: b[0])


def run_many(cfgs: Sequence[Any], outs: Sequence[str | Path], *, stack: int | str = "auto",
             device: str | None = None, data_root: str | None = None, download: bool = False,
             progress: bool = False, timings: dict[str, float] | None = None) -> list[Any]:
    """Run ``cfgs`` in folders ``outs`` as :func:`sketchprune.experiment.run` runs each, the
    trainings that can stack trained together ``stack`` at a time (``auto``: :func:`auto_size`),
    the others one by one. Per run, its :class:`~sketchprune.results.Result` or the exception that
    stopped it (one run's failure stops no other). A run's ``wall_seconds`` is its pruning plus
    its share of its stack's training. ``timings``: as :func:`train_stacked`'s, and ``pruning``
    (each run up to its training), ``alone`` (the runs trained one at a time)."""
    import contextlib

    from sketchprune import experiment
    from sketchprune.results import RESULT_FILE, load_result
    from sketchprune.train import train

    outcome: list[Any] = [None] * len(cfgs)
    datasets: dict[str, Dataset] = {}
    clock = _Clock(timings, resolve_device(device))

    def alone(i: int, r: Any) -> None:
        try:
            outcome[i] = experiment.finish(r, train(r.model, r.data, r.cfg.train, device=device, progress=progress,
                                                    **r.train_kwargs()))
        except Exception as e:  # recorded for this run; the others go on
            outcome[i] = e
        clock.lap("alone")

    with contextlib.ExitStack() as held:
        ready: list[tuple[int, Any]] = []
        for i, (cfg, out) in enumerate(zip(cfgs, outs)):
            out = Path(out)
            try:
                experiment.claim(out, cfg)
                held.enter_context(experiment.run_lock(out))
                if (out / RESULT_FILE).exists():
                    outcome[i] = load_result(out / RESULT_FILE)
                    continue
                key = json.dumps([cfg.dataset, cfg.data_options], sort_keys=True, default=str)
                if key not in datasets:
                    datasets[key] = experiment.load_data(cfg, data_root, download)
                ready.append((i, experiment.prepare(cfg, out, device=device, dataset=datasets[key])))
            except Exception as e:
                outcome[i] = e
        clock.lap("pruning")
        stacks: dict[str, list[tuple[int, Any]]] = {}
        for i, r in ready:
            if _alone(r) is None:
                stacks.setdefault(json.dumps([stack_key(r.cfg), repr(r.model)]), []).append((i, r))
            else:
                alone(i, r)
        chunks = []
        for members in stacks.values():
            first = members[0][1]
            k = auto_size(first.model, first.cfg.train.batch_size, device) if stack == "auto" else int(stack)
            chunks += [members[j:j + k] for j in range(0, len(members), k)]
        for members in chunks:
            if len(members) == 1:  # a stack of one: the one-at-a-time loop (the same result)
                alone(*members[0])
                continue
            first = members[0][1]
            try:
                trained = train_stacked([Job(r.model, r.masks, r.cfg.seed, r.out, config_hash(r.cfg))
                                         for _, r in members], first.data, first.cfg.train, device=device,
                                        progress=progress, timings=timings)
            except Exception as e:  # the stack as a whole failed: every run of it did
                trained = [e] * len(members)
            clock.t = time.perf_counter()
            for (i, r), t in zip(members, trained):
                try:
                    if isinstance(t, Exception):
                        raise t
                    outcome[i] = experiment.finish(r, t, wall_seconds=r.prune_seconds + t["wall_seconds"])
                except Exception as e:
                    outcome[i] = e
            clock.lap("results")
    return outcome


def _alone(ready: Any) -> str | None:
    """Why a prepared run trains alone, or None when it can stack."""
    if ready.masks is None or ready.cfg.structure != "weights":
        return "structure=units"
    if ready.callbacks:
        return "its training has callbacks"
    if getattr(ready.data, "task", "classification") != "classification":
        return "a regression data set"
    return stack_problem(ready.model)


__all__ = ["Job", "StackedModel", "auto_size", "evaluate_stacked", "network_optimizer_state", "parse_stack", "plan",
           "run_many", "stack_key", "stack_masks", "stack_models", "stack_problem", "stacked_optimizer_state",
           "stacked_step", "train_stacked"]
