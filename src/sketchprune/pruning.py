"""``prune(model, method, density, ...)``: pruning at initialization for any ``nn.Module``.

Flow of one call: pick the prunable parameters -> for each round of the schedule, score the
model and select among the surviving weights -> sanity-check options -> Masks. The caller's
model is left as it was: multi-round methods (and SynFlow) score a deep copy whose dropped
weights are zeroed between rounds; one-round methods score the model itself and restore its
flags, gradients, modes and buffers afterwards (no copy of the weights).
"""

from __future__ import annotations

import contextlib
import copy
import fnmatch
import math
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from sketchprune import scorers, seeding
from sketchprune.errors import SketchpruneError, check, check_density
from sketchprune.masks import Masks
from sketchprune.selection import budget, select

WEIGHT_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
NORM_LAYERS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.LayerNorm, nn.GroupNorm)
DEFAULT_ITERATIONS = {"synflow": 100, "iterative_snip": 10}
SCHEDULES = ("exponential", "linear")
SCOPES = ("global", "layer", "erk")


class LayerCollapseWarning(UserWarning):
    """A layer was pruned to nothing: the network is cut there."""


def prunable_parameters(
    model: nn.Module, *, include_bias: bool = False, include_norm: bool = False, exclude: Sequence[str] = ()
) -> dict[str, nn.Parameter]:
    """Name -> parameter for the weights of Linear/Conv layers (plus biases / norm weights by option).

    ``exclude`` holds glob patterns on parameter names, e.g. ``("*shortcut*", "fc.*")``.
    """
    out: dict[str, nn.Parameter] = {}
    for mname, m in model.named_modules():
        prefix = f"{mname}." if mname else ""
        for pname, p in m.named_parameters(recurse=False):
            name = prefix + pname
            if isinstance(m, WEIGHT_LAYERS):
                take = pname == "weight" or (include_bias and pname == "bias")
            elif isinstance(m, NORM_LAYERS):
                take = include_norm and pname == "weight"
            else:
                take = False
            if take and not any(fnmatch.fnmatchcase(name, pat) for pat in exclude):
                out[name] = p
    return out


def round_densities(density: float, iterations: int, schedule: str) -> list[float]:
    """Density after each of ``iterations`` rounds, ending at ``density``."""
    check(schedule in SCHEDULES, f"unknown schedule {schedule!r}; use {' or '.join(SCHEDULES)}")
    r = range(1, iterations + 1)
    if schedule == "exponential":
        return [density ** (i / iterations) for i in r]
    return [1 - (1 - density) * i / iterations for i in r]


def erk_densities(shapes: dict[str, Sequence[int]], density: float) -> dict[str, float]:
    """Erdős–Rényi-kernel per-layer densities (Evci et al. 2020) with the overall ``density``.

    ``d_l ∝ sum(shape_l) / prod(shape_l)``, scaled to hit the budget; layers that would exceed 1
    are made dense and the rest re-scaled.
    """
    sizes = {n: math.prod(s) for n, s in shapes.items()}
    raw = {n: sum(s) / math.prod(s) for n, s in shapes.items()}
    total = sum(sizes.values())
    dense: set[str] = set()
    while True:
        budget_left = density * total - sum(sizes[n] for n in dense)
        free = [n for n in shapes if n not in dense]
        eps = budget_left / sum(raw[n] * sizes[n] for n in free)
        over = [n for n in free if eps * raw[n] > 1]
        if not over:
            return {n: 1.0 if n in dense else eps * raw[n] for n in shapes}
        dense.update(over)


@dataclass
class PruneInfo:
    """What happened in a ``prune`` call (kept in ``Masks.meta``)."""

    method: str
    density: float
    mode: str
    scope: str
    iterations: int
    schedule: str
    round_densities: list[float]
    collapsed: list[str]


def _batches(data: Any) -> list[tuple[Tensor, Tensor]] | None:
    if data is None:
        return None
    out = []
    for item in data:
        check(isinstance(item, (tuple, list)) and len(item) >= 2,
              "data must yield (inputs, targets) batches, e.g. a DataLoader or [(x, y)]")
        out.append((item[0], item[1]))
    return out


