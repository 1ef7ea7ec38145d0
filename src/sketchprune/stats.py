"""Statistics of run results: means with t confidence intervals, paired differences over seeds, and
Spearman rank correlations."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

import torch
from torch import Tensor

# two-sided 95 % quantiles of Student's t, t_{0.975, df}, for df = 1 .. 30 (beyond: the Cornish-Fisher
# expansion in 1/df around the normal quantile, within 1e-5 from df = 30 on)
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042)


def t975(df: int) -> float:
    """The two-sided 95 % quantile of Student's t with ``df`` degrees of freedom (df >= 1)."""
    if df < 1:
        return math.inf
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959963984540054
    return (z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)
            + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * df**3))


def mean_ci(values: Sequence[float]) -> tuple[float, float]:
    """(mean, half-width of its 95 % t confidence interval); the half-width is inf for one value."""
    n = len(values)
    m = statistics.fmean(values)
    if n < 2:
        return m, math.inf
    return m, t975(n - 1) * statistics.stdev(values) / math.sqrt(n)


def paired(a: dict[int, float], b: dict[int, float]) -> dict[str, float] | None:
    """The paired difference ``a - b`` over the seeds both have: mean, 95 % CI, number of pairs and
    the verdict ``+1`` / ``-1`` when the interval excludes 0 (``0`` otherwise); None without pairs."""
    seeds = sorted(set(a) & set(b))
    if not seeds:
        return None
    d = [a[s] - b[s] for s in seeds]
    m, h = mean_ci(d)
    lo, hi = m - h, m + h
    return {"diff": m, "ci": h, "lo": lo, "hi": hi, "pairs": len(d), "verdict": 1 if lo > 0 else -1 if hi < 0 else 0}


def sign_test(wins: int, n: int) -> float:
    """One-sided p-value of ``wins`` or more successes out of ``n`` fair coin flips (the sign test)."""
    return sum(math.comb(n, k) for k in range(wins, n + 1)) / 2**n


def ranks(x: Tensor) -> Tensor:
    """Average ranks (1-based) of a 1-D tensor, ties sharing their mean rank."""
    x = x.double().reshape(-1)
    order = torch.argsort(x, stable=True)
    r = torch.empty_like(x)
    r[order] = torch.arange(1, x.numel() + 1, dtype=torch.float64)
    uniq, inv = torch.unique(x, return_inverse=True)
    if uniq.numel() < x.numel():  # average the ranks within ties
        sums = torch.zeros(uniq.numel(), dtype=torch.float64).index_add_(0, inv, r)
        counts = torch.bincount(inv, minlength=uniq.numel()).double()
        r = (sums / counts)[inv]
    return r


def spearman(a: Tensor, b: Tensor) -> float:
    """Spearman rank correlation of two equally long tensors (0 when either is constant)."""
    ra, rb = ranks(a), ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = float(ra.norm() * rb.norm())
    return float((ra * rb).sum()) / den if den > 0 else 0.0
