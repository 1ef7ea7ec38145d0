"""Random draws behind :func:`sketchprune.select` and :mod:`sketchprune.sketch`.

Everything works on a list of 1-D pieces (:mod:`sketchprune.pieces`); the deterministic top-k
over pieces is :mod:`sketchprune.topk`, the Poisson budget solver :mod:`sketchprune.inclusion`:

* :func:`piece_generators` gives each piece its own generator, seeded from the caller's, so
  results depend on the seed alone, never on memory settings;
* :func:`uniform`, :func:`gumbel` and :func:`replayable_gumbel` draw per-piece noise;
* :func:`draw_iid` draws indices with replacement by inverse CDF (no 2^24 category limit).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

SCHEMES = ("iid", "poisson", "exact")
"""How a sample is drawn: iid (with replacement), poisson (each kept independently), exact (exactly k)."""


def piece_generators(generator: torch.Generator | None, count: int, device: torch.device) -> list[torch.Generator]:
    """One generator per piece, each seeded by a draw from ``generator`` (the global RNG if None)."""
    src_device = generator.device if generator is not None else torch.device("cpu")
    seeds = torch.randint(0, 2**62, (count,), generator=generator, device=src_device).tolist()
    return [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]


def uniform(piece: Tensor, generator: torch.Generator) -> Tensor:
    """Uniform draws in (0, 1) shaped like ``piece`` (never exactly 0, so logs stay finite)."""
    u = torch.rand(piece.shape, generator=generator, device=piece.device, dtype=piece.dtype)
    return u.clamp_min_(torch.finfo(piece.dtype).tiny)


def gumbel(piece: Tensor, generator: torch.Generator) -> Tensor:
    """Standard Gumbel noise ``-log(E)``, ``E ~ Exp(1)``, shaped like ``piece``."""
    return uniform(piece, generator).log_().neg_().log_().neg_()


def replayable_gumbel(gens: Sequence[torch.Generator]) -> Callable[[Tensor, int], Tensor]:
    """``noise(like, j)``: Gumbel noise for piece ``j`` that is identical on every call, so keys
    recomputed in a later pass of :func:`largest_k` agree with the first."""

    def noise(like: Tensor, j: int) -> Tensor:
        return gumbel(like, torch.Generator(device=like.device).set_state(gens[j].get_state()))

    return noise


def draw_iid(weights: Sequence[Tensor], count: int, generator: torch.Generator | None) -> Tensor:
    """Draw ``count`` global indices i.i.d. with probability proportional to ``weights`` (pieces).

    Inverse-CDF sampling with float64 cumulative sums, so any number of categories works.
    Returns int64 indices in draw order.
    """
    device = weights[0].device
    totals = torch.stack([w.sum(dtype=torch.float64) for w in weights])
    piece_cdf = totals.cumsum(0)
    grand = piece_cdf[-1]
    if not bool(grand > 0):
        raise ValueError("all sampling weights are zero")
    u = torch.rand(count, generator=generator, device=generator.device if generator else device, dtype=torch.float64)
    u = u.to(device) * grand
    which = torch.searchsorted(piece_cdf, u, right=True).clamp_(max=len(weights) - 1)
    starts = [0]
    for w in weights[:-1]:
        starts.append(starts[-1] + w.numel())
    out = torch.empty(count, dtype=torch.int64, device=device)
    for j, w in enumerate(weights):
        sel = which == j
        if not bool(sel.any()):
            continue
        local = u[sel] - (piece_cdf[j - 1] if j else 0.0)
        cdf = w.double().cumsum(0)
        idx = torch.searchsorted(cdf, local, right=True).clamp_(max=w.numel() - 1)
        # land on a positive weight even when rounding puts the draw on a zero-weight neighbour
        idx = _nearest_positive(w, idx)
        out[sel] = idx + starts[j]
    return out


def _nearest_positive(w: Tensor, idx: Tensor) -> Tensor:
    """Move indices that hit a zero weight (a float rounding edge) back to the previous positive one."""
    bad = w[idx] <= 0
    if not bool(bad.any()):
        return idx
    positive_pos = torch.nonzero(w > 0).squeeze(1)
    j = torch.searchsorted(positive_pos, idx[bad], right=True) - 1
    idx = idx.clone()
    idx[bad] = positive_pos[j.clamp_(min=0)]
    return idx
