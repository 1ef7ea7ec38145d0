"""Random draws behind :func:`sketchprune.select` and :mod:`sketchprune.sketch`.

Everything works on a list of 1-D *pieces* (flat views of the score tensors, cut into chunks
of at most :data:`PIECE` elements), so a selection over many tensors never concatenates them
and a selection over 10^9 scores needs only chunk-sized temporaries (the deterministic top-k
over pieces is :mod:`sketchprune.topk`):

* :func:`piece_generators` gives each piece its own generator, seeded from the caller's, so
  results depend on the seed alone, never on memory settings;
* :func:`inclusion_probabilities` solves the Poisson budget ``sum_i min(1, lam w_i) = k``;
* :func:`draw_iid` draws indices with replacement by inverse CDF (no 2^24 category limit).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

PIECE = 1 << 22
"""Elements per piece. Fixed, because per-piece random streams make results depend on it."""


def split(tensors: Sequence[Tensor]) -> list[Tensor]:
    """Cut flat views of ``tensors`` (in order) into pieces of at most :data:`PIECE` elements."""
    pieces: list[Tensor] = []
    for t in tensors:
        flat = t.reshape(-1)
        pieces.extend(flat.split(PIECE))
    return pieces


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


def inclusion_probabilities(weights: Sequence[Tensor], k: float, max_rounds: int = 200) -> Callable[[Tensor], Tensor]:
    """Solve ``sum_i pi_i = k`` for Poisson sampling with ``pi_i = min(1, lam * w_i)``.

    ``weights`` are non-negative pieces. Returns a function mapping a weight piece to its
    inclusion probabilities. If fewer than ``k`` weights are positive, every positive weight
    gets ``pi = 1`` and the rest of the budget is spread evenly over the zero weights.
    Water-filling: ``lam = (k - #capped) / (sum of uncapped w)``, repeated until the capped set
    stops growing (it only grows, so this ends; usually in a handful of rounds).
    """
    positive = sum(int((w > 0).sum().item()) for w in weights)
    total = sum(w.numel() for w in weights)
    if k >= positive:
        zeros = total - positive
        fill = (k - positive) / zeros if zeros else 0.0
        return lambda w: torch.where(w > 0, torch.ones_like(w), torch.full_like(w, min(1.0, fill)))
    cut = math.inf  # weights >= cut are capped at pi = 1
    n_cap = 0
    for _ in range(max_rounds):
        # scale the uncapped weights by a power of two near their max: lam stays <= k, never overflows
        top = max(float(w[w < cut].max().item()) if bool((w < cut).any()) else 0.0 for w in weights)
        scale = 2.0 ** math.floor(math.log2(top))
        rest = sum(float((w[w < cut].double() / scale).sum().item()) for w in weights)
        lam = (k - n_cap) / rest
        new_cut = scale / lam
        n_new = sum(int((w >= new_cut).sum().item()) for w in weights)
        if n_new == n_cap:
            break
        n_cap, cut = n_new, new_cut
        if n_cap >= k:  # the capped weights alone fill the budget
            lam = 0.0
            break

    def pi(w: Tensor) -> Tensor:
        free = (w.double() / scale * lam).clamp_(max=1.0)
        return torch.where(w >= cut, torch.ones_like(free), free).to(w.dtype)

    return pi


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
