"""The options every method shares (:class:`PruneOptions`), checked in one place (:func:`prune_settings`)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sketchprune import config as cfgmod
from sketchprune import methods
from sketchprune.budgets import SCHEDULES, SCOPES
from sketchprune.config import setting
from sketchprune.errors import SketchpruneError, check
from sketchprune.selection import MODES, SCHEMES, SIGNED_MAPS


MAX_ITERATIONS = 10_000
"""The most pruning rounds a call takes (SynFlow's default is 100): every round rescores the network
and keeps a density list entry, so a count like 1e18 is a typo, refused before any work."""


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
    iterations: int | None = setting(None, "Pruning rounds (default: the method's own).")
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
        check(self.iterations is None or (isinstance(self.iterations, int) and not isinstance(self.iterations, bool)
                                          and 1 <= self.iterations <= MAX_ITERATIONS),
              f"iterations must be an integer in [1, {MAX_ITERATIONS}] (or None: the method's default), "
              f"got {self.iterations!r}")


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
    return opts, method_settings(method, opts, own)


def method_settings(method: methods.Method, opts: PruneOptions, own: Mapping[str, Any]) -> Any:
    """The method's own options from ``own``, checked together with the common ``opts`` (the
    checks that concern the method's kind are its runner's)."""
    method.check_form("weights")
    method_options = method.make_options(own)
    check(opts.signed_map == "positive" or (method.signed and opts.mode in ("sample", "auto")),
          f"signed_map applies to signed methods with mode='sample'; {method.name} "
          f"{'is not signed' if not method.signed else 'is not sampled here'}: drop signed_map")
    method.runner.validate(method, opts)
    return method_options
