"""``mode="auto"``: choose top-k or sampling, and the power of ``score^power``, for each selection.

The rule, from the sketching view. A layer's weights are the terms of that layer's product
(SPEC 3.2); a mask that keeps too few of them sketches the product with an error that grows as
the number of kept terms shrinks, and one that keeps none cuts the network (layer collapse).
Top-k keeps the terms with the largest scores, which is the best sketch of each product only as
long as the global ranking does not starve a layer: scores of different layers live on
different scales (the classifier's small weights, for magnitude), and a global top-k can give a
whole layer almost nothing. Sampling with probability ``∝ score^power`` spreads the budget
(``power = 0`` is uniform), at the price of keeping lower-scored terms.

So: keep top-k unless it starves a layer, and otherwise sample with the largest power that does
not, i.e. the mask closest to top-k that feeds every product. "Starved" means a layer keeps less
than ``STARVED`` (a tenth) of the overall density of the round: ``k_l / n_l < STARVED * k / n``.
Under sampling the kept count of a layer is random; its expectation under Poisson sampling with
``pi_i = min(1, lam w_i)``, ``sum pi = k`` (SPEC 3.1) stands in for it. Powers tried: 2, 1, 1/2,
then 0 (which never starves a layer).

Cost: one top-k selection and at most four Poisson budget solves per round, each one pass over
the scores, well below the scoring itself. Deterministic (no random draw). Scores only (the
scorer's own data, if any, already made them). With per-layer budgets (``scope="layer"`` or
``"erk"``) no layer can be starved, so the rule keeps top-k.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor

from sketchprune.inclusion import inclusion_probabilities
from sketchprune.selection import select

STARVED = 0.1
"""A layer keeping less than this fraction of the round's overall density is starved."""

POWERS = (2.0, 1.0, 0.5, 0.0)
"""Sampling powers tried, closest to top-k first; 0 (uniform) never starves a layer."""


def choose(scores: Mapping[str, Tensor], kept: int, sizes: Mapping[str, int], weights: Mapping[str, Tensor] | None = None,
           log_weights: bool = False) -> tuple[str, float, dict[str, Tensor]]:
    """``("topk", inf, top)`` or ``("sample", power, top)`` for selecting ``kept`` of the surviving
    weights; ``top`` is the top-k selection it judged (per non-empty layer), for the caller to keep.

    ``scores`` are each layer's survivor scores (flat), ``sizes`` each layer's full size,
    ``weights`` the non-negative sampling weights when they differ from the scores (signed
    scorers; ``log_weights`` when they are log-weights).
    """
    n = sum(sizes.values())
    floor = STARVED * kept / n
    live = {k: s for k, s in scores.items() if s.numel()}
    top = select(live, min(1.0, kept / sum(s.numel() for s in live.values())))
    if all(int(top[k].sum()) / sizes[k] >= floor for k in live):  # type: ignore[index]
        return "topk", math.inf, top  # type: ignore[return-value]
    logs = {k: (w if log_weights else w.double().log()) for k, w in (weights or scores).items() if w.numel()}
    top_log = max(float(v.max()) for v in logs.values())
    for power in POWERS:
        if power == 0:
            return "sample", 0.0, top  # type: ignore[return-value]
        w = {k: torch.exp(power * (v - top_log)) if top_log > -math.inf else torch.zeros_like(v)
             for k, v in logs.items()}
        pi = inclusion_probabilities(list(w.values()), kept)
        if all(float(pi(v).sum()) / sizes[k] >= floor for k, v in w.items()):
            return "sample", power, top  # type: ignore[return-value]
    raise AssertionError("unreachable: power 0 is always returned")
