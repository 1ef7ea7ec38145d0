"""PHEW (Patil & Dovrolis, ICML 2021): paths with higher edge weights, a data-free mask made of walks.

The mask is built directly: random walks from input units to output units (forward walks) and
from output units back to input units (backward walks), alternating, each hop choosing the next
unit with probability proportional to the magnitude of the connecting weights (a convolution's
kernel L1 norm) and then a kernel position proportional to ``|w|``. Every weight on a walk is kept,
until the budget is met. Units are channels for convolutions and features for Linear layers; the
walks follow the network's own graph (traced with ``torch.fx``), through batch norm, activations,
pooling, flattening and residual additions (at a fork, a walk takes one branch at random).

Checked against ShreyasMalakarjunPatil/PHEW (``Prune/phew_utils.py``, ``phew_masks``, commit
c4a0d40): the per-unit probabilities (``generate_probability``), the kernel probabilities, the
alternation of forward and backward walks and the round-robin choice of each walk's first unit.
Where we depart: the reference overshoots the budget by up to one walk; ours keeps exactly the
budget: it stops before a walk would overshoot, and keeps the last few weights as one-hop walks
(drawn proportional to ``|w|``) that join a unit reached from the input to a unit reaching the
output, so no unit is left a dead end. It finds layers by parameter order and takes a ResNet shortcut by
a fixed offset of 3 tensors; ours follows the traced graph, so any chain or residual network of
Linear / Conv layers works. Sampling: the walks are sampled already, with probability
proportional to weight magnitude; ``mode="sample"`` is refused.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sketchprune.layers import ATTENTION_LAYERS, WEIGHT_LAYERS
from sketchprune.errors import SketchpruneError, check
from sketchprune.methods.context import Context
from sketchprune.methods.registry import register

PASS_MODULES = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.ReLU, nn.LeakyReLU, nn.ReLU6,
                nn.GELU, nn.SiLU, nn.ELU, nn.Tanh, nn.Sigmoid, nn.Hardswish, nn.modules.pooling._MaxPoolNd,
                nn.modules.pooling._AvgPoolNd, nn.modules.pooling._AdaptiveAvgPoolNd,
                nn.modules.pooling._AdaptiveMaxPoolNd, nn.modules.dropout._DropoutNd, nn.Identity, nn.Flatten,
                nn.Unflatten)
PASS_FUNCTIONS = {operator.add, operator.iadd, operator.mul, operator.imul, operator.sub, torch.add, torch.mul,
                  torch.relu, torch.flatten, torch.sigmoid, torch.tanh, F.relu, F.leaky_relu, F.gelu, F.dropout,
                  F.avg_pool1d, F.avg_pool2d, F.max_pool1d, F.max_pool2d, F.adaptive_avg_pool1d,
                  F.adaptive_avg_pool2d, F.adaptive_max_pool2d, F.batch_norm}
PASS_METHODS = {"relu", "relu_", "view", "reshape", "flatten", "contiguous", "clone", "mean", "add", "add_", "mul",
                "sigmoid", "tanh"}
SHAPE_ONLY = {"size", "dim", "shape"}


@dataclass
class Layer:
    """One prunable Linear/Conv layer of the walk graph; units are its input and output channels."""

    name: str
    weight: Tensor  # |W| as (out, in, kernel positions), float64
    succ: list[tuple[int | None, int]] = field(default_factory=list)  # (layer or None = the output, flatten factor)
    pred: list[tuple[int | None, int]] = field(default_factory=list)  # (layer or None = the input, flatten factor)

    def __post_init__(self) -> None:
        a = self.weight.sum(2)  # (out, in): the L1 norm of each unit-to-unit kernel
        self.forward_p = _rows(a.t())  # from input unit u: next unit ~ a[:, u]
        self.backward_p = _rows(a)  # from output unit o: previous unit ~ a[o, :]
        self.kernel_p = _rows(self.weight.reshape(-1, self.weight.shape[2]))  # (out * in, K)


def _rows(a: Tensor) -> Tensor:
    """Rows normalized to sum one (a zero row becomes uniform)."""
    s = a.sum(1, keepdim=True)
    return torch.where(s > 0, a / torch.where(s > 0, s, torch.ones_like(s)), torch.full_like(a, 1.0 / a.shape[1]))


@register("phew", kind="mask",
          description="PHEW (Patil & Dovrolis, ICML 2021): biased random walks from input to output, each hop "
                      "with probability proportional to the weight magnitude, until the budget is met; data-free")
def phew(ctx: Context) -> dict[str, Tensor]:
    """Masks made of input-to-output walks (see the module docstring)."""
    layers = walk_graph(ctx.model, list(ctx.params))
    masks = [torch.zeros(L.weight.shape, dtype=torch.bool) for L in layers]
    g = ctx.generator
    kept, walks, new_per_walk, one_by_one = 0, 0, float(len(layers)), False
    starts = {"forward": 0, "backward": 0}
    while kept < ctx.budget:
        batch = 1 if one_by_one else max(1, min(4096, int((ctx.budget - kept) / (2 * new_per_walk))))
        before = [m.clone() for m in masks]
        for direction in ("forward", "backward") if batch > 1 else (("forward", "backward")[walks % 2],):
            _walk(layers, masks, direction, max(1, batch // 2), starts, g)
        walks += batch
        now = sum(int(m.sum()) for m in masks)
        if now > ctx.budget:  # this batch would overshoot: undo it
            masks = before
            if one_by_one:
                break
            one_by_one = True
            continue
        new_per_walk = max(1.0, 0.5 * new_per_walk + 0.5 * (now - kept) / batch)
        kept = now
    if kept < ctx.budget:
        _bridges(layers, masks, ctx.budget - kept, g)
    device = next(iter(ctx.params.values())).device
    return {L.name: m.reshape(ctx.params[L.name].shape).to(device) for L, m in zip(layers, masks)}


def _walk(layers: list[Layer], masks: list[Tensor], direction: str, n: int, starts: dict[str, int],
          g: torch.Generator) -> None:
    """``n`` walks in ``direction``, all advanced layer by layer in (reverse) topological order."""
    forward = direction == "forward"
    ends = [i for i, L in enumerate(layers) if any(t is None for t, _ in (L.pred if forward else L.succ))]
    pending: dict[int, list[Tensor]] = {}
    first = torch.randint(len(ends), (n,), generator=g)
    for e, layer_index in enumerate(ends):
        count = int((first == e).sum())
        if count:
            L = layers[layer_index]
            units = L.weight.shape[1] if forward else L.weight.shape[0]
            start = starts[direction]  # round robin over the end layers' units, as the reference
            pending.setdefault(layer_index, []).append((torch.arange(count) + start) % units)
            starts[direction] = start + count
    order = range(len(layers)) if forward else range(len(layers) - 1, -1, -1)
    for i in order:
        if i not in pending:
            continue
        L, here = layers[i], torch.cat(pending.pop(i))
        if forward:  # here: input units of layer i
            there = torch.multinomial(L.forward_p[here], 1, generator=g).squeeze(1)
            out, inp = there, here
        else:  # here: output units of layer i
            there = torch.multinomial(L.backward_p[here], 1, generator=g).squeeze(1)
            out, inp = here, there
        k = torch.multinomial(L.kernel_p[out * L.weight.shape[1] + inp], 1, generator=g).squeeze(1)
        masks[i][out, inp, k] = True
        nexts = L.succ if forward else L.pred
        pick = torch.randint(len(nexts), (len(there),), generator=g)
        for j, (target, factor) in enumerate(nexts):
            chosen = there[pick == j]
            if target is None or not len(chosen):
                continue  # reached the output (or the input): the walk ends
            if forward:  # an output channel feeds `factor` flattened features of the next layer
                chosen = chosen * factor + torch.randint(factor, (len(chosen),), generator=g)
            else:
                chosen = torch.div(chosen, factor, rounding_mode="floor")
            pending.setdefault(target, []).append(chosen)


def _bridges(layers: list[Layer], masks: list[Tensor], count: int, g: torch.Generator) -> None:
    """Keep ``count`` more weights, drawn with probability proportional to ``|w|`` among the weights
    that join a unit already reached from the input to a unit already reaching the output: each
    one is a one-hop walk between existing paths, so no unit becomes a dead end and the budget is
    met exactly (a whole walk would overshoot it)."""
    from sketchprune.selection import select

    scores = {}
    for i, (L, m) in enumerate(zip(layers, masks)):
        has_in = _reached(layers, masks, i, downstream=False)  # input units with a path from the input
        has_out = _reached(layers, masks, i, downstream=True)  # output units with a path to the output
        ok = has_out.view(-1, 1, 1) & has_in.view(1, -1, 1) & ~m
        scores[str(i)] = torch.where(ok, L.weight, torch.zeros_like(L.weight))
    extra = select(scores, count / sum(s.numel() for s in scores.values()), mode="sample", generator=g)
    for i, m in enumerate(masks):
        m |= extra[str(i)]  # type: ignore[index]


def _reached(layers: list[Layer], masks: list[Tensor], i: int, downstream: bool) -> Tensor:
    """Output units of layer ``i`` that kept weights carry to the output (``downstream``), or its input
    units that kept weights reach from the input."""
    L = layers[i]
    units = L.weight.shape[0] if downstream else L.weight.shape[1]
    out = torch.zeros(units, dtype=torch.bool)
    for target, factor in (L.succ if downstream else L.pred):
        if target is None:
            return torch.ones(units, dtype=torch.bool)
        if downstream:  # a successor input feature f carries unit f // factor
            used = masks[target].any(2).any(0)
            out |= used.view(units, factor).any(1)
        else:  # a predecessor's output unit u feeds features u * factor ... u * factor + factor - 1
            used = masks[target].any(2).any(1)
            out |= used.repeat_interleave(factor)
    return out


def walk_graph(model: nn.Module, names: list[str]) -> list[Layer]:
    """The prunable layers of ``model`` in topological order, with the layers (or the network's
    input / output) each one's units connect to, from the ``torch.fx`` graph."""
    import torch.fx

    attention = next((f"{n} ({type(m).__name__})" for n, m in model.named_modules() if isinstance(m, ATTENTION_LAYERS)),
                     None)
    check(attention is None, f"phew walks units along chains and residual networks of Linear/Conv layers; attention "
                             f"({attention}) mixes the positions of a sequence, and a walk cannot follow a unit "
                             "through it: use another method")
    try:
        traced = torch.fx.symbolic_trace(model)
    except Exception as e:
        raise SketchpruneError(f"phew follows units through the model's graph, and torch.fx cannot trace this model "
                               f"({type(e).__name__}); use another method") from None
    modules = dict(traced.named_modules())
    index: dict[torch.fx.Node, int] = {}
    layers: list[Layer] = []
    wanted = set(names)
    for node in traced.graph.nodes:
        if node.op == "call_module" and isinstance(modules[node.target], WEIGHT_LAYERS) and f"{node.target}.weight" in wanted:
            m = modules[node.target]
            check(getattr(m, "groups", 1) == 1, f"phew follows channels; {node.target} is a grouped convolution")
            check(f"{node.target}.weight" not in {L.name for L in layers},
                  f"phew: layer {node.target} is used twice in the forward; use another method")
            w = m.weight.detach().abs().double().cpu()
            index[node] = len(layers)
            layers.append(Layer(f"{node.target}.weight", w.reshape(w.shape[0], w.shape[1], -1)))
    missing = sorted(wanted - {L.name for L in layers})
    if missing:
        raise SketchpruneError(_not_walked(model, missing[0], modules))
    for node, i in index.items():
        for target, factor in _reach(node, index, modules, layers, downstream=True):
            layers[i].succ.append((target, factor))
            if target is not None:
                layers[target].pred.append((i, factor))
        if any(t is None for t in _reach_inputs(node, index, modules)):
            layers[i].pred.append((None, 1))
    for L in layers:
        check(bool(L.pred) and bool(L.succ), f"phew: {L.name} is not on a path from the input to the output")
    check(any(None in [t for t, _ in L.pred] for L in layers) and any(None in [t for t, _ in L.succ] for L in layers),
          "phew found no path from the input to the output through the prunable layers")
    return layers


