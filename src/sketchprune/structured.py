"""Structured pruning at initialization (SPEC 3.8): remove whole units, get a smaller dense network.

A unit ``i`` of a layer (a Linear feature, a Conv channel) contributes the rank-one term
``W_next[:, i] h_i`` to the next layer's input, so keeping a subset of units is column sampling in
approximate matrix multiplication, with the optimal probabilities ``∝ ||W_next[:, i]|| ||h_i||``
(``h_i``: the unit's activations over the data, or over standard Gaussian inputs without data)
and the exact errors of SPEC 3.1 (``sketchprune theory structured``).

:func:`prune_units` scores the units of every prunable group, keeps the top-k or an exact-k sample
of them, and removes the rest. Which layers must lose the same channels (batch norm, residual
additions, flatten into Linear) comes from Torch-Pruning's dependency graph (``torch-pruning``,
VainF/Torch-Pruning); the scores and the selection are ours. Unit scores (``UNIT_METHODS``):

* ``sketch``: ``sqrt(sum_consumers ||W_c[:, i]||^2 ||h_c,i||^2)``, the norm of unit i's term;
* ``l1``: the L1 norm of the unit's filter (Li et al., ICLR 2017);
* ``random``: uniform;
* ``3sp``: 3SP (van Amersfoort et al. 2020): the SNIP-style saliency ``|dL/dg_i|`` of a gate on the
  unit's output, per multiply-accumulate the unit costs (its "sensitivity per FLOP removed");
* ``synflow``: SynFlow's flow through the unit, ``|dR/dg_i|`` on the absolute model and an
  all-ones input (float64).

Budgets: ``keep`` is the fraction of each layer's units kept, or with ``keep_by="params"`` /
``"macs"`` the fraction of the network's parameters / multiply-accumulates (Torch-Pruning's
counter), met by one kept fraction for every layer (found by bisection). The output layer keeps
all its units. ``rescale=True`` multiplies each sampled unit's outgoing weights by ``1 / pi_i``
(its inclusion probability), the sketch's unbiased estimate of the next layer's input at
initialization; training then starts from those larger weights.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sketchprune import seeding
from sketchprune.errors import SketchpruneError, check
from sketchprune.hooks import forward_hooks
from sketchprune.methods.registry import make_absolute
from sketchprune.selection import budget, select

UNIT_METHODS = ("sketch", "l1", "random", "3sp", "synflow")
KEEP_BY = ("units", "params", "macs")
LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def prune_units(model: nn.Module, method: str, keep: float, *, mode: str = "topk", data: Iterable | None = None,
                seed: int = 0, keep_by: str = "units", scheme: str = "exact", power: float = 1.0,
                rescale: bool = False, input_shape: tuple[int, ...] | None = None,
                exclude: Iterable[nn.Module] = ()) -> nn.Module:
    """A new, smaller model with the same inputs and outputs, in which only whole units are removed.

    ``keep``: the kept fraction of units per layer (or of parameters / MACs, ``keep_by``); ``mode``
    "topk" or "sample" (exact-k ``∝ score^power`` by default); ``data``: (inputs, targets) batches
    (``3sp`` needs them; ``sketch`` uses them when given); ``exclude``: modules never pruned. The
    model given is left as it was.
    """
    import torch_pruning as tp

    check(method in UNIT_METHODS, f"unknown unit method {method!r}; use one of {', '.join(UNIT_METHODS)}")
    check(keep_by in KEEP_BY, f"unknown keep_by {keep_by!r}; use one of {', '.join(KEEP_BY)}")
    check(isinstance(keep, (int, float)) and not isinstance(keep, bool) and 0 < keep <= 1,
          f"keep must be a fraction in (0, 1], got {keep!r}")
    check(mode in ("topk", "sample"), f"unknown mode {mode!r} for units; use topk or sample")
    check(not rescale or mode == "sample", "rescale applies to sampled units (mode='sample')")
    batches = [(x, y) for x, y in data] if data is not None else None
    check(method != "3sp" or bool(batches), "unit method '3sp' needs data: pass data=[(inputs, targets), ...]")
    if input_shape is None:
        from sketchprune.pruning import input_shape_of

        input_shape = tuple(batches[0][0].shape[1:]) if batches else input_shape_of(model)
    check(input_shape is not None, "prune_units needs the input shape: pass data or input_shape=(C, H, W)")
    net = copy.deepcopy(model).eval()
    device = next(net.parameters()).device
    example = torch.zeros((1, *input_shape), device=device)
    outputs = _output_layers(net, example)
    graph = tp.DependencyGraph().build_dependency(net, example_inputs=example)
    ignored = list(outputs) + [m for m in net.modules() if any(m is e for e in _translate(model, net, exclude))]
    groups = list(graph.get_all_groups(ignored_layers=ignored, root_module_types=LAYERS))
    check(bool(groups), "the model has no units prune_units can remove (its only layers are the output layer)")
    generator = seeding.generator(seed, "prune-units")
    scores = _scores(net, groups, method, batches, input_shape, generator)
    sizes = [len(s) for s in scores]

    def choose(fraction: float) -> list[Tensor]:
        return _choose(scores, [max(1, budget(fraction, n)) for n in sizes], mode, scheme, power,
                       seeding.generator(seed, "prune-units-select"))

    fraction = keep if keep_by == "units" else _fraction_for(net, graph, groups, choose, example, keep, keep_by)
    kept = choose(fraction)
    if rescale:
        _rescale(groups, scores, kept, power)
    _remove_units(graph, groups, kept)
    net.input_shape = tuple(input_shape)
    names = {m: n for n, m in net.named_modules()}
    net.kept_units = {names[g[0].dep.target.module]: (int(k.sum()), len(k)) for g, k in zip(groups, kept)}
    return net


def costs(model: nn.Module, input_shape: tuple[int, ...], masks: dict[str, Tensor] | None = None) -> dict[str, float]:
    """Parameters and multiply-accumulates of ``model`` (with ``masks``: counting kept weights only,
    a sparse layer's MACs scaled by its density)."""
    import torch_pruning as tp

    example = torch.zeros((1, *input_shape), device=next(model.parameters()).device)
    macs, params = tp.utils.count_ops_and_params(model, example)
    if masks is None:
        return {"params": float(params), "macs": float(macs)}
    layer_macs = _layer_macs(model, example)
    named = dict(model.named_parameters())
    dropped_params = sum(m.numel() - int(m.sum()) for m in masks.values())
    dropped_macs = sum(layer_macs.get(n, 0.0) * (1 - float(m.float().mean())) for n, m in masks.items() if n in named)
    return {"params": float(params - dropped_params), "macs": float(macs - dropped_macs)}


# ---- scores ---------------------------------------------------------------------------------------------

def _scores(net: nn.Module, groups: list, method: str, batches: list | None, input_shape: tuple[int, ...],
            generator: torch.Generator) -> list[Tensor]:
    """One score tensor per group, one entry per root unit."""
    if method == "random":
        return [torch.rand(_units(g), generator=generator, dtype=torch.float64) for g in groups]
    if method == "l1":
        return [_reduce(g, lambda layer, idxs, out: layer.weight.detach().abs().reshape(layer.weight.shape[0], -1)
                        .sum(1)[idxs].double() if out else None) for g in groups]
    if method == "sketch":
        return _sketch_scores(net, groups, batches, input_shape, generator)
    return _gate_scores(net, groups, method, batches, input_shape)


def _units(group) -> int:
    return len(group[0].root_idxs)


def _reduce(group, per_layer) -> Tensor:
    """Sum over the group's layers of ``per_layer(layer, local_idxs, is_output_side)``, by root unit."""
    total = torch.zeros(_units(group), dtype=torch.float64)
    import torch_pruning as tp

    for i, (dep, idxs) in enumerate(group):
        layer = dep.target.module
        if not isinstance(layer, LAYERS):
            continue
        out_side = dep.handler in (tp.prune_conv_out_channels, tp.prune_linear_out_channels)
        in_side = dep.handler in (tp.prune_conv_in_channels, tp.prune_linear_in_channels)
        if not (out_side or in_side):
            continue
        values = per_layer(layer, list(idxs), out_side)
        if values is not None:
            total.scatter_add_(0, torch.tensor(group[i].root_idxs), values.double().cpu())
    return total


def _sketch_scores(net, groups, batches, input_shape, generator) -> list[Tensor]:
    """``sqrt(sum_c ||W_c[:, i]||^2 ||h_c,i||^2)`` over the consumer layers c of each unit i."""
    x = torch.cat([b[0] for b in batches]) if batches else torch.randn((64, *input_shape), generator=generator)
    norms: dict[nn.Module, Tensor] = {}

    def record(module, inputs) -> None:
        norms[module] = norms.get(module, 0) + _channel_sum(inputs[0].detach().double().pow(2))

    with forward_hooks(_layers(net), record, pre=True), torch.no_grad():
        net(x.to(next(net.parameters()).device))

    def consumer(layer, idxs, out_side):
        if out_side:
            return None
        w = layer.weight.detach().double()
        col = w.transpose(0, 1).reshape(w.shape[1], -1).pow(2).sum(1)  # ||W[:, j]||^2 per input feature j
        return col[idxs] * norms[layer].to(col.device)[idxs]

    return [_reduce(g, consumer).sqrt() for g in groups]


def _gate_scores(net, groups, method, batches, input_shape) -> list[Tensor]:
    """``|sum g * dL/dg|`` of a gate on each unit's output (3SP: per MAC of the unit), or SynFlow's
    ``|dR/dg|`` on the absolute model with an all-ones input."""
    import torch_pruning as tp

    work = copy.deepcopy(net)
    if method == "synflow":
        work = make_absolute(work.double())
    mods = dict(zip(net.modules(), work.modules()))
    saliency: dict[nn.Module, Tensor] = {}
    outs: dict[nn.Module, Tensor] = {}

    def keep_output(module, inputs, output) -> None:
        output.retain_grad()
        outs[module] = output

    def add_saliency() -> None:  # sum g * dL/dg of a gate on each output unit, g = 1
        for m, o in outs.items():
            saliency[m] = saliency.get(m, 0) + _channel_sum(o.detach() * o.grad)

    roots = {mods[dep.target.module] for g in groups for dep, _ in g
             if dep.handler in (tp.prune_conv_out_channels, tp.prune_linear_out_channels)}
    with forward_hooks(roots, keep_output):
        if method == "synflow":
            R = work(torch.ones((1, *input_shape), dtype=torch.float64, device=next(work.parameters()).device)).sum()
            R.backward()
            add_saliency()
        else:
            for x, y in batches:
                F.cross_entropy(work(x), y, reduction="sum").backward()
                add_saliency()
    scores = [_reduce(g, lambda layer, idxs, out: saliency[mods[layer]].abs().cpu()[idxs] if out else None)
              for g in groups]
    if method == "3sp":  # sensitivity per multiply-accumulate the unit costs
        example = torch.zeros((1, *input_shape), device=next(net.parameters()).device)
        macs = _layer_macs(net, example, per_module=True)
        for g, s in zip(groups, scores):
            cost = _reduce(g, lambda layer, idxs, out: torch.full((len(idxs),), macs[layer] /
                                                                  (layer.weight.shape[0] if out else layer.weight.shape[1])))
            s.div_(cost.clamp_min(1.0))
    return scores


# ---- selection, budgets, rescaling ------------------------------------------------------------------

def _choose(scores: list[Tensor], counts: list[int], mode: str, scheme: str, power: float,
            generator: torch.Generator) -> list[Tensor]:
    """Per group: the units kept (bool), exactly ``counts[g]`` of them, top-k or sampled."""
    kept = []
    for s, k in zip(scores, counts):
        if k >= len(s):
            kept.append(torch.ones(len(s), dtype=torch.bool))
            continue
        kw: dict[str, Any] = {"scheme": scheme, "power": power, "generator": generator} if mode == "sample" else {}
        kept.append(select(s, k / len(s), mode=mode, **kw))  # type: ignore[arg-type]
    return kept


def _fraction_for(net, graph, groups, choose, example, target: float, keep_by: str) -> float:
    """The per-layer kept fraction whose pruned network has ``target`` of the dense params / MACs."""
    import torch_pruning as tp

    dense = tp.utils.count_ops_and_params(net, example)
    want = target * (dense[1] if keep_by == "params" else dense[0])

    def measure(fraction: float) -> float:
        trial = copy.deepcopy(net)
        trial_graph = tp.DependencyGraph().build_dependency(trial, example_inputs=example)
        _remove_units(trial_graph, groups, choose(fraction), dict(zip(net.modules(), trial.modules())))
        macs, params = tp.utils.count_ops_and_params(trial, example)
        return params if keep_by == "params" else macs

    lo, hi = 0.0, 1.0
    check(measure(1e-9) <= want, f"keep={target:g} of the {keep_by} is below what one unit per layer costs; "
                                 "raise keep")
    for _ in range(20):  # the kept count per layer is a step function of the fraction: 20 halvings suffice
        mid = (lo + hi) / 2
        if measure(mid) <= want:
            lo = mid
        else:
            hi = mid
    return lo if lo > 0 else 1e-9


def _rescale(groups, scores: list[Tensor], kept: list[Tensor], power: float) -> None:
    """Multiply each kept unit's outgoing weights by ``1 / pi_i``, its (Poisson) inclusion probability."""
    import torch_pruning as tp

    from sketchprune.sampling import inclusion_probabilities

    for g, s, k in zip(groups, scores, kept):
        w = s.double().clamp_min(0) ** power if power else torch.ones_like(s, dtype=torch.float64)
        pi = inclusion_probabilities([w], int(k.sum()))(w).clamp_min(1e-12)
        with torch.no_grad():
            for i, (dep, idxs) in enumerate(g):
                layer = dep.target.module
                if dep.handler not in (tp.prune_conv_in_channels, tp.prune_linear_in_channels):
                    continue
                factor = (1.0 / pi)[torch.tensor(g[i].root_idxs)].to(layer.weight.dtype)
                layer.weight[:, list(idxs)] *= factor.view(1, -1, *([1] * (layer.weight.dim() - 2)))


# ---- helpers ------------------------------------------------------------------------------------------

def _remove_units(graph, groups, kept: list[Tensor], modules: dict[nn.Module, nn.Module] | None = None) -> None:
    """Remove the units not ``kept`` of each group from the network of ``graph`` (``modules`` maps the
    groups' layers to that network's when it is a copy)."""
    for group, k in zip(groups, kept):
        drop = [i for i in range(len(k)) if not k[i]]
        if drop:
            root = group[0].dep.target.module
            graph.get_pruning_group(modules[root] if modules else root, group[0].dep.handler, idxs=drop).prune()


def _channel_sum(t: Tensor) -> Tensor:
    """``t`` summed over the batch and positions, in float64: one value per feature / channel (dim 1)."""
    return t.double().sum([0, *range(2, t.dim())])


def _output_layers(net: nn.Module, example: Tensor) -> list[nn.Module]:
    """The Linear/Conv layers run last in the forward (whose units are the network's outputs)."""
    order: list[nn.Module] = []
    with forward_hooks(_layers(net), lambda m, i, o: order.append(m)), torch.no_grad():
        net(example)
    check(bool(order), "the model has no Linear/Conv layer to prune")
    return [order[-1]]


def _layer_macs(model: nn.Module, example: Tensor, per_module: bool = False) -> dict:
    """Multiply-accumulates of each Linear/Conv layer on ``example``, by parameter name (``.weight``)
    or by module."""
    macs: dict[Any, float] = {}

    def count(module, inputs, output) -> None:
        w = module.weight
        positions = output[0, 0].numel() if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)) else 1
        macs[module] = float(w.numel() * positions)

    with forward_hooks(_layers(model), count), torch.no_grad():
        model(example)
    if per_module:
        return defaultdict(float, macs)
    names = {m: n for n, m in model.named_modules()}
    return {f"{names[m]}.weight" if names[m] else "weight": v for m, v in macs.items()}


def _layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, LAYERS)]


def _translate(model: nn.Module, net: nn.Module, modules: Iterable[nn.Module]) -> list[nn.Module]:
    """The copies in ``net`` of ``modules`` of ``model``."""
    pairs = dict(zip(map(id, model.modules()), net.modules()))
    out = []
    for m in modules:
        if id(m) not in pairs:
            raise SketchpruneError(f"exclude holds a module that is not part of the model ({type(m).__name__})")
        out.append(pairs[id(m)])
    return out


__all__ = ["KEEP_BY", "UNIT_METHODS", "costs", "prune_units"]
