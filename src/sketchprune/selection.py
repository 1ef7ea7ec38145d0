"""Turn scores into masks: deterministic top-k, or a mask *sampled* the way sketching samples (SPEC 3.6).

Rules, all tested:

* ``mode="topk"`` and ``scheme="exact"`` keep exactly ``round(density * total)`` entries per budget
  (the whole set for ``scope="global"``, each tensor for ``scope="layer"``). A tie at the
  top-k threshold keeps the lowest flat indices first (tensors in mapping order).
* Sampling weights are ``w_i = s_i ** power`` (computed in log space, so scores from 1e-300 to
  1e300 work; ``log_scores=True`` takes ``log s`` directly, ``-inf`` meaning zero). ``power=0``
  is uniform random pruning and ``power=inf`` is top-k.
* Zero scores: a zero-weight entry is never kept while positive-weight entries remain. When the
  budget exceeds the number of positive weights, all positive ones are kept and the rest is
  drawn uniformly among the zero-weight entries (for "poisson": each zero entry gets the
  leftover budget as its inclusion probability).
* ``scheme="exact"``: successive sampling without replacement proportional to ``w`` (exponential
  race / Gumbel-top-k). ``"poisson"``: independent keeps with ``pi_i = min(1, lam w_i)``,
  ``sum pi = k`` (the kept count is random with mean k). ``"iid"``: draws with replacement until
  k distinct indices are kept. The first appearances of new indices are successive sampling
  proportional to ``w``, so the kept *set* has exactly the law of "exact", and it is drawn that
  way (the same mask for the same seed): drawing with replacement would need ever more draws
  as k nears the number of entries, as it does in the early rounds of iterative pruning.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Union

import torch
from torch import Tensor

from sketchprune import sampling, topk
from sketchprune.inclusion import inclusion_probabilities
from sketchprune.pieces import split
from sketchprune.errors import SketchpruneError, all_finite, check, check_density

Scores = Union[Tensor, Mapping[str, Tensor]]
MODES = ("topk", "sample")
SIGNED_MAPS = ("positive", "rank", "exp", "shift")
SCHEMES = sampling.SCHEMES
SCOPES = ("global", "layer")  # select()'s; prune adds erk (sketchprune.budgets)


def budget(density: float, total: int) -> int:
    """Number of entries kept at ``density`` out of ``total``: ``round(density * total)``."""
    return int(round(density * total))


def select(
    scores: Scores,
    density: float | Mapping[str, float],
    *,
    mode: str = "topk",
    scheme: str = "exact",
    power: float = 1.0,
    scope: str = "global",
    generator: torch.Generator | None = None,
    log_scores: bool = False,
) -> Tensor | dict[str, Tensor]:
    """Boolean masks keeping a ``density`` fraction of ``scores`` (a tensor or a name -> tensor mapping).

    ``density`` may be a name -> density mapping with ``scope="layer"``. See the module docstring
    for the exact rules on counts, ties, zero scores and schemes.
    """
    single = isinstance(scores, Tensor)
    check(single or isinstance(scores, Mapping), f"scores must be a tensor or a name -> tensor mapping, got "
                                                 f"{type(scores).__name__}")
    named: dict[str, Tensor] = {"": scores} if single else dict(scores)  # type: ignore[arg-type]
    for name, t in named.items():
        check(isinstance(t, Tensor), f"scores for {name!r} are a {type(t).__name__}, not a tensor")
    _validate(named, density, mode, scheme, power, scope, log_scores, generator)
    if mode == "sample" and math.isinf(power):
        mode = "topk"
    names = list(named)
    if scope == "global":
        groups = [names]
        dens = {n: float(density) for n in names}  # type: ignore[arg-type]
    else:
        groups = [[n] for n in names]
        dens = {n: float(density[n] if isinstance(density, Mapping) else density) for n in names}
    out = {n: torch.zeros(named[n].shape, dtype=torch.bool, device=named[n].device) for n in names}
    for group in groups:
        total = sum(named[n].numel() for n in group)
        if total == 0:  # an empty tensor under scope="layer": nothing to keep (its mask is empty)
            continue
        k = budget(dens[group[0]], total)
        check(
            k >= 1,
            f"density {dens[group[0]]:g} keeps 0 of {total} entries{' in ' + group[0] if group[0] else ''}; "
            f"raise the density to at least {1 / total:.3g}",
        )
        _select_group([named[n] for n in group], [out[n] for n in group], k, mode, scheme, power, generator, log_scores)
    return out[""] if single else out


def _validate(named, density, mode, scheme, power, scope, log_scores, generator) -> None:
    check(mode in MODES, f"unknown mode {mode!r}; use one of {', '.join(MODES)}")
    check(scheme in SCHEMES, f"unknown scheme {scheme!r}; use one of {', '.join(SCHEMES)}")
    check(scope in SCOPES, f"unknown scope {scope!r}; use one of {', '.join(SCOPES)}")
    check(len(named) > 0 and sum(t.numel() for t in named.values()) > 0, "scores are empty; pass at least one score")
    check(
        mode == "sample" or (scheme == "exact" and power == 1.0),
        "scheme and power only apply to mode='sample'; drop them or set mode='sample'",
    )
    check(isinstance(power, (int, float)) and not isinstance(power, bool) and not math.isnan(power) and power >= 0,
          f"power must be a number >= 0 (0 = random, inf = top-k), got {power!r}")
    check(generator is None or isinstance(generator, torch.Generator),
          f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    check(isinstance(log_scores, bool), f"log_scores must be True or False, got {log_scores!r}")
    dens = density.values() if isinstance(density, Mapping) else [density]
    if isinstance(density, Mapping):
        check(scope == "layer", "per-layer densities need scope='layer'")
        missing = [n for n in named if n not in density]
        if missing:
            raise SketchpruneError(f"no density given for {missing[0]!r}; give one density per scored tensor")
    for d in dens:
        check_density(d)
    for name, t in named.items():
        what = f"scores for {name!r}" if name else "scores"
        check(t.is_floating_point(), f"{what} must be a float tensor, got {t.dtype}; convert with .float()")
        for piece in split([t.detach()]):  # piece by piece: no full-size temporaries
            _check_piece(piece, what, mode, log_scores)


def _check_piece(piece: Tensor, what: str, mode: str, log_scores: bool) -> None:
    if not log_scores and all_finite(piece) and (mode != "sample" or float(piece.min()) >= 0):
        return  # the common case in one or two passes
    if bool(torch.isnan(piece).any()):
        raise SketchpruneError(f"{what} contain NaN; pass finite scores (check the model and data for overflow)")
    if log_scores:
        check(not bool(torch.isposinf(piece).any()), f"{what} contain +inf; pass finite log-scores (-inf for zero)")
        return
    if bool(torch.isinf(piece).any()):
        raise SketchpruneError(f"{what} contain inf; pass finite scores (or log-scores with log_scores=True)")
    if mode == "sample":
        check(
            not bool((piece < 0).any()),
            f"{what} are negative; sampling needs non-negative scores (map signed scores first, "
            "e.g. sketchprune.selection.nonnegative)",
        )


def _as_float(t: Tensor) -> Tensor:
    return t if t.dtype in (torch.float32, torch.float64) else t.float()


def _select_group(tensors, outs, k, mode, scheme, power, generator, log_scores) -> None:
    pieces = split([_as_float(t.detach()) for t in tensors])
    out_pieces = split(outs)
    sizes = [p.numel() for p in pieces]
    if mode == "topk":
        topk.largest_k(sizes, lambda j: pieces[j], k, out_pieces)
        return
    device = pieces[0].device

    def log_weight(j: int) -> Tensor:
        p = pieces[j]
        if power == 0:
            return torch.zeros_like(p)
        lw = p if log_scores else p.log()
        return lw * power if power != 1 else lw

    if scheme in ("exact", "iid"):  # the same law for the kept set (module docstring)
        positive = sum(int((log_weight(j) > -math.inf).sum().item()) for j in range(len(pieces)))
        if k <= positive:
            _complete_exact(pieces, out_pieces, k, generator, log_weight)
        else:  # zero rule: every positive weight, the rest uniformly among the zero weights
            for j, o in enumerate(out_pieces):
                o.copy_(log_weight(j) > -math.inf)
            _complete_exact(pieces, out_pieces, k - positive, generator, lambda j: torch.zeros_like(pieces[j]))
        return

    top = max(float(log_weight(j).max().item()) for j in range(len(pieces)))
    weights = [
        (log_weight(j) - top).exp_() if top > -math.inf else torch.zeros_like(pieces[j]) for j in range(len(pieces))
    ]
    pi = inclusion_probabilities(weights, k)  # poisson
    gens = sampling.piece_generators(generator, len(pieces), device)
    for j, w in enumerate(weights):
        out_pieces[j].copy_(sampling.uniform(w, gens[j]) < pi(w))


def _complete_exact(pieces, out_pieces, k, generator, log_weight) -> None:
    """Add ``k`` entries not yet kept, by successive sampling proportional to ``exp(log_weight)``:
    the exponential race, i.e. the ``k`` largest ``log w + Gumbel`` among the entries not kept."""
    noise = sampling.replayable_gumbel(sampling.piece_generators(generator, len(pieces), pieces[0].device))
    extra = [torch.zeros_like(o) for o in out_pieces]

    def key(j: int) -> Tensor:
        lw = log_weight(j)
        return (lw + noise(lw, j)).masked_fill_(out_pieces[j], -math.inf)

    topk.largest_k([p.numel() for p in pieces], key, k, extra)
    for o, e in zip(out_pieces, extra):
        o |= e


def nonnegative(scores: dict[str, Tensor], how: str = "positive") -> tuple[dict[str, Tensor], bool]:
    """Map signed scores (higher = keep) to sampling weights; returns ``(weights, are_log_weights)``.

    * ``positive``: ``max(s, 0)`` (keeps the ranking among helpful weights; default);
    * ``rank``: the rank of s among all scores, divided by their number;
    * ``exp``: tempered exponential ``exp(s / std(s))``, returned as log-weights;
    * ``shift``: ``s - min(s)``: nearly uniform weights, so about a random mask (for comparison).
    """
    check(how in SIGNED_MAPS, f"unknown signed_map {how!r}; use one of {', '.join(SIGNED_MAPS)}")
    if how == "positive":
        return {n: s.clamp_min(0) for n, s in scores.items()}, False
    if how == "shift":
        lo = min(float(s.min()) for s in scores.values() if s.numel())
        return {n: s - lo for n, s in scores.items()}, False
    flat = torch.cat([s.reshape(-1) for s in scores.values()])
    if how == "rank":
        ranks = torch.empty_like(flat)
        ranks[torch.argsort(flat, stable=True)] = torch.arange(1, flat.numel() + 1, dtype=flat.dtype,
                                                               device=flat.device) / flat.numel()
        return dict(zip(scores, (r.view_as(s) for r, s in zip(ranks.split([s.numel() for s in scores.values()]),
                                                               scores.values())))), False
    std = float(flat.std()) if flat.numel() > 1 else 1.0
    return {n: s / (std if std > 0 else 1.0) for n, s in scores.items()}, True
