"""E7: structured sketching (SPEC 3.8): pruning hidden units is sampling the columns of a product.

A 2-layer ReLU network ``z = W2 relu(W1 x)`` with the first layer and the data fixed: the next
layer's input over the batch, ``Z = W2 H``, is the sum over hidden units i of ``W2[:, i] H[i, :]``.
Keeping a subset of the units (rescaled by ``1/(c p_i)`` or ``1/pi_i``) sketches that product. For
three probability choices (optimal ``∝ ||W2[:, i]|| ||H[i, :]||``, uniform, and the L1 norm of each
unit's incoming filter, Li et al.'s structured criterion) and three schemes (iid, Poisson, exact-k),
the Monte Carlo error ``E||Z - Z_hat||_F^2`` is compared with the exact formula (SPEC 3.1; exact-k:
``sketch.exact_k_variances``), with a 99 % confidence interval.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from sketchprune import sketch
from sketchprune.config import Settings, setting
from sketchprune.errors import check
from sketchprune.theory.common import mc_summary, ratios, share, span

PROBS = ("optimal", "uniform", "l1")
SCHEMES = sketch.SCHEMES
TABLE_COLUMNS = ["probs", "scheme", "units", "mc_mean", "ci99", "exact", "within_ci", "relative"]


@dataclass(frozen=True)
class StructuredConfig(Settings):
    """Settings of E7; every field is a flag of ``sketchprune theory structured``."""

    n: int = setting(256, "Samples (standard Gaussian inputs).")
    d_in: int = setting(32, "Input features.")
    width: int = setting(128, "Hidden units (the terms of the product).")
    d_out: int = setting(10, "Outputs of the next layer.")
    budgets: tuple[int, ...] = setting((8, 16, 32, 64), "Units kept (draws for iid).")
    trials: int = setting(400, "Monte Carlo sketches per cell.")
    seed: int = setting(0, "Seed of the network, the data and the draws.")

    def validate(self) -> None:
        check(min(self.n, self.d_in, self.width, self.d_out) >= 1, "n, d_in, width and d_out must be >= 1")
        check(self.trials >= 2, "trials must be >= 2 to form a confidence interval")
        check(bool(self.budgets) and all(2 <= b <= self.width for b in self.budgets),
              f"budgets must lie in [2, width={self.width}]")


def network(cfg: StructuredConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``W1`` (width x d_in, heterogeneous unit scales), ``H = relu(W1 X^T)`` and ``W2`` (d_out x width)."""
    g = torch.Generator().manual_seed(cfg.seed)
    scales = torch.exp(torch.randn(cfg.width, 1, generator=g, dtype=torch.float64))  # units differ in size
    W1 = torch.randn(cfg.width, cfg.d_in, generator=g, dtype=torch.float64) * scales / cfg.d_in ** 0.5
    X = torch.randn(cfg.n, cfg.d_in, generator=g, dtype=torch.float64)
    W2 = torch.randn(cfg.d_out, cfg.width, generator=g, dtype=torch.float64) / cfg.width ** 0.5
    return W1, (W1 @ X.T).clamp_min(0), W2


def probabilities(name: str, W1: torch.Tensor, H: torch.Tensor, W2: torch.Tensor) -> torch.Tensor:
    """The unit sampling probabilities ``name``."""
    if name == "optimal":
        return sketch.optimal_probs(W2, H)
    if name == "uniform":
        return torch.full((W1.shape[0],), 1.0 / W1.shape[0], dtype=torch.float64)
    check(name == "l1", f"unknown probs {name!r}; use one of {', '.join(PROBS)}")
    l1 = W1.abs().sum(1)
    return l1 / l1.sum()


def run(cfg: StructuredConfig = StructuredConfig()) -> dict[str, Any]:
    """Run E7; returns ``{"config", "rows", "reading"}`` (rows: probs x scheme x units kept)."""
    W1, H, W2 = network(cfg)
    Z = W2 @ H
    norm2 = float(torch.linalg.matrix_norm(Z) ** 2)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    rows = []
    for pname in PROBS:
        p = probabilities(pname, W1, H, W2)
        for scheme in SCHEMES:
            for k in cfg.budgets:
                errs = [float(((Z - sketch.matmul(W2, H, k, probs=p, scheme=scheme, generator=gen)) ** 2).sum())
                        for _ in range(cfg.trials)]
                mean, half = mc_summary(errs)
                exact = sketch.expected_error(W2, H, k, probs=p, scheme=scheme)
                rows.append({"probs": pname, "scheme": scheme, "units": k, "mc_mean": mean, "ci99": half,
                             "exact": exact, "within_ci": abs(mean - exact) <= half, "relative": share(exact, norm2)})
    return {"experiment": "structured", "config": asdict(cfg), "rows": rows, "reading": reading(rows)}


def reading(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """What the numbers say: does Monte Carlo match the formulas, and which probabilities win."""
    within = sum(r["within_ci"] for r in rows)
    err = {(r["probs"], r["scheme"], r["units"]): r["exact"] for r in rows}
    wins = [k for (p, s, k) in err if p == "optimal"
            and err[("optimal", s, k)] <= min(err[("uniform", s, k)], err[("l1", s, k)])]
    cells = [(s, k) for (p, s, k) in err if p == "optimal"]
    ratio_uniform = ratios((err[("uniform", s, k)], err[("optimal", s, k)]) for s, k in cells)
    ratio_l1 = ratios((err[("l1", s, k)], err[("optimal", s, k)]) for s, k in cells)
    poisson_vs_iid = ratios((err[(p, "poisson", k)], err[(p, "iid", k)]) for (p, s, k) in err if s == "iid")
    text = (f"Claim (SPEC 3.8): keeping hidden units is column sampling, with the exact errors of SPEC 3.1. "
            f"Monte Carlo agrees with the formula in {within} of {len(rows)} cells (99 % intervals; about 1 in "
            f"100 may miss by chance). The optimal unit probabilities give the smallest error in {len(wins)} "
            f"of {len(cells)} (scheme, budget) cells: uniform is {span(ratio_uniform)} worse, the L1 "
            f"filter norm {span(ratio_l1)}. Poisson sampling's error is {span(poisson_vs_iid)} iid's for the "
            "same expected number of units.")
    return {"formula_matches": within, "cells": len(rows), "optimal_wins": len(wins), "text": text}


def plot(result: dict[str, Any], path: str | Path) -> Path:
    """Error vs units kept: one panel per scheme, one line per probability choice, MC with its interval."""
    from sketchprune.atomic import save_figure
    from sketchprune.plotting import plt

    fig, axes = plt.subplots(1, len(SCHEMES), figsize=(4.2 * len(SCHEMES), 3.4), sharey=True)
    for ax, scheme in zip(axes, SCHEMES):
        for pname, color in zip(PROBS, ("tab:green", "tab:gray", "tab:blue")):
            rows = [r for r in result["rows"] if (r["probs"], r["scheme"]) == (pname, scheme)]
            k = [r["units"] for r in rows]
            ax.plot(k, [r["exact"] for r in rows], color=color, label=f"{pname} (formula)")
            ax.errorbar(k, [r["mc_mean"] for r in rows], yerr=[r["ci99"] for r in rows], fmt="o", ms=3,
                        color=color, capsize=2)
        ax.set(xscale="log", yscale="log", title=scheme, xlabel="hidden units kept")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("E ||Z - Z_hat||_F^2")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)