def prune(
    model: nn.Module,
    method: str,
    density: float,
    *,
    mode: str = "topk",
    scope: str = "global",
    iterations: int | None = None,
    schedule: str = "exponential",
    data: Iterable | None = None,
    seed: int = 0,
    **options: Any,
) -> Masks:
    """Masks keeping a ``density`` fraction of ``model``'s prunable weights, chosen by ``method``.

    Options: ``scheme`` / ``power`` (sampling), ``sample_rounds`` ("all" or "last"),
    ``signed_map`` (for grasp with mode="sample"), ``include_bias``, ``include_norm``,
    ``exclude`` (glob patterns), ``shuffle`` / ``invert`` (sanity checks), ``on_collapse``
    ("warn" or "error"), ``input_shape`` (data-free scorers), ``train_mode`` (score in train
    mode; default eval), and scorer options (``grasp_temperature``, ``grasp_chunk``, ``ntk_samples``,
    ``synflow_dtype``).
    The model's weights, ``requires_grad`` flags, buffers and train/eval mode are left unchanged.
    """
    known = {"scheme", "power", "sample_rounds", "signed_map", "include_bias", "include_norm", "exclude",
             "shuffle", "invert", "on_collapse", "input_shape", "train_mode", "grasp_temperature",
             "grasp_chunk", "ntk_samples", "ntk_chunk", "sketch_samples", "synflow_dtype"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise SketchpruneError(f"unknown prune option {unknown[0]!r}; known options: {', '.join(sorted(known))}")
    if method not in scorers.SCORERS:
        raise SketchpruneError(f"unknown method {method!r}; known methods: {', '.join(sorted(scorers.SCORERS))}")
    check(scope in SCOPES, f"unknown scope {scope!r}; use one of {', '.join(SCOPES)}")
    check_density(density)
    iterations = DEFAULT_ITERATIONS.get(method, 1) if iterations is None else iterations
    check(isinstance(iterations, int) and iterations >= 1, f"iterations must be an integer >= 1, got {iterations!r}")
    on_collapse = options.get("on_collapse", "warn")
    check(on_collapse in ("warn", "error"), "on_collapse must be 'warn' or 'error'")
    sample_rounds = options.get("sample_rounds", "all")
    check(sample_rounds in ("all", "last"), "sample_rounds must be 'all' or 'last'")
    batches = _batches(data)
    if method in scorers.NEEDS_DATA and not batches:
        raise scorers.needs_data(method)

    def find(m: nn.Module) -> dict[str, nn.Parameter]:
        return prunable_parameters(m, include_bias=options.get("include_bias", False),
                                   include_norm=options.get("include_norm", False),
                                   exclude=tuple(options.get("exclude", ())))

    params = find(model)
    check(bool(params), "the model has nothing to prune (no Linear/Conv weights after exclusions); "
          "check exclude= or pass include_norm=True / include_bias=True")
    total = sum(p.numel() for p in params.values())
    check(budget(density, total) >= 1,
          f"density {density:g} keeps fewer than one of {total} prunable weights; use a density >= {1 / total:.3g}")
    device = next(iter(params.values())).device
    generator = seeding.generator(seed, "prune")  # never the stream that initialized the model
    opts = dict(options)
    if "input_shape" not in opts and batches:
        opts["input_shape"] = tuple(batches[0][0].shape[1:])

    dens_schedule = round_densities(density, iterations, schedule)
    # rounds zero the dropped weights, and synflow makes its model absolute (and float64): those
    # score a copy; one-round methods score the model itself, which is restored afterwards
    copied = method == "synflow" or iterations > 1
    round_model = copy.deepcopy(model) if copied else model
    round_params = find(round_model) if copied else params
    alive: dict[str, Tensor | None] = {n: None for n in params}  # flat survivor indices; None = all
    with scoring_state(round_model, train=bool(options.get("train_mode", False)), restore=not copied):
        ctx = scorers.ScoreContext(round_model, round_params, batches, generator, device, opts)
        for r, d in enumerate(dens_schedule):
            scores = scorers.SCORERS[method](ctx)
            survivors = {n: s.reshape(-1) if alive[n] is None else s.reshape(-1).index_select(0, alive[n])
                         for n, s in scores.items()}
            last = r == len(dens_schedule) - 1
            round_mode = mode if (last or sample_rounds == "all") else "topk"
            keep = _select_round(survivors, params, d, round_mode, scope, method, generator, opts, total)
            if last:
                break
            with torch.no_grad():  # masks only shrink: zero the weights dropped this round, in place
                for n, p in round_params.items():
                    idx, k = alive[n], keep[n]
                    drop = torch.nonzero(~k).squeeze(1)  # few: a round drops a small share
                    if idx is None:
                        _zero_flat(p, drop)
                        alive[n] = torch.nonzero(k).squeeze(1)
                    else:  # index_select / masked_select: faster than tensor indexing
                        _zero_flat(p, idx.index_select(0, drop))
                        alive[n] = idx.masked_select(k)
    masks = {}
    for n, p in params.items():
        if alive[n] is None:
            masks[n] = keep[n].view(p.shape)
            continue
        m = torch.zeros(p.numel(), dtype=torch.bool, device=p.device)
        m[alive[n].masked_select(keep[n])] = True
        masks[n] = m.view(p.shape)

    if options.get("shuffle"):
        masks = shuffle_within_layers(masks, generator)
    result = Masks({n: m.cpu() for n, m in masks.items()})
    collapsed = result.collapsed()
    result.meta = PruneInfo(method, density, mode, scope, iterations, schedule, dens_schedule, collapsed).__dict__
    if collapsed:
        msg = f"layer collapse: {len(collapsed)} layer(s) pruned to nothing ({', '.join(collapsed[:3])})"
        if on_collapse == "error":
            raise SketchpruneError(msg + "; raise the density, use scope='layer' or 'erk', or mode='sample'")
        warnings.warn(msg, LayerCollapseWarning, stacklevel=2)
    return result


@contextlib.contextmanager
def scoring_state(model: nn.Module, train: bool, restore: bool) -> Iterator[None]:
    """Make every parameter of ``model`` require grad, with no gradient, and set its mode for scoring.

    With ``restore``, what scoring may change is put back afterwards, even on error: each
    parameter's ``requires_grad`` and ``.grad``, each module's mode, and the buffers' values.
    """
    saved = None
    if restore:
        saved = ([(p, p.requires_grad, p.grad) for p in model.parameters()],
                 [(m, m.training) for m in model.modules()],
                 [(b, b.clone()) for b in model.buffers()])
    for p in model.parameters():
        p.requires_grad_(True)
        p.grad = None  # scorers start from no gradient and never accumulate into the caller's
    model.train(train)
    try:
        yield
    finally:
        if saved is not None:
            params, modes, buffers = saved
            with torch.no_grad():
                for b, value in buffers:
                    b.copy_(value)
            for m, training in modes:
                m.training = training
            for p, requires_grad, grad in params:
                p.requires_grad_(requires_grad)
                p.grad = grad


def _select_round(survivors, params, density, mode, scope, method, generator, opts, total) -> dict[str, Tensor]:
    """Select among the surviving weights (flat scores) so that ``density`` of *all* weights stays.

    Returns one flat boolean per tensor, aligned with its survivors.
    """
    invert = bool(opts.get("invert"))
    log_scores = False
    scores = survivors
    if mode == "sample":
        if method in scorers.SIGNED:
            scores, log_scores = scorers.nonnegative(scores, opts.get("signed_map", "positive"))
        if invert:  # keep the lowest-scoring: reversed weights, zero scores get the largest
            if log_scores:
                scores = {n: -s for n, s in scores.items()}
            else:
                hi = max(float(s.max()) for s in scores.values() if s.numel())
                scores = {n: hi - s for n, s in scores.items()}
    elif invert:
        scores = {n: -s for n, s in scores.items()}
    kw: dict[str, Any] = {"mode": mode, "generator": generator, "log_scores": log_scores}
    if mode == "sample":
        kw.update(scheme=opts.get("scheme", "exact"), power=float(opts.get("power", 1.0)))
    counts = {n: s.numel() for n, s in scores.items()}  # survivors per tensor
    live = {n: s for n, s in scores.items() if counts[n]}  # collapsed layers have nothing to select
    if scope == "global":
        sel = select(live, min(1.0, budget(density, total) / sum(counts.values())), **kw)
    else:
        dens = (erk_densities({n: tuple(p.shape) for n, p in params.items()}, density) if scope == "erk"
                else {n: density for n in params})
        # a layer keeps at least one weight so that every layer stays connected
        per_layer = {n: max(1, budget(dens[n], params[n].numel())) for n in live}
        sel = select(live, {n: min(1.0, per_layer[n] / counts[n]) for n in live}, scope="layer", **kw)
    return {n: sel[n] if n in sel else torch.zeros(0, dtype=torch.bool, device=s.device) for n, s in scores.items()}


def _zero_flat(p: Tensor, idx: Tensor) -> None:
    """Set the entries of ``p`` at flat (row-major) positions ``idx`` to zero, in place."""
    if p.is_contiguous():
        p.view(-1).index_fill_(0, idx, 0)
    else:
        p.copy_(p.reshape(-1).index_fill(0, idx, 0).view(p.shape))


def shuffle_within_layers(masks: dict[str, Tensor], generator: torch.Generator) -> dict[str, Tensor]:
    """Sanity check (Su et al. 2020): move each layer's kept positions at random, keeping its count."""
    out = {}
    for n, m in masks.items():
        perm = torch.randperm(m.numel(), generator=generator).to(m.device)
        out[n] = m.reshape(-1)[perm].view_as(m)
    return out


def reinitialize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Sanity check: re-initialize every module with ``reset_parameters`` (seeded), in place."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for m in model.modules():
            if hasattr(m, "reset_parameters") and m is not model:
                m.reset_parameters()
    return model
