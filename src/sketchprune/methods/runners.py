"""How a registered method produces its mask: each :class:`~sketchprune.methods.registry.Method`
carries one runner, and ``prune`` calls ``method.runner.run`` once.

* :class:`ScoreRounds` (``kind="score"``): the method scores; each round selects among the
  surviving weights (top-k, sampled or ``auto``, any scope) and drops the rest, the density
  falling over the rounds; a ``regrow`` method rescores every weight on its original value.
* :class:`BuiltMask` (``kind="mask"``): the method builds the mask itself, keeping exactly the budget.
* :class:`TrainsMask` (``kind="train"``): like a built mask, found while training with ``ctx.trainer``.

A runner checks the common options that concern its kind (:meth:`Runner.validate`, called from
the one place prune's settings are checked) and says how many scoring rounds a call makes.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from sketchprune import auto
from sketchprune.budgets import Budget, budgets, round_densities
from sketchprune.errors import SketchpruneError, check
from sketchprune.selection import nonnegative, select

if TYPE_CHECKING:
    from sketchprune.methods.context import Context
    from sketchprune.methods.registry import Method
    from sketchprune.pruning.options import PruneOptions


@dataclass
class Outcome:
    """What a runner hands back to ``prune``."""

    masks: dict[str, Tensor]
    round_densities: list[float]
    start_state: dict[str, Tensor] | None = None
    auto: list[dict[str, Any]] | None = None
    """``mode="auto"``: the decision of each round (``{"mode", "power"}``)."""


class Runner:
    """The strategy that turns a method's output into masks (see the module docstring)."""

    kind: str = ""
    """The word the methods table shows: ``score``, ``mask`` or ``train``."""
    data_label: str | None = None
    """What the methods table shows in the data column instead of the method's data need."""
    gives_scores: bool = False
    """The method returns scores (``sketchprune.pruning.score`` works with it)."""
    needs_trainer: bool = False
    """``prune`` must be given a trainer (the method trains while it prunes)."""

    def validate(self, method: Method, opts: PruneOptions) -> None:
        """Check the common options that concern this kind of method (a one-line error)."""

    def rounds(self, method: Method, opts: PruneOptions) -> int:
        """How many scoring rounds one ``prune`` call makes."""
        return 1

    def run(self, ctx: Context, opts: PruneOptions, density: float) -> Outcome:
        raise NotImplementedError


class ScoreRounds(Runner):
    kind = "score"
    gives_scores = True

    def rounds(self, method: Method, opts: PruneOptions) -> int:
        return opts.iterations if opts.iterations is not None else method.rounds

    def run(self, ctx: Context, opts: PruneOptions, density: float) -> Outcome:
        schedule = round_densities(density, self.rounds(ctx.method, opts), opts.schedule)
        decisions: list[dict[str, Any]] = []
        rounds = _regrowing_rounds if ctx.method.regrow else _score_rounds
        masks = rounds(ctx, schedule, opts, decisions)
        return Outcome(masks, schedule, auto=decisions or None)


class BuiltMask(Runner):
    kind = "mask"

    def validate(self, method: Method, opts: PruneOptions) -> None:
        name = method.name
        check(opts.mode == "topk", f"method {name!r} builds its mask itself and has no sampled form; use mode='topk'")
        check(opts.scope == "global", f"method {name!r} sets its own per-layer budgets; use scope='global'")
        check(opts.iterations in (None, 1) and opts.schedule == "exponential",
              f"method {name!r} builds its mask in one go; drop iterations and schedule")
        check(not opts.invert, f"invert applies to score methods; {name!r} builds its mask itself")

    def run(self, ctx: Context, opts: PruneOptions, density: float) -> Outcome:
        from sketchprune.methods.context import Built

        out = call(ctx)
        built = out if isinstance(out, Built) else Built(out)
        return Outcome(_checked_masks(ctx, built.masks), [density], start_state=built.start_state)


class TrainsMask(BuiltMask):
    kind = "train"
    data_label = "trains"
    needs_trainer = True

    def run(self, ctx: Context, opts: PruneOptions, density: float) -> Outcome:
        check(ctx.trainer is not None,
              f"method {ctx.method.name!r} trains while it prunes: run it through sketchprune train / run / sweep, "
              "or pass trainer=sketchprune.experiment.Trainer(data, train_config)")
        return super().run(ctx, opts, density)


RUNNERS: dict[str, Runner] = {r.kind: r for r in (ScoreRounds(), BuiltMask(), TrainsMask())}


