"""Sketching core: exact formulas against hand computations and Monte Carlo (SPEC 3.1)."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sketchprune import SketchpruneError, sketch
from sketchprune.theory.e1_sketch import make_case

Z = 4.0  # |MC mean - exact| <= Z * standard error; with fixed generators the outcome is deterministic


def mc_errors(A, B, budget, probs, scheme, trials, gen):
    exact = A @ B
    return torch.tensor(
        [float(((exact - sketch.matmul(A, B, budget, probs=probs, scheme=scheme, generator=gen)) ** 2).sum())
         for _ in range(trials)],
        dtype=torch.float64,
    )


def test_hand_computed_tiny_case():
    # A = diag(1, 2), B = [[3], [4]]: a = (1, 2), b = (3, 4), a_i b_i = (3, 8), AB = [[3], [8]]
    A = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
    B = torch.tensor([[3.0], [4.0]], dtype=torch.float64)
    p = sketch.optimal_probs(A, B)
    assert torch.allclose(p, torch.tensor([3 / 11, 8 / 11], dtype=torch.float64))
    # iid, c = 1: (sum a^2 b^2 / p - ||AB||^2) = (9 * 11/3 + 64 * 11/8) - 73 = 33 + 88 - 73 = 48
    assert sketch.expected_error(A, B, 1) == pytest.approx(48.0)
    assert sketch.expected_error(A, B, 4) == pytest.approx(12.0)
    # uniform, c = 1: 2 * (9 + 64) - 73 = 73
    assert sketch.expected_error(A, B, 1, probs="uniform") == pytest.approx(73.0)
    # poisson, k = 1 with weights (3, 8)/11: pi = (3/11, 8/11); sum (1-pi)/pi t^2 = 8/3*9 + 3/8*64 = 24 + 24
    assert sketch.expected_error(A, B, 1, scheme="poisson") == pytest.approx(48.0)
    # poisson, k = 2: every term kept with pi = 1: no error
    assert sketch.expected_error(A, B, 2, scheme="poisson") == pytest.approx(0.0)
    # optimal value (sum a b)^2 - ||AB||^2 = 121 - 73 = 48 equals the bound with beta = 1
    assert sketch.nearly_optimal_bound(A, B, 1, 1.0) == pytest.approx(48.0)


@pytest.mark.parametrize("case", ["gaussian", "heavy"])
@pytest.mark.parametrize("scheme", ["iid", "poisson", "exact"])
@pytest.mark.parametrize("probs", ["optimal", "uniform"])
def test_expected_error_matches_monte_carlo(case, scheme, probs):
    gen = torch.Generator().manual_seed(7)
    A, B = make_case(case, 8, 40, 5, gen)
    budget = 10
    errs = mc_errors(A, B, budget, probs, scheme, 3000, gen)
    exact = sketch.expected_error(A, B, budget, probs=probs, scheme=scheme)
    se = float(errs.std()) / math.sqrt(errs.numel())
    assert abs(float(errs.mean()) - exact) <= Z * se, (float(errs.mean()), exact, se)


@pytest.mark.parametrize("scheme", ["iid", "poisson", "exact"])
def test_sketch_is_unbiased(scheme):
    gen = torch.Generator().manual_seed(3)
    A, B = make_case("heavy", 6, 30, 4, gen)
    trials = 4000
    ests = torch.stack([sketch.matmul(A, B, 8, scheme=scheme, generator=gen) for _ in range(trials)])
    se = ests.std(0) / math.sqrt(trials)
    dev = (ests.mean(0) - A @ B).abs()
    assert bool((dev <= Z * se + 1e-9).all()), float((dev / se).max())


def test_optimal_beats_uniform_and_poisson_beats_iid_on_heavy_tails():
    gen = torch.Generator().manual_seed(0)
    A, B = make_case("heavy", 20, 300, 10, gen)
    for k in (10, 50, 150):
        opt = sketch.expected_error(A, B, k)
        assert opt < sketch.expected_error(A, B, k, probs="uniform")
        assert sketch.expected_error(A, B, k, scheme="poisson") < opt
    # the optimum is (sum a b)^2 - ||AB||^2 over c
    a, b = sketch.term_norms(A, B)
    ab2 = float(torch.linalg.matrix_norm(A @ B) ** 2)
    assert sketch.expected_error(A, B, 7) == pytest.approx((float((a * b).sum()) ** 2 - ab2) / 7, rel=1e-9)


def test_nearly_optimal_bound_holds_and_beta_is_min_ratio():
    gen = torch.Generator().manual_seed(1)
    A, B = make_case("heavy", 10, 50, 3, gen)
    opt = sketch.optimal_probs(A, B)
    mixed = 0.5 * opt + 0.5 / 50
    beta = sketch.beta(mixed, opt)
    assert beta == pytest.approx(float((mixed / opt).min()))
    for c in (1, 5, 20):
        assert sketch.expected_error(A, B, c, probs=mixed) <= sketch.nearly_optimal_bound(A, B, c, beta) + 1e-9


@settings(max_examples=300, deadline=None)
@given(
    w=st.lists(st.floats(0, 1e6, allow_nan=False, allow_subnormal=False), min_size=1, max_size=40).filter(lambda w: sum(w) > 0),
    frac=st.floats(0.01, 1.0),
)
def test_inclusion_probs_sum_to_budget(w, frac):
    w = torch.tensor(w, dtype=torch.float64)
    positive = int((w > 0).sum())
    k = max(1e-3, frac * w.numel())
    pi = sketch.inclusion_probs(w, k)
    assert bool((pi >= 0).all()) and bool((pi <= 1).all())
    assert float(pi.sum()) == pytest.approx(k, rel=1e-9, abs=1e-9)
    if k <= positive:  # pi = min(1, lam w): proportional below the cap
        free = (pi < 1) & (w > float(w.max()) * 1e-300)  # ratios below that are subnormal after scaling
        if int(free.sum()) > 1:
            ratio = pi[free] / w[free]
            assert float(ratio.max() - ratio.min()) <= 1e-9 * float(ratio.max())


def test_float32_and_vector_b():
    gen = torch.Generator().manual_seed(2)
    X = torch.randn(50, 20, generator=gen)
    w = torch.randn(20, generator=gen)
    est = sketch.matmul(X, w, 10, scheme="poisson", generator=gen)
    assert est.shape == (50,) and est.dtype == torch.float32
    assert sketch.expected_error(X, w, 10) > 0


@pytest.mark.parametrize(
    "call, msg",
    [
        (lambda A, B: sketch.matmul(A, B[:3], 2), "inner dimensions"),
        (lambda A, B: sketch.matmul(A, B, 0), "budget"),
        (lambda A, B: sketch.matmul(A, B, 2, scheme="nope"), "unknown scheme"),
        (lambda A, B: sketch.matmul(A, B, 2, probs="nope"), "unknown probs"),
        (lambda A, B: sketch.matmul(A, B, 2, probs=torch.zeros(5)), "sum to zero"),
        (lambda A, B: sketch.matmul(A, B, 2, probs=torch.tensor([1.0, 0, 0, 0, 0])), "biased"),
        (lambda A, B: sketch.matmul(A * float("nan"), B, 2), "NaN"),
        (lambda A, B: sketch.expected_error(A, B, 1, scheme="exact"), "infinite variance"),
    ],
)
def test_bad_input_is_one_line_error(call, msg):
    A, B = torch.ones(3, 5), torch.ones(5, 2)
    with pytest.raises(SketchpruneError, match=msg) as e:
        call(A, B)
    assert "\n" not in str(e.value)
