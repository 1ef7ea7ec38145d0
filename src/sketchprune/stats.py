"""Statistics of run results: means with t confidence intervals and paired differences over seeds."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

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