def call(ctx: Context) -> Any:
    """Run the method; the model failing on its inputs is a one-line error that says why when the
    cause is known (weights on the meta device, an output that is not a tensor, a forward that needs
    more than the input, BatchNorm in train mode on one sample) and otherwise names the shapes (the
    original exception stays chained to it)."""
    name = ctx.method.name
    check(not any(p.is_meta for p in ctx.params.values()),
          f"method {name!r} cannot prune a model whose weights are on the meta device (they hold no values); "
          "materialize them first, e.g. model.to_empty(device='cpu') and initialize them")
    returned: list[str] = []  # the kind of output the model's forward gave, when it was not a tensor

    def note_output(module: nn.Module, args: Any, output: Any) -> None:
        if not isinstance(output, Tensor) and not returned:
            returned.append(type(output).__name__)

    hook = ctx.model.register_forward_hook(note_output)
    try:
        return ctx.method.fn(ctx)  # type: ignore[misc]
    except SketchpruneError:
        raise  # the method's own one-line error
    except (RuntimeError, LookupError, ValueError, TypeError, AttributeError, NotImplementedError,
            AssertionError) as e:  # torch checks some shapes by assert (MultiheadAttention's width)
        why = _known_cause(ctx, e, returned)
        if why is None and isinstance(e, (TypeError, AttributeError, KeyError)):
            raise  # not the model's inputs: a bug to see whole
        raise SketchpruneError(why or _unknown_cause(ctx, e)) from e
    finally:
        hook.remove()


def _unknown_cause(ctx: Context, error: Exception) -> str:
    """The message for a failure of unknown cause: the model is run once more on the inputs alone, to
    tell an input that does not fit it from a method that does not fit the model."""
    name = ctx.method.name
    first = str(error).strip().splitlines()[0][:300] if str(error).strip() else ""
    what = f"{type(error).__name__}: {first}"
    shape = f" of shape {tuple(ctx.input_shape)}" if ctx.input_shape else ""
    fails = _model_fails(ctx)
    if fails is not None:
        return (f"method {name!r} failed: the model itself fails on inputs{shape} ({fails}); check that the data or "
                "input_shape fit the model")
    kinds = sorted({type(m).__name__ for m in ctx.model.modules()
                    if type(m).__module__.startswith("torch.nn") and any(True for _ in m.parameters(recurse=False))})
    return (f"method {name!r} failed on this model ({what}); the model runs on inputs{shape}, so it is the method "
            f"that does not handle a part of it (its layers: {', '.join(kinds) or 'none'}): use another method")


def _model_fails(ctx: Context) -> str | None:
    """Why the model fails on its inputs (a data batch, or random inputs of the input shape), or None
    when it runs (the state the call changes is the scoring state's, put back by ``prune``)."""
    from sketchprune.layers import random_inputs

    try:
        with torch.no_grad():
            if ctx.data:
                x = ctx.data[0][0][:2].to(ctx.device)
            elif ctx.input_shape is not None:
                x = random_inputs(ctx.model, tuple(ctx.input_shape), 2, torch.Generator().manual_seed(0), ctx.device)
            else:
                return None
            dtype = next(ctx.model.parameters()).dtype  # a method's copy may be float64 (SynFlow)
            ctx.model(x.to(dtype) if x.is_floating_point() and dtype.is_floating_point else x)
    except Exception as e:  # noqa: BLE001 - any failure of the model's own forward is the answer
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
        return f"{type(e).__name__}: {first}"
    return None


