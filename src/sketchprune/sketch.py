"""Approximate matrix multiplication by sampling (Drineas, Kannan & Mahoney 2006; SPEC 3.1).

``A @ B = sum_i A[:, i] B[i, :]``: a sum of n rank-one terms. A sketch keeps some terms and
rescales them so the estimate is unbiased. Two schemes:

* ``"iid"``: ``c = budget`` draws with replacement with probabilities ``p``;
  ``d_i = count_i / (c p_i)`` and ``E||AB - A D B||_F^2 = (sum_i a_i^2 b_i^2 / p_i - ||AB||_F^2) / c``.
* ``"poisson"``: keep term i independently with ``pi_i = min(1, lam p_i)``, ``sum pi = budget``;
  ``d_i = keep_i / pi_i`` and ``E||.||_F^2 = sum_i (1 - pi_i) / pi_i * a_i^2 b_i^2``.
* ``"exact"``: keep exactly ``budget`` terms by the exponential race (keys ``E_i / p_i``, the k
  smallest win). With ``tau`` the (k+1)-th smallest key, ``d_i = 1 / (1 - exp(-p_i tau))``
  (rank conditioning, Cohen & Kaplan 2007) makes it unbiased, and these weights are uncorrelated,
  so ``E||.||_F^2 = sum_i Var(d_i) a_i^2 b_i^2`` with ``Var(d_i) = E[e^{-p_i t}/(1 - e^{-p_i t})]``,
  ``t`` the k-th smallest key among the other terms: one integral per term, computed by
  quadrature over the Poisson-binomial law of the keys (:func:`exact_k_variances`; k >= 2).

``a_i = ||A[:, i]||``, ``b_i = ||B[i, :]||``. The optimal probabilities are ``p_i ∝ a_i b_i``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from sketchprune import sampling
from sketchprune.inclusion import inclusion_probabilities
from sketchprune.pieces import split
from sketchprune.errors import SketchpruneError, check, check_finite

SCHEMES = sampling.SCHEMES


def _operands(A: Tensor, B: Tensor) -> tuple[Tensor, Tensor]:
    check(A.dim() == 2, f"A must be a matrix (m x n), got shape {tuple(A.shape)}")
    B2 = B.unsqueeze(1) if B.dim() == 1 else B
    check(B2.dim() == 2, f"B must be a vector or a matrix (n x p), got shape {tuple(B.shape)}")
    check(
        A.shape[1] == B2.shape[0],
        f"inner dimensions differ: A is {tuple(A.shape)}, B is {tuple(B.shape)}; A's columns must match B's rows",
    )
    check(A.shape[1] > 0, "A and B have no terms (n = 0); pass non-empty matrices")
    check_finite(A, "A")
    check_finite(B2, "B")
    return A, B2


def term_norms(A: Tensor, B: Tensor) -> tuple[Tensor, Tensor]:
    """``(a, b)`` with ``a_i = ||A[:, i]||_2`` and ``b_i = ||B[i, :]||_2`` (B may be a vector)."""
    A, B2 = _operands(A, B)
    return torch.linalg.vector_norm(A, dim=0), torch.linalg.vector_norm(B2, dim=1)


def optimal_probs(A: Tensor, B: Tensor) -> Tensor:
    """``p_i = a_i b_i / sum_j a_j b_j``; uniform when every term is zero (any p is then exact)."""
    a, b = term_norms(A, B)
    w = a * b
    total = w.sum()
    if not bool(total > 0):
        return torch.full_like(w, 1.0 / w.numel())
    return w / total


def _resolve_probs(A: Tensor, B: Tensor, probs: str | Tensor) -> Tensor:
    n = A.shape[1]
    if isinstance(probs, str):
        if probs == "optimal":
            return optimal_probs(A, B)
        if probs == "uniform":
            return torch.full((n,), 1.0 / n, dtype=A.dtype, device=A.device)
        raise SketchpruneError(f"unknown probs {probs!r}; use 'optimal', 'uniform' or a tensor of n weights")
    check(probs.dim() == 1 and probs.numel() == n, f"probs must be a vector of length n={n}, got {tuple(probs.shape)}")
    check_finite(probs, "probs")
    check(not bool((probs < 0).any()), "probs must be non-negative")
    total = probs.sum()
    check(bool(total > 0), "probs sum to zero; give at least one positive probability")
    a, b = term_norms(A, B)
    uncovered = (probs <= 0) & (a * b > 0)
    check(
        not bool(uncovered.any()),
        f"probs are zero for {int(uncovered.sum())} nonzero terms, so the sketch would be biased; "
        "give every term with a_i b_i > 0 a positive probability",
    )
    return (probs / total).to(A.dtype)


def _check_scheme_budget(scheme: str, budget: float, n: int) -> None:
    check(scheme in SCHEMES, f"unknown scheme {scheme!r}; use 'iid', 'poisson' or 'exact'")
    if scheme == "exact":
        check(float(budget) == int(budget) and 1 <= budget <= n, f"exact budget is a count in [1, n={n}], got {budget}")
    elif scheme == "iid":
        check(float(budget) == int(budget) and budget >= 1, f"iid budget is a number of draws c >= 1, got {budget}")
    else:
        check(0 < budget <= n, f"poisson budget is the expected number kept, in (0, n={n}], got {budget}")


def inclusion_probs(weights: Tensor, k: float) -> Tensor:
    """Poisson inclusion probabilities ``pi_i = min(1, lam w_i)`` with ``sum_i pi_i = k``."""
    flat = weights.reshape(-1)
    check(0 < k <= flat.numel(), f"expected count k must be in (0, {flat.numel()}], got {k}")
    return inclusion_probabilities(split([flat]), k)(flat).reshape(weights.shape)


def sketch_weights(
    A: Tensor, B: Tensor, budget: float, *, probs: str | Tensor = "optimal", scheme: str = "iid",
    generator: torch.Generator | None = None,
) -> Tensor:
    """The random diagonal ``d`` (length n) of the sketch ``A diag(d) B``; zero for dropped terms."""
    A, B2 = _operands(A, B)
    n = A.shape[1]
    _check_scheme_budget(scheme, budget, n)
    p = _resolve_probs(A, B2, probs)
    if scheme == "iid":
        c = int(budget)
        draws = sampling.draw_iid([p], c, generator)
        counts = torch.bincount(draws, minlength=n).to(p.dtype)
        return torch.where(counts > 0, counts / (c * p), torch.zeros_like(p))
    gen_device = generator.device if generator is not None else torch.device("cpu")
    u = torch.rand(n, generator=generator, device=gen_device, dtype=p.dtype).to(p.device)
    u = u.clamp_min(torch.finfo(p.dtype).tiny)
    if scheme == "exact":
        k = int(budget)
        if k == n:
            return torch.ones_like(p)
        race = -u.log() / p  # E_i / p_i; +inf for p_i = 0 (never kept)
        order = torch.argsort(race, stable=True)
        tau = race[order[k]]
        d = torch.zeros_like(p)
        kept = order[:k]
        pk = p[kept]
        safe = torch.where(pk > 0, pk, torch.ones_like(pk))  # zero-probability terms are zero terms
        d[kept] = torch.where(pk > 0, 1.0 / -torch.expm1(-safe * tau), torch.zeros_like(pk))
        return d
    pi = inclusion_probs(p, budget)
    keep = u < pi
    return torch.where(keep, 1.0 / pi.clamp_min(torch.finfo(p.dtype).tiny), torch.zeros_like(p))


def matmul(
    A: Tensor, B: Tensor, budget: float, *, probs: str | Tensor = "optimal", scheme: str = "iid",
    generator: torch.Generator | None = None,
) -> Tensor:
    """Unbiased sketch of ``A @ B`` keeping about ``budget`` of its n rank-one terms."""
    d = sketch_weights(A, B, budget, probs=probs, scheme=scheme, generator=generator)
    return (A * d) @ B


def expected_error(
    A: Tensor, B: Tensor, budget: float, *, probs: str | Tensor = "optimal", scheme: str = "iid"
) -> float:
    """Exact ``E||AB - estimate||_F^2`` for the given probabilities and scheme (computed in float64)."""
    A, B2 = _operands(A, B)
    n = A.shape[1]
    _check_scheme_budget(scheme, budget, n)
    p = _resolve_probs(A, B2, probs).double()
    a, b = (x.double() for x in term_norms(A, B2))
    t2 = (a * b) ** 2
    if scheme == "exact":
        k = int(budget)
        if k >= n:
            return 0.0
        check(k >= 2, "the exact-k sketch with k = 1 has infinite variance; use k >= 2")
        var = exact_k_variances(p, k)
        never = p <= 0  # terms never kept: their sum is a bias, added to the weights' variance
        bias = torch.linalg.matrix_norm(A.double()[:, never] @ B2.double()[never]) ** 2 if bool(never.any()) else 0.0
        return float((var * t2)[~never].sum().item() + float(bias))
    if scheme == "iid":
        ab = torch.linalg.matrix_norm(A.double() @ B2.double()) ** 2
        terms = torch.where(t2 > 0, t2 / p, torch.zeros_like(t2))
        return float(((terms.sum() - ab) / budget).clamp_min(0).item())
    pi = inclusion_probs(p, budget)
    terms = torch.where(t2 > 0, (1 - pi) / pi * t2, torch.zeros_like(t2))
    return float(terms.sum().item())


def exact_k_variances(p: Tensor, k: int, points: int = 1600, chunk: int = 200) -> Tensor:
    """``Var(d_i)`` of the exact-k sketch's weights (module docstring): ``E[g_i(t_i)]`` with
    ``g_i(t) = e^{-p_i t} / (1 - e^{-p_i t})`` and ``t_i`` the k-th smallest key ``E_j / p_j`` of the
    other terms. By parts, ``E[g_i(t_i)] = int_0^inf (-g_i'(t)) P(t_i <= t) dt``, and
    ``P(t_i <= t) = P(at least k other keys <= t)``, a Poisson-binomial tail (prefix and suffix
    dynamic programs over the terms leave term i out); the integral runs over a log-spaced grid
    (trapezoid in log t) from where that tail is negligible to where ``-g_i'`` is."""
    p = p.double() / p.double().sum()
    n = p.numel()
    pos = p[p > 0]
    lo = math.log(1e-4 * k / max(1.0, float(n)))
    hi = math.log(60.0 * max(k, 1) / float(pos.min()))
    u = torch.linspace(lo, hi, points, dtype=torch.float64)
    t = u.exp()
    out = torch.zeros(n, dtype=torch.float64)
    for start in range(0, points, chunk):
        tc = t[start:start + chunk]
        q = -torch.expm1(-p.view(-1, 1) * tc.view(1, -1))  # (n, T): P(key_j <= t)
        # suffix[j]: law of how many of the terms after j are below t, counts 0 .. k-1 (the rest dropped)
        suffix = torch.zeros(n + 1, len(tc), k, dtype=torch.float64)
        suffix[n, :, 0] = 1.0
        for j in range(n - 1, -1, -1):
            suffix[j] = suffix[j + 1] * (1 - q[j]).view(-1, 1)
            suffix[j, :, 1:] += suffix[j + 1, :, :-1] * q[j].view(-1, 1)
        suffix_cdf = suffix.cumsum(2)
        prefix = torch.zeros(len(tc), k, dtype=torch.float64)
        prefix[:, 0] = 1.0
        tail = torch.empty(n, len(tc), dtype=torch.float64)
        for i in range(n):  # P(at most k-1 of the others are below t) = sum_a prefix(a) suffix_cdf(k-1-a)
            below = (prefix * suffix_cdf[i + 1].flip(1)).sum(1)
            tail[i] = (1 - below).clamp_(0, 1)
            nxt = prefix * (1 - q[i]).view(-1, 1)
            nxt[:, 1:] += prefix[:, :-1] * q[i].view(-1, 1)
            prefix = nxt
        e = torch.exp(-p.view(-1, 1) * tc.view(1, -1))
        slope = p.view(-1, 1) * e / (-torch.expm1(-p.view(-1, 1) * tc.view(1, -1))).pow(2)  # -g'(t)
        integrand = slope * tail * tc.view(1, -1)  # dt = t du
        if start > 0:  # join this chunk's first point to the previous chunk's last
            integrand = torch.cat([last, integrand], 1)
            du = u[start - 1:start + chunk]
        else:
            du = u[start:start + chunk]
        out += torch.trapezoid(integrand, du, dim=1)
        last = integrand[:, -1:]
    return torch.where(p > 0, out, torch.zeros_like(out))


def beta(probs: Tensor, reference: Tensor) -> float:
    """``min_i probs_i / reference_i`` over ``reference_i > 0``: how nearly optimal ``probs`` are."""
    check(probs.shape == reference.shape, "probs and reference must have the same shape")
    pos = reference > 0
    check(bool(pos.any()), "reference probabilities are all zero")
    p = probs / probs.sum()
    r = reference / reference.sum()
    return float((p[pos] / r[pos]).min().item())


def nearly_optimal_bound(A: Tensor, B: Tensor, budget: int, beta_value: float) -> float:
    """DKM06 bound for i.i.d. sampling with ``p_i >= beta a_i b_i / sum_j a_j b_j``:
    ``(sum_i a_i b_i)^2 / (beta c) - ||AB||_F^2 / c``."""
    check(0 < beta_value <= 1, f"beta must be in (0, 1], got {beta_value}")
    check(budget >= 1, f"budget c must be >= 1, got {budget}")
    A, B2 = _operands(A, B)
    a, b = (x.double() for x in term_norms(A, B2))
    ab = torch.linalg.matrix_norm(A.double() @ B2.double()) ** 2
    s = (a * b).sum()
    return float((s**2 / (beta_value * budget) - ab / budget).item())
