"""``prune(model, method, density, ...)``: pruning at initialization for any ``nn.Module``.

Flow of one call: check the settings (:func:`prune_settings`, the one place) -> pick the
prunable parameters -> budgets for every round -> for each round: score, select among the
survivors, drop the rest -> sanity checks -> :class:`Masks`. A *mask* or *train* method
builds the mask itself from the budget instead.

The caller's model is left as it was: multi-round methods, and methods that change the weights
they score (``Method.copies``), work on a deep copy whose dropped weights are zeroed between
rounds; one-round methods score the model itself and restore its flags, gradients, modes and
buffers afterwards (no copy of the weights).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import fnmatch
import math
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from sketchprune import config as cfgmod
from sketchprune import auto, methods, seeding
from sketchprune.config import setting
from sketchprune.errors import SketchpruneError, check, check_density
from sketchprune.masks import Masks
from sketchprune.selection import MODES, SCHEMES, SIGNED_MAPS, budget, nonnegative, select

WEIGHT_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
NORM_LAYERS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.LayerNorm, nn.GroupNorm)
SCHEDULES = ("exponential", "linear")
SCOPES = ("global", "layer", "erk")


class LayerCollapseWarning(UserWarning):
    """A layer was pruned to nothing: the network is cut there."""


class UnprunedWarning(UserWarning):
    """Weight tensors of layers that prune does not know were left dense."""


@dataclass(frozen=True)
class PruneOptions(cfgmod.Settings):
    """How ``prune`` turns a method's scores into masks: the options every method shares."""

    mode: str = setting("topk", "topk keeps the highest scores; sample draws the mask with probabilities from "
                                "the scores, as sketching does (SPEC 3.6); auto samples only where top-k would "
                                "starve a layer, with the largest power that does not (sketchprune.auto).",
                        choices=(*MODES, "auto"))
    scheme: str = setting("exact", "How mode=sample draws: exact keeps exactly k (successive sampling), poisson "
                                   "keeps each weight independently (k on average), iid draws with replacement.",
                          choices=SCHEMES)
    power: float = setting(1.0, "mode=sample keeps weights with probability growing as score^power: 0 is random "
                                "pruning, inf is top-k.")
    scope: str = setting("global", "Budget: global (one over all layers), layer (the same density in each) or erk "
                                   "(Erdos-Renyi-kernel densities per layer).", choices=SCOPES)
    iterations: int = setting(0, "Pruning rounds; 0 = the method's default.")
    schedule: str = setting("exponential", "How the density falls over the rounds.", choices=SCHEDULES)
    sample_rounds: str = setting("all", "With mode=sample: sample in every round, or only in the last (earlier "
                                        "rounds top-k).", choices=("all", "last"))
    signed_map: str = setting("positive", "With mode=sample and a signed method (grasp): how signed scores become "
                                          "sampling weights.", choices=SIGNED_MAPS)
    include_bias: bool = setting(False, "Prune the biases of Linear/Conv layers too.")
    include_norm: bool = setting(False, "Prune the weights of normalization layers too.")
    exclude: tuple[str, ...] = setting((), "Glob patterns of parameter names never pruned, e.g. '*shortcut*,fc.*'.")
    include: tuple[str, ...] = setting((), "Glob patterns of other parameters to prune too, e.g. an Embedding's "
                                           "'emb.weight' or 'attn.in_proj_weight'.")
    shuffle: bool = setting(False, "Sanity check (Su et al. 2020): move each layer's kept positions at random, "
                                   "keeping its count.")
    invert: bool = setting(False, "Sanity check: keep the lowest-scoring weights instead of the highest.")
    on_collapse: str = setting("warn", "When a layer is pruned to nothing.", choices=("warn", "error"))
    train_mode: bool = setting(False, "Score with the model in train mode (batch statistics); default eval mode.")

    def validate(self) -> None:
        check(self.mode in ("sample", "auto") or (self.scheme == "exact" and self.power == 1.0),
              "scheme and power only apply to mode='sample'; drop them or set mode='sample'")
        check(self.mode != "auto" or self.power == 1.0, "mode='auto' chooses the power itself; drop power")
        check(not math.isnan(self.power) and self.power >= 0,
              f"power must be >= 0 (0 = random, inf = top-k), got {self.power}")
        check(self.mode in ("sample", "auto") or self.sample_rounds == "all",
              "sample_rounds only applies to mode='sample' or 'auto'; drop it or set the mode")
        check(isinstance(self.iterations, int) and self.iterations >= 0,
              f"iterations must be an integer >= 1 (0 = the method's default), got {self.iterations!r}")


