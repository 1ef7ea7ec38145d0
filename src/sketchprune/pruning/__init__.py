"""``prune(model, method, density, ...)``: pruning at initialization for any ``nn.Module``.

The pruning stage, laid out along its flow (one front door here):

* :mod:`~sketchprune.pruning.options`: the common options, checked once (:func:`prune_settings`);
* :mod:`~sketchprune.pruning.params`: which parameters are pruned, the data batches, the input shape;
* :mod:`sketchprune.budgets`: how many weights each layer keeps, over the rounds;
* :mod:`sketchprune.methods.runners`: how the method's output becomes masks (score rounds, a built
  mask, a training loop): the method's own runner;
* :mod:`~sketchprune.pruning.state`: the scoring state put back afterwards, and the sanity checks;
* :mod:`~sketchprune.pruning.units`: :func:`prune_units`, whole units removed with a method's unit form.

The caller's model is left as it was: multi-round methods, and methods that change the weights
they score (``Method.copies``), work on a deep copy whose dropped weights are zeroed between
rounds; one-round methods score the model itself and restore its flags, gradients, modes and
buffers afterwards (no copy of the weights).
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from sketchprune import methods, seeding
from sketchprune.budgets import SCHEDULES, SCOPES, Budget, budgets, erk_densities, round_densities
from sketchprune.errors import SketchpruneError, check, check_density
from sketchprune.layers import NORM_LAYERS, WEIGHT_LAYERS
from sketchprune.masks import Masks
from sketchprune.methods.runners import call
from sketchprune.pruning.options import COMMON_OPTIONS, PruneOptions, method_settings, prune_settings
from sketchprune.pruning.params import UnprunedWarning, as_batches, input_shape_of, prunable_parameters
from sketchprune.pruning.state import (deterministic_kernels, reinitialize, scoring_state, seeded_global_rng,
                                      shuffle_within_layers)
from sketchprune.pruning.units import KEEP_BY, prune_units
from sketchprune.selection import budget


class LayerCollapseWarning(UserWarning):
    """A layer was pruned to nothing: the network is cut there."""


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
    input_shape: tuple[int, ...] | None = None,
    **options: Any,
) -> Masks:
    """Masks keeping a ``density`` fraction of ``model``'s prunable weights, chosen by ``method``.

    ``options`` are the common options (:class:`PruneOptions`: ``scheme``, ``power``,
    ``sample_rounds``, ``signed_map``, ``include_bias``, ``include_norm``, ``exclude``,
    ``shuffle``, ``invert``, ``on_collapse``, ``train_mode``) and the method's own options
    (``sketchprune.methods.get(method).options``). ``input_shape`` is for data-free methods (known
    for registry models and models that start with a Linear layer). The model's weights,
    ``requires_grad`` flags, buffers and train/eval mode are left unchanged. Methods that train in
    the loop (``imp``) need ``trainer`` (a :class:`sketchprune.experiment.Trainer`); when they
    rewind, the result's ``start_state`` holds the weights to train the pruned network from.
    """
    check(isinstance(method, str), f"method must be a name, got {method!r}; see sketchprune.methods.names()")
    spec = methods.get(method)
    opts, method_options = prune_settings(spec, {**options, "mode": mode, "scope": scope, "iterations": iterations,
                                                 "schedule": schedule})
    return prune_with(model, spec, opts, method_options, density, data=data, seed=seed, trainer=trainer,
                      input_shape=input_shape)


def prune_with(model: nn.Module, method: methods.Method, opts: PruneOptions, method_options: Any, density: float, *,
               data: Iterable | None = None, seed: int = 0, trainer: Any = None,
               input_shape: tuple[int, ...] | None = None) -> Masks:
    """:func:`prune` with settings that :func:`prune_settings` (or a checked ``RunConfig``) already
    built: the options are not checked again."""
    check(isinstance(seed, int) and not isinstance(seed, bool), f"seed must be an integer, got {seed!r}")
    check_density(density)
    batches, params, input_shape = _inputs(model, method, opts, data, input_shape)
    total = sum(p.numel() for p in params.values())
    check(total >= 1, "the model's prunable weights are all empty (a layer of size 0); check the model's sizes")
    check(budget(density, total) >= 1,
          f"density {density:g} keeps fewer than one of {total} prunable weights; use a density >= {1 / max(total, 1):.3g}")
    generator = seeding.generator(seed, "prune-invert" if opts.invert else "prune")  # never the init stream
    rounds = method.runner.rounds(method, opts)
    copied = method.copies or rounds > 1
    work = copy.deepcopy(model) if copied else model
    work_params = _same_names(work, params) if copied else params
    with scoring_state(work, train=opts.train_mode, restore=not copied), deterministic_kernels(), \
            seeded_global_rng(work, seeding.derive(seed, "prune-global")):
        ctx = methods.Context(method, work, work_params, method_options, generator, batches, input_shape,
                              budget=budget(density, total), density=density, trainer=trainer)
        outcome = method.runner.run(ctx, opts, density)
    masks = outcome.masks
    if opts.shuffle:
        masks = shuffle_within_layers(masks, generator)
    result = Masks({n: m.cpu() for n, m in masks.items()})
    result.start_state = outcome.start_state
    collapsed = result.collapsed()
    result.meta = {"method": method.name, "density": density, "mode": opts.mode, "scope": opts.scope,
                   "iterations": rounds, "schedule": opts.schedule, "round_densities": outcome.round_densities,
                   "collapsed": collapsed}
    if outcome.auto:  # what auto chose in the last round (and how often it sampled)
        result.meta["auto"] = {**outcome.auto[-1], "sampled_rounds": sum(d["mode"] == "sample" for d in outcome.auto)}
    if collapsed:
        msg = f"layer collapse: {len(collapsed)} layer(s) pruned to nothing ({', '.join(collapsed)})"
        if opts.on_collapse == "error":
            raise SketchpruneError(msg + "; raise the density, use scope='layer' or 'erk', or mode='sample'")
        warnings.warn(msg, LayerCollapseWarning, stacklevel=3)
    return result


def _inputs(model: nn.Module, method: methods.Method, opts: PruneOptions, data: Iterable | None,
            input_shape: tuple[int, ...] | None) -> tuple:
    """The data batches, the prunable parameters and the input shape (given, from the data, or from the model)."""
    check(input_shape is None or (isinstance(input_shape, (tuple, list, torch.Size)) and len(input_shape) >= 1
                                  and all(isinstance(d, int) and not isinstance(d, bool) and d >= 1
                                          for d in input_shape)),
          f"input_shape must be the shape of one input, e.g. (3, 32, 32), got {input_shape!r}")
    batches = as_batches(data)
    if method.needs_data and not batches:
        raise methods.needs_data(method.name)
    params = prunable_parameters(model, include_bias=opts.include_bias, include_norm=opts.include_norm,
                                 exclude=opts.exclude, include=opts.include)
    check(bool(params), "the model has nothing to prune (no Linear/Conv weights after exclusions); "
          "check exclude= or pass include_norm=True / include_bias=True")
    if input_shape is None:
        input_shape = tuple(batches[0][0].shape[1:]) if batches else input_shape_of(model)
    return batches, params, input_shape


def score(model: nn.Module, method: str, *, data: Iterable | None = None, seed: int = 0,
          input_shape: tuple[int, ...] | None = None, **options: Any) -> dict[str, Tensor]:
    """One round of a score method's scores for ``model``'s prunable parameters (name -> tensor),
    with the same options as :func:`prune`; the model is left as it was."""
    check(isinstance(method, str), f"method must be a name, got {method!r}; see sketchprune.methods.names()")
    spec = methods.get(method)
    opts, method_options = prune_settings(spec, options)
    batches, params, input_shape = _inputs(model, spec, opts, data, input_shape)
    check(spec.runner.gives_scores, f"method {method!r} builds masks, not scores; use prune()")
    work = copy.deepcopy(model) if spec.copies else model
    with scoring_state(work, train=opts.train_mode, restore=not spec.copies), \
            seeded_global_rng(work, seeding.derive(seed, "prune-global")):
        ctx = methods.Context(spec, work, _same_names(work, params), method_options,
                              seeding.generator(seed, "prune"), batches, input_shape)
        return {n: s.detach() for n, s in call(ctx).items()}


def _same_names(model: nn.Module, params: Mapping[str, Tensor]) -> dict[str, nn.Parameter]:
    """The parameters of ``model`` (a copy) under the names of ``params``."""
    own = dict(model.named_parameters(remove_duplicate=False))
    return {n: own[n] for n in params}


__all__ = ["COMMON_OPTIONS", "KEEP_BY", "NORM_LAYERS", "SCHEDULES", "SCOPES", "WEIGHT_LAYERS", "Budget",
           "LayerCollapseWarning", "PruneOptions", "UnprunedWarning", "budgets", "erk_densities", "input_shape_of",
           "method_settings", "prunable_parameters", "prune", "prune_settings", "prune_units", "prune_with",
           "reinitialize", "round_densities", "score"]