def _known_cause(ctx: Context, error: Exception, returned: list[str]) -> str | None:
    """The message for a failure whose cause is known, or None."""
    import inspect

    name = ctx.method.name
    if returned:
        return (f"the model's forward returns a {returned[0]}, not a tensor; method {name!r} needs forward(x) to "
                "return the output tensor (the logits): wrap the model in a module whose forward returns it "
                "(e.g. model(x)[0] or model(x)['logits'])")
    if isinstance(error, TypeError):
        try:
            params = list(inspect.signature(ctx.model.forward).parameters.values())
        except (TypeError, ValueError):
            params = []
        needed = [p.name for p in params if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY,
                  p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        if len(needed) > 1:
            return (f"the model's forward needs more than the input ({', '.join(needed[1:])}); method {name!r} calls "
                    "model(x): give those arguments defaults, or wrap the model in a module whose forward(x) "
                    "supplies them")
    if isinstance(error, ValueError) and "more than 1 value per channel" in str(error):
        return (f"a BatchNorm layer in training mode got a batch of one sample (method {name!r}, train_mode=True); "
                "give batches of 2 or more samples, or leave train_mode off")
    return None


def _checked_masks(ctx: Context, masks: Mapping[str, Tensor]) -> dict[str, Tensor]:
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
    check(kept == ctx.budget,
          f"method {name!r} kept {kept} weights instead of {ctx.budget}; a mask method keeps exactly the budget")
    return out


# ---- score rounds -----------------------------------------------------------------------------------

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

    def mask(self, name: str, keep: Tensor | None = None) -> Tensor:
        """The full-shape bool mask of ``name``'s survivors (where ``keep``, aligned with them, is True)."""
        p, alive = self.params[name], self.alive[name]
        if alive is None:
            return keep.view(p.shape) if keep is not None else torch.ones(p.shape, dtype=torch.bool, device=p.device)
        m = torch.zeros(p.numel(), dtype=torch.bool, device=p.device)
        m[alive.masked_select(keep) if keep is not None else alive] = True
        return m.view(p.shape)

    def masks(self, keep: Mapping[str, Tensor] | None = None) -> dict[str, Tensor]:
        """Full-shape bool masks of the survivors (where ``keep``, aligned with them, is True)."""
        return {n: self.mask(n, keep[n] if keep is not None else None) for n in self.params}


class _SurvivorMasks(Mapping):
    """The current masks of a round, built on access (most methods never read them)."""

    def __init__(self, survivors: Survivors) -> None:
        self._survivors = survivors

    def __getitem__(self, name: str) -> Tensor:
        return self._survivors.mask(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._survivors.params)

    def __len__(self) -> int:
        return len(self._survivors.params)


def _score_rounds(ctx: Context, schedule: list[float], opts: PruneOptions,
                  decisions: list[dict[str, Any]]) -> dict[str, Tensor]:
    """The rounds of a score method: score, select among the survivors, drop the rest."""
    round_budgets = [budgets(ctx.params, d, opts.scope) for d in schedule]
    survivors = Survivors(ctx.params)
    current = _SurvivorMasks(survivors)
    for r, kept in enumerate(round_budgets):
        last = r == len(round_budgets) - 1
        scores = call(dataclasses.replace(ctx, round=r, masks=current))
        keep = _select_round(survivors.gather(scores), kept, _round_mode(opts, last), opts, ctx, decisions)
        if last:
            return survivors.masks(keep)
        survivors.drop(keep)
    raise AssertionError("unreachable: a schedule has at least one round")


def _regrowing_rounds(ctx: Context, schedule: list[float], opts: PruneOptions,
                      decisions: list[dict[str, Any]]) -> dict[str, Tensor]:
    """Rounds in which every weight is scored again, pruned ones included (FORCE): the model holds
    the original weights times the current mask, and each round selects among all weights."""
    originals = {n: p.detach().clone() for n, p in ctx.params.items()}
    mask = {n: torch.ones(p.shape, dtype=torch.bool, device=p.device) for n, p in ctx.params.items()}
    for r, d in enumerate(schedule):
        last = r == len(schedule) - 1
        scores = call(dataclasses.replace(ctx, round=r, masks=mask, originals=originals))
        scores = {n: s.reshape(-1) for n, s in scores.items()}
        keep = _select_round(scores, budgets(ctx.params, d, opts.scope), _round_mode(opts, last), opts, ctx,
                             decisions)
        mask = {n: keep[n].view(p.shape) for n, p in ctx.params.items()}
        if not last:
            with torch.no_grad():
                for n, p in ctx.params.items():
                    p.copy_(originals[n] * mask[n])
    return mask


def _round_mode(opts: PruneOptions, last: bool) -> str:
    """The mode of one round: the asked one, or top-k before the last round with ``sample_rounds="last"``."""
    return opts.mode if (last or opts.sample_rounds == "all") else "topk"


def _select_round(scores: dict[str, Tensor], kept: Budget, mode: str, opts: PruneOptions, ctx: Context,
                  decisions: list[dict[str, Any]]) -> dict[str, Tensor]:
    """Select among the surviving weights (flat scores) so that ``kept`` of *all* weights stay.

    Returns one flat boolean per tensor, aligned with its survivors. ``mode="auto"`` first asks
    :func:`sketchprune.auto.choose` for top-k or a sampling power (appended to ``decisions``).
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
        decisions.append({"mode": mode, "power": power})
    sample = mode == "sample"
    if sample and opts.invert and math.isinf(power):  # power inf is top-k: invert it as top-k is inverted
        sample = False
    if sample:
        scores, log_scores = weights
        if opts.invert:  # favour low scores as strongly as the draw favours high ones
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