COMMON_OPTIONS = tuple(f.name for f in dataclasses.fields(PruneOptions))
methods.registry.reserve(list(COMMON_OPTIONS) + ["input_shape"], "prune()")


def prune_settings(method: methods.Method, values: Mapping[str, Any]) -> tuple[PruneOptions, Any]:
    """Check ``values`` (common options and the method's own) for ``method``: the one place where
    prune's settings are validated. Returns ``(PruneOptions, the method's options)``."""
    common = {k: v for k, v in values.items() if k in COMMON_OPTIONS}
    own = {k: v for k, v in values.items() if k not in COMMON_OPTIONS}
    mine = {f.name for f in method.option_fields()}
    unknown = [k for k in own if k not in mine and methods.registry.option_owner(k) is None]
    if unknown:
        valid = ", ".join(sorted(set(COMMON_OPTIONS) | mine | {"input_shape"}))
        raise SketchpruneError(f"unknown prune option {unknown[0]!r} for method {method.name!r}; valid options: {valid}")
    opts = cfgmod.build(PruneOptions, common)
    method_options = method.make_options(own)
    name = method.name
    check(opts.signed_map == "positive" or (method.signed and opts.mode in ("sample", "auto")),
          f"signed_map applies to signed methods with mode='sample'; {name} "
          f"{'is not signed' if not method.signed else 'is not sampled here'}: drop signed_map")
    if method.kind != "score":
        check(opts.mode == "topk" or bool(method.sampling),
              f"method {name!r} builds its mask itself and has no sampled form; use mode='topk'")
        check(opts.scope == "global", f"method {name!r} sets its own per-layer budgets; use scope='global'")
        check(opts.iterations in (0, 1) and opts.schedule == "exponential",
              f"method {name!r} builds its mask in one go; drop iterations and schedule")
        check(not opts.invert, f"invert applies to score methods; {name!r} builds its mask itself")
    return opts, method_options


def prunable_parameters(
    model: nn.Module, *, include_bias: bool = False, include_norm: bool = False, exclude: Sequence[str] = (),
    include: Sequence[str] = (),
) -> dict[str, nn.Parameter]:
    """Name -> parameter for the weights of Linear/Conv layers (plus biases / norm weights by option,
    and any parameter whose name matches a glob of ``include``), minus those matching ``exclude``.

    A parameter shared by several modules is one entry, under its first name. Other weight
    tensors (an Embedding's, MultiheadAttention's ``in_proj_weight``, a raw ``nn.Parameter``) are
    left out with an :class:`UnprunedWarning` that names them.
    """
    first: dict[int, tuple[str, nn.Parameter, nn.Module]] = {}  # each tensor under its first name
    wanted: set[int] = set()
    for mname, m in model.named_modules():
        prefix = f"{mname}." if mname else ""
        for pname, p in m.named_parameters(recurse=False):
            name = prefix + pname
            first.setdefault(id(p), (name, p, m))
            if isinstance(m, WEIGHT_LAYERS):
                take = pname == "weight" or (include_bias and pname == "bias")
            elif isinstance(m, NORM_LAYERS):
                take = include_norm and pname == "weight"
            else:
                take = False
            if take or any(fnmatch.fnmatchcase(name, pat) for pat in include):
                wanted.add(id(p))  # a tensor is prunable if any of its uses is
    out: dict[str, nn.Parameter] = {}
    skipped: list[str] = []
    for key, (name, p, m) in first.items():
        if any(fnmatch.fnmatchcase(name, pat) for pat in exclude):
            continue
        if key in wanted:
            check(not isinstance(p, nn.parameter.UninitializedParameter),
                  f"parameter {name} ({type(m).__name__}) is not initialized yet (a lazy layer); "
                  f"run one forward pass first, or pass exclude=('{name}',)")
            out[name] = p
        elif p.dim() >= 2 and not isinstance(m, NORM_LAYERS):
            skipped.append(f"{name} ({type(m).__name__})")
    if skipped:
        warnings.warn(f"not pruned: {len(skipped)} weight tensor(s) of layers prune does not know: "
                      f"{', '.join(skipped[:4])}{', ...' if len(skipped) > 4 else ''}; prune them with "
                      f"include=('{skipped[0].split(' ')[0]}', ...) or leave them out with exclude=(...)",
                      UnprunedWarning, stacklevel=2)
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


