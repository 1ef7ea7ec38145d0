"""``prune_units``: structured pruning at initialization (SPEC 3.8): remove whole units, get a smaller
dense network.

A method's unit form (``register_units``: ``sketch``, ``l1``, ``random``, ``3sp``, ``synflow``;
``sketchprune.methods.names("units")``) scores the units of every prunable group; this module keeps
the top-k or an exact-k sample of them and removes the rest. Which layers must lose the same
channels (batch norm, residual additions, flatten into Linear) comes from Torch-Pruning's
dependency graph (``torch-pruning``, VainF/Torch-Pruning); the scores and the selection are ours.

Budgets: ``keep`` is the fraction of each layer's units kept, or with ``keep_by="params"`` /
``"macs"`` the fraction of the network's parameters / multiply-accumulates (Torch-Pruning's
counter), met by one kept fraction for every layer (found by bisection). The output layer keeps
all its units. ``rescale=True`` multiplies each sampled unit's outgoing weights by ``1 / pi_i``
(its inclusion probability), the sketch's unbiased estimate of the next layer's input at
initialization; training then starts from those larger weights.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import Tensor, nn

from sketchprune import methods, seeding
from sketchprune.errors import SketchpruneError, check
from sketchprune.hooks import forward_hooks
from sketchprune.layers import ATTENTION_LAYERS, EMBEDDING_LAYERS, WEIGHT_LAYERS, weight_layers
from sketchprune.pruning.params import as_batches, input_shape_of
from sketchprune.pruning.state import math_attention
from sketchprune.inclusion import inclusion_probabilities
from sketchprune.selection import budget, select
from sketchprune.unit_groups import is_input_side

KEEP_BY = ("units", "params", "macs")


def prune_units(model: nn.Module, method: str, keep: float, *, mode: str = "topk", data: Iterable | None = None,
                seed: int = 0, keep_by: str = "units", scheme: str = "exact", power: float = 1.0,
                rescale: bool = False, input_shape: tuple[int, ...] | None = None,
                exclude: Iterable[nn.Module] = (), trainer: Any = None) -> nn.Module:
    """A new, smaller model with the same inputs and outputs, in which only whole units are removed.

    ``keep``: the kept fraction of units per layer (or of parameters / MACs, ``keep_by``); ``mode``
    "topk" or "sample" (exact-k ``∝ score^power`` by default); ``data``: (inputs, targets) batches
    (``3sp`` needs them; ``sketch`` uses them when given); ``exclude``: modules never pruned;
    ``trainer``: our training loop, for a unit method that trains (``early_bird``). The
    model given is left as it was. Attention layers keep their width and heads (the feed-forward
    units of a transformer are removed); a model with an Embedding is refused.
    """
    check(isinstance(method, str), f"method must be a name, got {method!r}; see sketchprune.methods.names('units')")
    spec = methods.get(method)
    spec.check_form("units")
    check(keep_by in KEEP_BY, f"unknown keep_by {keep_by!r}; use one of {', '.join(KEEP_BY)}")
    check(isinstance(keep, (int, float)) and not isinstance(keep, bool) and 0 < keep <= 1,
          f"keep must be a fraction in (0, 1], got {keep!r}")
    check(mode in ("topk", "sample"), f"unknown mode {mode!r} for units; use topk or sample")
    check(not rescale or mode == "sample", "rescale applies to sampled units (mode='sample')")
    batches = as_batches(data)
    if spec.needs_data and not batches:
        raise methods.needs_data(method, units=True)
    if input_shape is None:
        input_shape = tuple(batches[0][0].shape[1:]) if batches else input_shape_of(model)
    check(input_shape is not None, "prune_units needs the input shape: pass data or input_shape=(C, H, W)")
    embedding = next((n for n, m in model.named_modules() if isinstance(m, EMBEDDING_LAYERS)), None)
    check(embedding is None, f"prune_units cannot remove units of a model with an Embedding ({embedding!r}: its "
                             "table's columns are tied to the width of every layer that reads them, which it does not "
                             "follow); prune its weights with prune() instead")
    with math_attention():  # no fused attention: every Linear runs as a module, so its hooks see it
        return _prune_units(model, spec, keep, mode, batches, seed, keep_by, scheme, power, rescale,
                            tuple(input_shape), exclude, trainer)


def _prune_units(model: nn.Module, spec: methods.Method, keep: float, mode: str, batches: Any, seed: int,
                 keep_by: str, scheme: str, power: float, rescale: bool, input_shape: tuple[int, ...],
                 exclude: Iterable[nn.Module], trainer: Any = None) -> nn.Module:
    """:func:`prune_units` once its arguments are checked."""
    import torch_pruning as tp

    method = spec.name
    net = copy.deepcopy(model).eval()
    device = next(net.parameters()).device
    example = torch.zeros((1, *input_shape), device=device)
    outputs = _output_layers(net, example)
    with _one_line("Torch-Pruning could not trace which layers share units in this model"):
        graph = tp.DependencyGraph().build_dependency(net, example_inputs=example)
    attention = [m for m in net.modules() if isinstance(m, ATTENTION_LAYERS)]  # heads and width stay whole
    ignored = list(outputs) + attention + [m for m in net.modules()
                                           if any(m is e for e in _translate(model, net, exclude))]
    groups = list(graph.get_all_groups(ignored_layers=ignored, root_module_types=WEIGHT_LAYERS))
    check(bool(groups), "the model has no units prune_units can remove (its only layers are the output layer"
                        f"{' and the width of its attention' if attention else ''})")
    generator = seeding.generator(seed, "prune-units")
    with _one_line(f"the unit form of {method!r} failed on this model (which runs on inputs of shape "
                   f"{input_shape}: the method, not the input, does not fit it)", "try l1 or random"):
        scores = spec.units(methods.UnitContext(spec, net, groups, spec.options(), generator,  # type: ignore[misc]
                                                batches, input_shape, keep=keep, trainer=trainer))
    sizes = [len(s) for s in scores]

    def choose(fraction: float) -> list[Tensor]:
        return _choose(scores, [max(1, budget(fraction, n)) for n in sizes], mode, scheme, power,
                       seeding.generator(seed, "prune-units-select"))

    fraction = keep if keep_by == "units" else _fraction_for(net, graph, groups, choose, example, keep, keep_by)
    kept = choose(fraction)
    if rescale:
        _rescale(groups, scores, kept, power)
    with _one_line("Torch-Pruning could not remove the units chosen from this model"):
        _remove_units(graph, groups, kept)
    net.input_shape = tuple(input_shape)
    names = {m: n for n, m in net.named_modules()}
    net.kept_units = {names[g[0].dep.target.module]: (int(k.sum()), len(k)) for g, k in zip(groups, kept)}
    return net


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
    for g, s, k in zip(groups, scores, kept):
        w = s.double().clamp_min(0) ** power if power else torch.ones_like(s, dtype=torch.float64)
        pi = inclusion_probabilities([w], int(k.sum()))(w).clamp_min(1e-12)
        with torch.no_grad():
            for i, (dep, idxs) in enumerate(g):
                layer = dep.target.module
                if not is_input_side(dep):
                    continue
                factor = (1.0 / pi)[torch.tensor(g[i].root_idxs)].to(layer.weight.dtype)
                layer.weight[:, list(idxs)] *= factor.view(1, -1, *([1] * (layer.weight.dim() - 2)))


# ---- helpers ------------------------------------------------------------------------------------------

@contextlib.contextmanager
def _one_line(what: str, fix: str = "prune its weights with prune() instead") -> Iterator[None]:
    """A failure of Torch-Pruning or of a unit method on the model as one line: what failed, the
    error's first line, and the fix (the original exception stays chained)."""
    try:
        yield
    except SketchpruneError:
        raise
    except (RuntimeError, IndexError, ValueError, KeyError, NotImplementedError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise SketchpruneError(f"prune_units: {what} ({type(e).__name__}: {first[:200]}); {fix}") from e

def _remove_units(graph, groups, kept: list[Tensor], modules: dict[nn.Module, nn.Module] | None = None) -> None:
    """Remove the units not ``kept`` of each group from the network of ``graph`` (``modules`` maps the
    groups' layers to that network's when it is a copy)."""
    for group, k in zip(groups, kept):
        drop = [i for i in range(len(k)) if not k[i]]
        if drop:
            root = group[0].dep.target.module
            graph.get_pruning_group(modules[root] if modules else root, group[0].dep.handler, idxs=drop).prune()


def _output_layers(net: nn.Module, example: Tensor) -> list[nn.Module]:
    """The Linear/Conv layers run last in the forward (whose units are the network's outputs)."""
    order: list[nn.Module] = []
    try:
        with forward_hooks(weight_layers(net), lambda m, i, o: order.append(m)), torch.no_grad():
            net(example)
    except (RuntimeError, ValueError, IndexError, TypeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SketchpruneError(f"prune_units could not run the model on inputs of shape {tuple(example.shape[1:])}: "
                               f"{type(e).__name__}: {first}; pass data or input_shape that fit the model") from e
    check(bool(order), "the model has no Linear/Conv layer to prune")
    return [order[-1]]


def _translate(model: nn.Module, net: nn.Module, modules: Iterable[nn.Module]) -> list[nn.Module]:
    """The copies in ``net`` of ``modules`` of ``model``."""
    pairs = dict(zip(map(id, model.modules()), net.modules()))
    out = []
    for m in modules:
        if id(m) not in pairs:
            raise SketchpruneError(f"exclude holds a module that is not part of the model ({type(m).__name__})")
        out.append(pairs[id(m)])
    return out


__all__ = ["KEEP_BY", "prune_units"]
