"""The deterministic top-k engine behind ``select(mode="topk")`` and the exponential race.

:func:`largest_k` keeps the k largest keys over a list of 1-D pieces, ties at the threshold
broken by the lowest index, without a sort and without a full-size copy. Its paths, each
chosen by size and measured in ``benchmarks/bench_select.py``:

* one small set: one ``kthvalue`` (:func:`_keep_largest`);
* several small pieces (a network's layers): merged into one key tensor first;
* up to :data:`CACHE_LIMIT` keys: a sample bracket (Floyd & Rivest) in one comparison pass;
* otherwise (or when the bracket misses): a radix select on the keys' bits, 16 bits a pass.

Above :data:`CACHE_LIMIT` keys, an application may call :func:`pin_mmap_threshold` first to keep
resident memory flat (glibc; the library never retunes the allocator by itself).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

FINISH_LIMIT = 1 << 16
"""Sets, radix buckets and bracket bands of at most this many elements are finished by one
k-th value selection."""

MERGE_LIMIT = 1 << 21
"""Sets of at most this many elements spread over several pieces are merged into one key tensor."""

CACHE_LIMIT = 1 << 27
"""Keys of at most this many elements in total are kept between passes; larger sets are recomputed."""

BRACKET = True
"""Try the sample-bracket select before the radix passes (sets of at most CACHE_LIMIT elements)."""

_DIGIT = 16
_MASK = (1 << _DIGIT) - 1


def ordered_int(x: Tensor) -> Tensor:
    """Map float32/float64 ``x`` to integers with the same order (-0.0 is mapped like +0.0)."""
    if x.dtype == torch.float32:
        i = x.contiguous().view(torch.int32)
        sign_free = 0x7FFFFFFF
        bits = 32
    elif x.dtype == torch.float64:
        i = x.contiguous().view(torch.int64)
        sign_free = 0x7FFFFFFFFFFFFFFF
        bits = 64
    else:  # pragma: no cover - callers convert first
        raise TypeError(f"ordered_int needs float32 or float64, got {x.dtype}")
    i = i.masked_fill(i == torch.iinfo(i.dtype).min, 0)  # -0.0 -> +0.0 (also the one full-size copy)
    flip = i >> (bits - 1)
    flip &= sign_free
    return i.bitwise_xor_(flip)


def pin_mmap_threshold(threshold_bytes: int = 1 << 20) -> bool:
    """Opt-in, process-wide: pin glibc's mmap threshold, so freed large temporaries go back to the
    system. Returns False (and changes nothing) where the C library is not glibc.

    The library never calls this: it retunes the allocator of the whole process, which is the
    application's choice. It helps selections over more than :data:`CACHE_LIMIT` scores (keys
    recomputed per piece): their passes free and reallocate piece-sized temporaries hundreds of
    times, glibc then raises its dynamic threshold and serves them from a heap that fragments, and
    resident memory grows with the number of pieces. Measured with
    ``benchmarks/bench_fastpaths.py --parts mallopt`` (top-k of float32 scores at density 0.1, one
    thread, fresh process per run; peak extra resident memory, the 1-byte-per-score mask included):
    2e8 scores (763 MB) 0.96-1.1 GB unpinned vs 265 MB pinned, 5e8 scores (1.9 GB) 2.4-3.6 GB vs
    550 MB, and unpinned the process still holds nearly all of it after the call; pinned runs took
    1.1-3x the time on a shared 2-core machine (freed pages are faulted in again).
    """
    try:
        import ctypes
        import ctypes.util

        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(-3, int(threshold_bytes)))  # M_MMAP_THRESHOLD; mallopt returns 1 on success
    except (OSError, AttributeError):  # not glibc: nothing to tune
        return False


class _Keys:
    """Order-preserving integer keys of each piece, cached when small enough, else recomputed."""

    def __init__(self, count: int, make: Callable[[int], Tensor], cache: bool) -> None:
        self.count = count
        self._make = make
        self._cache: list[Tensor | None] | None = [None] * count if cache else None

    def __getitem__(self, j: int) -> Tensor:
        if self._cache is None:
            return ordered_int(self._make(j))
        if self._cache[j] is None:
            self._cache[j] = ordered_int(self._make(j))
        return self._cache[j]  # type: ignore[return-value]


def largest_k(
    sizes: Sequence[int], make_key: Callable[[int], Tensor], k: int, outs: Sequence[Tensor]
) -> None:
    """Set ``outs[j]`` (bool pieces) to keep the ``k`` largest keys over all pieces.

    ``make_key(j)`` returns the float keys of piece ``j``; it is called again per pass for big
    sets, so it must be deterministic. Ties at the threshold keep the lowest indices first,
    so exactly ``k`` are kept whatever the ties.
    """
    total = sum(sizes)
    if k <= 0 or k >= total:
        for o in outs:
            o.fill_(k >= total and total > 0)
        return
    if len(sizes) > 1 and total <= MERGE_LIMIT:
        # many small tensors (a network's layers): one flat key tensor saves a Python loop per pass
        flat_keys = torch.cat([make_key(j).reshape(-1) for j in range(len(sizes))])
        flat_out = torch.zeros(total, dtype=torch.bool, device=flat_keys.device)
        largest_k([total], lambda _: flat_keys, k, [flat_out])
        for o, part in zip(outs, flat_out.split(list(sizes))):
            o.copy_(part)
        return
    if len(sizes) == 1 and total <= FINISH_LIMIT:  # one selection pass: same rule, less overhead
        outs[0].copy_(_keep_largest(make_key(0).reshape(-1), k).view(outs[0].shape))
        return
    if BRACKET and total <= CACHE_LIMIT and _bracket_select(sizes, [make_key(j).reshape(-1) for j in range(len(sizes))], k, outs):
        return
    keys = _Keys(len(sizes), make_key, cache=total <= CACHE_LIMIT)
    digits = 4 if keys[0].dtype == torch.int64 else 2
    need = k
    prefix = 0  # value of (key >> shift) shared by all remaining candidates
    for level in range(digits):
        shift = _DIGIT * (digits - 1 - level)
        hist = None
        for j in range(keys.count):
            kj = keys[j]
            if level > 0:
                kj = kj[(kj >> (shift + _DIGIT)) == prefix]
            d = kj >> shift
            d = d + (1 << (_DIGIT - 1)) if level == 0 else d & _MASK
            h = torch.bincount(d, minlength=1 << _DIGIT)
            hist = h if hist is None else hist + h
        above = hist.flip(0).cumsum(0)
        pos = int(torch.searchsorted(above, torch.tensor([need], device=above.device)).item())
        digit = (1 << _DIGIT) - 1 - pos
        need -= int(above[pos].item()) - int(hist[digit].item())
        prefix = digit - (1 << (_DIGIT - 1)) if level == 0 else (prefix << _DIGIT) | digit
        bucket = int(hist[digit].item())
        if bucket <= FINISH_LIMIT:
            break
    # keep every key whose top bits exceed the bucket; choose `need` of the bucket's members:
    # by one k-th value selection when the bucket is small, else (all digits resolved: equal
    # keys) in index order
    winners: list[Tensor] = []
    if bucket <= FINISH_LIMIT:
        vals, idx, start = [], [], 0
        for j in range(keys.count):
            kj = keys[j]
            sel = torch.nonzero((kj >> shift) == prefix).squeeze(1)
            vals.append(kj[sel])
            idx.append(sel + start)
            start += sizes[j]
        winners = [torch.cat(idx)[_keep_largest(torch.cat(vals), need)]]
        need = 0
    start = 0
    for j in range(keys.count):
        kj = keys[j]
        top = kj >> shift
        keep = top > prefix
        if need > 0:  # many exact ties: the first `need` in index order
            tie = top == prefix
            first = torch.nonzero(tie).squeeze(1)[:need]
            keep[first] = True
            need -= first.numel()
        for w in winners:
            local = w[(w >= start) & (w < start + sizes[j])] - start
            keep[local] = True
        outs[j].copy_(keep)
        start += sizes[j]


def _keep_largest(vals: Tensor, need: int) -> Tensor:
    """Bool mask of the ``need`` largest entries of 1-D ``vals``; ties at the threshold keep the
    lowest indices first (the rule of a stable descending sort, in O(n): one ``kthvalue``)."""
    out = torch.zeros(vals.numel(), dtype=torch.bool, device=vals.device)
    if need <= 0 or need >= vals.numel():
        return out.fill_(need > 0)
    v = torch.kthvalue(vals, vals.numel() - need + 1).values
    torch.gt(vals, v, out=out)
    short = need - int(torch.count_nonzero(out))
    if short:
        out[torch.nonzero(vals == v).squeeze(1)[:short]] = True
    return out


def _bracket_select(sizes: Sequence[int], keys: Sequence[Tensor], k: int, outs: Sequence[Tensor]) -> bool:
    """Sample-bracket select (Floyd & Rivest 1975): the radix result in one pass over the keys.

    A random sample brackets the k-th largest key between two sample values ``lo <= hi``.
    One comparison pass per piece keeps the keys above ``hi`` and collects the candidates: the
    keys in ``[lo, hi]``, or (when few are kept or few are dropped) the whole smaller side. One
    k-th value selection in the bracket finishes (ties: lowest index first); a band bigger than
    ``FINISH_LIMIT`` is bracketed again, in index order, by ``largest_k``. The sample
    (fixed generator) only decides the bracket, never the result. Returns False, with ``outs``
    partly written, in the rare case that the bracket misses the k-th key.
    """
    total = sum(sizes)
    device = keys[0].device
    m = min(total, 1 << 15)
    pos = torch.randint(total, (m,), generator=torch.Generator().manual_seed(0x5EED)).to(device)
    starts = [0]
    for n in sizes:
        starts.append(starts[-1] + n)
    piece = torch.searchsorted(torch.tensor(starts[1:], device=device), pos, right=True)
    sample = torch.cat([keys[j][pos[piece == j] - starts[j]] for j in range(len(keys))])
    q, spread = k * m / total, 4 * math.sqrt(m * (k / total) * (1 - k / total)) + 16

    def sample_rank(i: int) -> float:  # the sample's (i+1)-th largest: one O(m) selection, no sort
        return float(torch.kthvalue(sample, m - i).values)

    hi = sample_rank(int(q - spread)) if q - spread >= 0 else math.inf
    lo = sample_rank(int(q + spread)) if q + spread < m else -math.inf
    side = "many" if total - k <= total // 8 else "few" if k <= total // 8 else "band"
    cand, kept_outside = [], 0
    for kj, o in zip(keys, outs):
        if side == "few":  # candidates: every key >= lo; nothing kept outside them
            cand.append(torch.nonzero(kj >= lo).squeeze(1))
            o.zero_()
            continue
        torch.gt(kj, hi, out=o)
        if side == "many":  # candidates: every key <= hi
            cand.append(torch.nonzero(~o).squeeze(1))
            kept_outside += o.numel() - cand[-1].numel()
        else:
            cand.append(torch.nonzero((kj >= lo) ^ o).squeeze(1))
            kept_outside += int(torch.count_nonzero(o))
    vals = torch.cat([kj[c] for kj, c in zip(keys, cand)])
    sure = vals > hi
    band = torch.nonzero((vals >= lo) & ~sure).squeeze(1)
    need = k - kept_outside - int(torch.count_nonzero(sure))
    if not 0 <= need <= band.numel():
        return False
    band_vals = vals[band]
    if band.numel() < total:  # the band, in index order, selected again (small ones are finished there)
        pick = torch.zeros(band.numel(), dtype=torch.bool, device=device)
        largest_k([band.numel()], lambda _: band_vals, need, [pick])
    else:  # no progress (the keys are equal around the k-th): finish directly
        pick = _keep_largest(band_vals, need)
    sure[band[pick]] = True
    for o, c, w in zip(outs, cand, sure.split([c.numel() for c in cand])):
        o[c[w]] = True
    return True