Budget = int | dict[str, int]
"""Weights to keep: one count over all layers (global scope) or one per layer."""


def budgets(params: Mapping[str, Tensor], density: float, scope: str) -> Budget:
    """What ``density`` keeps under ``scope``; a layer budget keeps at least one weight per layer."""
    if scope == "global":
        return budget(density, sum(p.numel() for p in params.values()))
    dens = (erk_densities({n: tuple(p.shape) for n, p in params.items()}, density) if scope == "erk"
            else {n: density for n in params})
    return {n: max(1, budget(dens[n], p.numel())) for n, p in params.items()}


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
    what = "data must yield (inputs, targets) tensor batches, e.g. a DataLoader or [(x, y)]"
    check(isinstance(data, Iterable) and not isinstance(data, (str, bytes, Tensor)), what)
    out = []
    for item in data:
        check(isinstance(item, (tuple, list)) and len(item) >= 2 and all(isinstance(t, Tensor) for t in item[:2]),
              what)
        out.append((item[0], item[1]))
    return out


def input_shape_of(model: nn.Module) -> tuple[int, ...] | None:
    """The shape of one input: what a registry model records, or the width of a first Linear layer."""
    shape = getattr(model, "input_shape", None)
    if shape is not None:
        return tuple(shape)
    first = next((m for m in model.modules() if isinstance(m, WEIGHT_LAYERS)), None)
    return (first.in_features,) if isinstance(first, nn.Linear) else None


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
    trainer: Any = None,
    **options: Any,
) -> Masks:
    """Masks keeping a ``density`` fraction of ``model``'s prunable weights, chosen by ``method``.

    ``options`` are the common options (:class:`PruneOptions`: ``scheme``, ``power``,
    ``sample_rounds``, ``signed_map``, ``include_bias``, ``include_norm``, ``exclude``,
    ``shuffle``, ``invert``, ``on_collapse``, ``train_mode``), ``input_shape`` (data-free
    methods; known for registry models and models that start with a Linear layer) and the
    method's own options (``sketchprune.methods.get(method).options``). The model's weights,
    ``requires_grad`` flags, buffers and train/eval mode are left unchanged. Methods that train in
    the loop (``imp``) need ``trainer`` (a :class:`sketchprune.experiment.Trainer`); when they
    rewind, the result's ``start_state`` holds the weights to train the pruned network from.
    """
    check(iterations is None or (isinstance(iterations, int) and not isinstance(iterations, bool) and iterations >= 1),
          f"iterations must be an integer >= 1, got {iterations!r}")
    check(isinstance(seed, int) and not isinstance(seed, bool), f"seed must be an integer, got {seed!r}")
    check_density(density)
    spec, opts, method_options, batches, params, input_shape = _prepare(
        model, method, data, {**options, "mode": mode, "scope": scope, "iterations": iterations or 0,
                              "schedule": schedule})
    total = sum(p.numel() for p in params.values())
    check(budget(density, total) >= 1,
          f"density {density:g} keeps fewer than one of {total} prunable weights; use a density >= {1 / total:.3g}")
    check(spec.kind != "train" or trainer is not None,
          f"method {method!r} trains while it prunes: run it through sketchprune train / run / sweep, or pass "
          "trainer=sketchprune.experiment.Trainer(data, train_config)")
    generator = seeding.generator(seed, "prune-invert" if opts.invert else "prune")  # never the init stream
    rounds = opts.iterations or spec.rounds
    dens_schedule = round_densities(density, rounds, opts.schedule) if spec.kind == "score" else [density]

    copied = spec.copies or rounds > 1
    work = copy.deepcopy(model) if copied else model
    work_params = _same_names(work, params) if copied else params
    with scoring_state(work, train=opts.train_mode, restore=not copied), deterministic_kernels():
        ctx = methods.Context(spec, work, work_params, method_options, generator, batches, input_shape,
                              budget=budget(density, total), density=density, trainer=trainer)
        if spec.kind == "score":
            masks = _score_rounds(ctx, dens_schedule, opts)
        else:
            masks = _built_masks(ctx, call(ctx), opts.mode)
    if opts.shuffle:
        masks = shuffle_within_layers(masks, generator)
    result = Masks({n: m.cpu() for n, m in masks.items()})
    result.start_state = ctx.state.get("start_state")
    collapsed = result.collapsed()
    result.meta = PruneInfo(method, density, opts.mode, opts.scope, rounds, opts.schedule, dens_schedule,
                            collapsed).__dict__
    if "auto" in ctx.state:  # what auto chose in the last round (and how often it sampled)
        decisions = ctx.state["auto"]
        result.meta["auto"] = {**decisions[-1], "sampled_rounds": sum(d["mode"] == "sample" for d in decisions)}
    if collapsed:
        msg = f"layer collapse: {len(collapsed)} layer(s) pruned to nothing ({', '.join(collapsed[:3])})"
        if opts.on_collapse == "error":
            raise SketchpruneError(msg + "; raise the density, use scope='layer' or 'erk', or mode='sample'")
        warnings.warn(msg, LayerCollapseWarning, stacklevel=2)
    return result