def _not_walked(model: nn.Module, name: str, traced_modules: dict) -> str:
    """Why the prunable tensor ``name`` is not a layer of the walk graph."""
    module_name, _, attr = name.rpartition(".")
    owner = model.get_submodule(module_name)
    if isinstance(owner, WEIGHT_LAYERS) and attr == "weight":
        inside = next((f"{n} ({type(m).__name__})" for n, m in traced_modules.items()
                       if n and module_name.startswith(f"{n}.")), None)
        where = f"it runs inside {inside}, which torch.fx traces as one call" if inside else "it is never called"
        return f"phew found no call of layer {module_name} in the model's traced graph ({where}); use another method"
    return (f"phew walks the weights of Linear/Conv layers; {name} is the {attr} of a {type(owner).__name__} "
            "(drop include_bias, include_norm or include=)")


def _passes(node, modules) -> bool:
    if node.op == "call_module":
        return isinstance(modules[node.target], PASS_MODULES)
    if node.op == "call_function":
        return node.target in PASS_FUNCTIONS
    if node.op == "call_method":
        return node.target in PASS_METHODS
    return False


def _reach(node, index, modules, layers, downstream: bool) -> list[tuple[int | None, int]]:
    """The layers (None: the output) that ``node``'s output units reach, with the flatten factor."""
    found: list[tuple[int | None, int]] = []
    seen: set = set()
    stack = list(node.users)
    source = layers[index[node]]
    while stack:
        n = stack.pop()
        if n in seen:
            continue
        seen.add(n)
        if n in index:
            target = layers[index[n]]
            units_in, units_out = target.weight.shape[1], source.weight.shape[0]
            check(units_in % units_out == 0,
                  f"phew: {source.name} has {units_out} output units and {target.name} {units_in} inputs; "
                  "it follows channels only through flattening")
            found.append((index[n], units_in // units_out))
        elif n.op == "output":
            found.append((None, 1))
        elif n.op in ("call_method", "call_function") and n.target in SHAPE_ONLY | {getattr}:
            continue  # a shape query, not a data path
        elif _passes(n, modules):
            stack.extend(n.users)
        else:
            raise SketchpruneError(f"phew cannot follow units through {n.op} {n.target} of the model; it supports "
                                   "chains and residual networks of Linear/Conv layers")
    return list(dict.fromkeys(found))


def _reach_inputs(node, index, modules) -> list[int | None]:
    """Whether the network's input reaches ``node`` without passing another prunable layer (None if so)."""
    stack, seen, found = list(node.all_input_nodes), set(), []
    while stack:
        n = stack.pop()
        if n in seen or n in index:
            continue
        seen.add(n)
        if n.op == "placeholder":
            found.append(None)
            continue
        stack.extend(n.all_input_nodes)
    return found
