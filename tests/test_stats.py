"""Statistics (stats.py): t quantiles, paired differences and the sign test by hand, ranks and Spearman."""

import math
import statistics

import pytest
import torch

from sketchprune import stats
from sketchprune.stats import ranks, spearman


def test_t_quantiles_match_scipy():
    from scipy.stats import t

    for df in (1, 2, 4, 9, 29, 30, 31, 45, 100, 1000):
        assert stats.t975(df) == pytest.approx(t.ppf(0.975, df), abs=1e-3 if df <= 30 else 1e-5)


def test_paired_difference_by_hand():
    a, b = {0: 0.50, 1: 0.60, 2: 0.55, 7: 0.9}, {0: 0.40, 1: 0.45, 2: 0.50}
    d = stats.paired(a, b)
    diffs = [0.10, 0.15, 0.05]
    half = 4.303 * statistics.stdev(diffs) / math.sqrt(3)
    assert d["pairs"] == 3 and d["diff"] == pytest.approx(0.10) and d["ci"] == pytest.approx(half, rel=1e-6)
    assert d["verdict"] == (1 if 0.10 - half > 0 else 0)
    assert stats.paired({0: 0.1}, {1: 0.2}) is None
    assert stats.paired({0: 0.1, 1: 0.2, 2: 0.15}, {0: 0.3, 1: 0.35, 2: 0.32})["verdict"] == -1


def test_sign_test_by_hand():
    assert stats.sign_test(16, 16) == pytest.approx(2**-16)
    assert stats.sign_test(12, 16) == pytest.approx(sum(math.comb(16, k) for k in range(12, 17)) / 2**16)
    assert stats.sign_test(0, 5) == 1.0


def test_spearman_and_ranks():
    assert ranks(torch.tensor([10.0, 20.0, 20.0, 5.0])).tolist() == [2.0, 3.5, 3.5, 1.0]
    x = torch.randn(50, generator=torch.Generator().manual_seed(0))
    assert spearman(x, x.exp()) == pytest.approx(1.0)
    assert spearman(x, -x) == pytest.approx(-1.0)