def _prepare(model: nn.Module, method: str, data: Iterable | None, options: dict[str, Any]) -> tuple:
    """What every call needs: the method, its checked options, the data batches, the prunable
    parameters and the input shape (given, from the data, or from the model)."""
    check(isinstance(method, str), f"method must be a name, got {method!r}; see sketchprune.methods.names()")
    spec = methods.get(method)
    input_shape = options.pop("input_shape", None)
    check(input_shape is None or (isinstance(input_shape, (tuple, list, torch.Size)) and len(input_shape) >= 1
                                  and all(isinstance(d, int) and not isinstance(d, bool) and d >= 1
                                          for d in input_shape)),
          f"input_shape must be the shape of one input, e.g. (3, 32, 32), got {input_shape!r}")
    opts, method_options = prune_settings(spec, options)
    batches = _batches(data)
    if spec.needs_data and not batches:
        raise methods.needs_data(method)
    params = prunable_parameters(model, include_bias=opts.include_bias, include_norm=opts.include_norm,
                                 exclude=opts.exclude, include=opts.include)
    check(bool(params), "the model has nothing to prune (no Linear/Conv weights after exclusions); "
          "check exclude= or pass include_norm=True / include_bias=True")
    if input_shape is None:
        input_shape = tuple(batches[0][0].shape[1:]) if batches else input_shape_of(model)
    return spec, opts, method_options, batches, params, input_shape


def score(model: nn.Module, method: str, *, data: Iterable | None = None, seed: int = 0,
          **options: Any) -> dict[str, Tensor]:
    """One round of a score method's scores for ``model``'s prunable parameters (name -> tensor),
    with the same options as :func:`prune`; the model is left as it was."""
    spec, opts, method_options, batches, params, input_shape = _prepare(model, method, data, options)
    check(spec.kind == "score", f"method {method!r} builds masks, not scores; use prune()")
    work = copy.deepcopy(model) if spec.copies else model
    with scoring_state(work, train=opts.train_mode, restore=not spec.copies):
        ctx = methods.Context(spec, work, _same_names(work, params), method_options,
                              seeding.generator(seed, "prune"), batches, input_shape)
        return {n: s.detach() for n, s in call(ctx).items()}


def _same_names(model: nn.Module, params: Mapping[str, Tensor]) -> dict[str, nn.Parameter]:
    """The parameters of ``model`` (a copy) under the names of ``params``."""
    own = dict(model.named_parameters(remove_duplicate=False))
    return {n: own[n] for n in params}


def call(ctx: methods.Context) -> dict[str, Tensor]:
    """Run the method; the model failing on its inputs (shapes, labels) is a one-line error (the
    original exception stays chained to it)."""
    try:
        return ctx.method.fn(ctx)
    except (RuntimeError, IndexError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        shape = f" with input shape {ctx.input_shape}" if ctx.input_shape else ""
        raise SketchpruneError(f"method {ctx.method.name!r} failed{shape}: {type(e).__name__}: {first}; check that "
                               "the data or input_shape fit the model") from e


class Survivors:
    """The weights still alive across the rounds of one ``prune`` call: flat indices per tensor
    (None = all). Masks only shrink; dropped weights are zeroed in the working model."""

    def __init__(self, params: Mapping[str, nn.Parameter]) -> None:
        self.params = params
        self.alive: dict[str, Tensor | None] = {n: None for n in params}

    def gather(self, scores: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Each tensor's scores at its surviving positions (flat)."""
        return {n: s.reshape(-1) if self.alive[n] is None else s.reshape(-1).index_select(0, self.alive[n])
                for n, s in scores.items()}

    @torch.no_grad()
    def drop(self, keep: Mapping[str, Tensor]) -> None:
        """Keep the survivors where ``keep`` (aligned with them) is True; zero the others' weights."""
        for n, p in self.params.items():
            idx, k = self.alive[n], keep[n]
            drop = torch.nonzero(~k).squeeze(1)  # few: a round drops a small share
            if idx is None:
                _zero_flat(p, drop)
                self.alive[n] = torch.nonzero(k).squeeze(1)
            else:  # index_select / masked_select: faster than tensor indexing
                _zero_flat(p, idx.index_select(0, drop))
                self.alive[n] = idx.masked_select(k)

    def masks(self, keep: Mapping[str, Tensor] | None = None) -> dict[str, Tensor]:
        """Full-shape bool masks of the survivors (where ``keep``, aligned with them, is True)."""
        out = {}
        for n, p in self.params.items():
            alive = self.alive[n]
            if alive is None:
                out[n] = keep[n].view(p.shape) if keep is not None else torch.ones(p.shape, dtype=torch.bool,
                                                                                  device=p.device)
                continue
            m = torch.zeros(p.numel(), dtype=torch.bool, device=p.device)
            m[alive.masked_select(keep[n]) if keep is not None else alive] = True
            out[n] = m.view(p.shape)
        return out


def _score_rounds(ctx: methods.Context, dens_schedule: list[float], opts: PruneOptions) -> dict[str, Tensor]:
    """The rounds of a score method: score, select among the survivors, drop the rest."""
    if ctx.method.regrow:
        return _regrowing_rounds(ctx, dens_schedule, opts)
    round_budgets = [budgets(ctx.params, d, opts.scope) for d in dens_schedule]
    survivors = Survivors(ctx.params)
    ctx.current = survivors.masks
    for r, kept in enumerate(round_budgets):
        last = r == len(round_budgets) - 1
        keep = _select_round(survivors.gather(call(ctx)), kept, _round_mode(opts, last), opts, ctx)
        if last:
            return survivors.masks(keep)
        survivors.drop(keep)
    raise AssertionError("unreachable: a schedule has at least one round")


def _regrowing_rounds(ctx: methods.Context, dens_schedule: list[float], opts: PruneOptions) -> dict[str, Tensor]:
    """Rounds in which every weight is scored again, pruned ones included (FORCE): the model holds
    the original weights times the current mask, and each round selects among all weights."""
    ctx.originals = {n: p.detach().clone() for n, p in ctx.params.items()}
    mask = {n: torch.ones(p.shape, dtype=torch.bool, device=p.device) for n, p in ctx.params.items()}
    ctx.current = lambda: mask
    for r, d in enumerate(dens_schedule):
        last = r == len(dens_schedule) - 1
        scores = {n: s.reshape(-1) for n, s in call(ctx).items()}
        keep = _select_round(scores, budgets(ctx.params, d, opts.scope), _round_mode(opts, last), opts, ctx)
        mask = {n: keep[n].view(p.shape) for n, p in ctx.params.items()}
        if not last:
            with torch.no_grad():
                for n, p in ctx.params.items():
                    p.copy_(ctx.originals[n] * mask[n])
    return mask


def _built_masks(ctx: methods.Context, masks: Mapping[str, Tensor], mode: str) -> dict[str, Tensor]:
    """Check what a mask or train method returned: one bool mask per prunable tensor, the budget kept."""
    name = ctx.method.name
    check(set(masks) == set(ctx.params), f"method {name!r} returned masks for other tensors than the prunable ones")
    out = {}
    for n, p in ctx.params.items():
        m = masks[n]
        check(isinstance(m, Tensor) and m.dtype == torch.bool and m.shape == p.shape,
              f"method {name!r} returned a mask for {n!r} that is not a bool tensor of shape {tuple(p.shape)}")
        out[n] = m
    kept = sum(int(m.sum()) for m in out.values())
    check(kept == ctx.budget or (mode == "sample" and ctx.method.sampling),
          f"method {name!r} kept {kept} weights instead of {ctx.budget}; a mask method keeps exactly the budget")
    return out


@contextlib.contextmanager
def deterministic_kernels() -> Iterator[None]:
    """cuDNN's deterministic kernels while scoring (put back afterwards): on a GPU, its default
    convolution backward adds in a varying order, and the same seed would give different masks."""
    saved = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved


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


def _round_mode(opts: PruneOptions, last: bool) -> str:
    """The mode of one round: the asked one, or top-k before the last round with ``sample_rounds="last"``."""
    return opts.mode if (last or opts.sample_rounds == "all") else "topk"


def _select_round(scores: dict[str, Tensor], kept: Budget, mode: str, opts: PruneOptions,
                  ctx: methods.Context) -> dict[str, Tensor]:
    """Select among the surviving weights (flat scores) so that ``kept`` of *all* weights stay.

    Returns one flat boolean per tensor, aligned with its survivors. ``mode="auto"`` first asks
    :func:`sketchprune.auto.choose` for top-k or a sampling power (recorded in ``ctx.state``).
    """
    log_scores = False
    power = opts.power
    weights = nonnegative(scores, opts.signed_map) if ctx.method.signed and mode != "topk" else (scores, False)
    sel = None  # the selection, when auto already made it
    if mode == "auto":
        mode, power = "topk", math.inf
        if isinstance(kept, int):  # per-layer budgets cannot starve a layer: top-k
            sizes = {n: ctx.params[n].numel() for n in scores}
            mode, power, top = auto.choose(scores, kept, sizes, weights[0], weights[1])
            sel = top if mode == "topk" and not opts.invert else None
        ctx.state.setdefault("auto", []).append({"mode": mode, "power": power})
    sample = mode == "sample"
    if sample:
        scores, log_scores = weights
        if opts.invert and not math.isinf(power):  # favour low scores as strongly as the draw favours high ones
            scores, log_scores, power = _inverted_log_weights(scores, log_scores, power), True, 1.0
    elif opts.invert:
        scores = {n: -s for n, s in scores.items()}
    kw: dict[str, Any] = {"mode": "sample" if sample else "topk", "generator": ctx.generator,
                          "log_scores": log_scores}
    if sample:
        kw.update(scheme=opts.scheme, power=power)
    counts = {n: s.numel() for n, s in scores.items()}  # survivors per tensor
    live = {n: s for n, s in scores.items() if counts[n]}  # collapsed layers have nothing to select
    if sel is None and isinstance(kept, int):
        sel = select(live, min(1.0, kept / sum(counts.values())), **kw)
    elif sel is None:
        sel = select(live, {n: min(1.0, kept[n] / counts[n]) for n in live}, scope="layer", **kw)
    return {n: sel[n] if n in sel else torch.zeros(0, dtype=torch.bool, device=s.device) for n, s in scores.items()}


def _inverted_log_weights(scores: dict[str, Tensor], log_scores: bool, power: float) -> dict[str, Tensor]:
    """Log sampling weights ``-power * log s``: ``p ∝ s^(-power)``, the mirror of the normal draw.

    A zero score has infinite inverted weight: it is kept before any positive one (uniformly among
    the zeros), as the lowest scores are in an inverted top-k.
    """
    inv = {n: (s if log_scores else s.log()).mul(-power) for n, s in scores.items()}
    finite = [float(v[torch.isfinite(v)].max()) for v in inv.values() if bool(torch.isfinite(v).any())]
    first = max(finite) + 1e4 if finite else 0.0  # Gumbel noise never bridges a 1e4 gap
    return {n: v.masked_fill(torch.isposinf(v), first) for n, v in inv.items()}


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
