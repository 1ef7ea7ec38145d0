"""E6: the neural tangent kernel as a product (SPEC 3.7). ``Theta = J J^T`` with ``J`` the Jacobian
(outputs x parameters) of a small MLP on a batch; pruning parameters samples columns of J.

Column masks chosen three ways: top-k by ``||J[:, i]||^2``, i.i.d. sampling with
``p ∝ ||J[:, i]||^2`` (rescaled ``count / (c p)``), and uniform i.i.d. For the i.i.d. ones the
Monte Carlo kernel error is compared with the exact formula; optimal sampling gives
``(trace(Theta)^2 - ||Theta||_F^2) / c``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, jacrev

from sketchprune import select, sketch
from sketchprune.config import Settings, setting
from sketchprune.errors import check
from sketchprune.theory.common import load_table, mc_summary, ratios, share, span


@dataclass(frozen=True)
class NTKConfig(Settings):
    n: int = setting(16, "Inputs of the kernel (synthetic).")
    d: int = setting(10, "Input features (synthetic).")
    width: int = setting(64, "Hidden width of the ReLU network.")
    outputs: int = setting(3, "Outputs of the network.")
    densities: tuple[float, ...] = setting((0.01, 0.05, 0.1, 0.3), "Fractions of Jacobian columns kept.")
    trials: int = setting(100, "Sampled masks per density.")
    seed: int = setting(0, "Seed of the data, the weights and the draws.")
    data: str = setting("", "A CSV (with --target) or NPZ file of inputs instead of synthetic ones.")
    target: str = setting("", "The target column of --data (left out of the inputs).")

    def validate(self) -> None:
        check(min(self.n, self.d, self.width, self.outputs) >= 1, "n, d, width and outputs must be >= 1")
        check(self.trials >= 2, "trials must be >= 2")
        check(bool(self.densities) and all(0 < x <= 1 for x in self.densities), "densities must lie in (0, 1]")
        check(not self.target or bool(self.data), "--target names a column of --data; pass --data too")


def jacobian(model: nn.Module, x: Tensor) -> Tensor:
    """``J`` with rows (sample, output) and one column per parameter entry."""
    params = {k: v.detach() for k, v in model.named_parameters()}
    jac = jacrev(lambda p: functional_call(model, p, (x,)).reshape(-1))(params)
    return torch.cat([j.reshape(j.shape[0], -1) for j in jac.values()], dim=1)


def run(cfg: NTKConfig = NTKConfig()) -> dict[str, Any]:
    gen = torch.Generator().manual_seed(cfg.seed)
    if cfg.data:
        X, _, _ = load_table(cfg.data, cfg.target)
        x = X[: cfg.n]
    else:
        x = torch.randn(cfg.n, cfg.d, generator=gen, dtype=torch.float64)
    torch.manual_seed(cfg.seed)
    model = nn.Sequential(nn.Linear(x.shape[1], cfg.width), nn.ReLU(), nn.Linear(cfg.width, cfg.width), nn.ReLU(),
                          nn.Linear(cfg.width, cfg.outputs)).double()
    J = jacobian(model, x)
    theta = J @ J.T
    q = (J**2).sum(0)
    P = J.shape[1]
    norm2 = float(torch.linalg.matrix_norm(theta) ** 2)
    rows = []
    for dens in cfg.densities:
        c = max(1, round(dens * P))
        keep = select(q, c / P)
        top_err = float(torch.linalg.matrix_norm(theta - (J * keep) @ J.T) ** 2)
        rows.append({"density": dens, "method": "topk", "budget": c, "mc_mean": top_err, "ci99": 0.0,
                     "exact": top_err, "relative": share(top_err, norm2)})
        for name, probs in (("sampled", "optimal"), ("uniform", "uniform")):
            errs = [float(torch.linalg.matrix_norm(theta - sketch.matmul(J, J.T, c, probs=probs, generator=gen)) ** 2)
                    for _ in range(cfg.trials)]
            mean, half = mc_summary(errs)
            rows.append({"density": dens, "method": name, "budget": c, "mc_mean": mean, "ci99": half,
                         "exact": sketch.expected_error(J, J.T, c, probs=probs), "relative": share(mean, norm2)})
    trace = float(torch.trace(theta))
    return {"experiment": "ntk", "config": asdict(cfg), "rows": rows, "parameters": P,
            "trace": trace, "frobenius2": norm2, "optimal_constant": trace**2 - norm2, "reading": reading(rows)}


def reading(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """What the numbers say about SPEC 3.7: the NTK under column sampling."""
    sampled = [r for r in rows if r["method"] != "topk"]
    within = sum(abs(r["mc_mean"] - r["exact"]) <= r["ci99"] for r in sampled)
    by = {(r["method"], r["density"]): r["mc_mean"] for r in rows}
    dens = sorted({r["density"] for r in rows})
    top_vs = ratios((by[("topk", d)], by[("sampled", d)]) for d in dens)
    uni_vs = ratios((by[("uniform", d)], by[("sampled", d)]) for d in dens)
    text = (f"Claim (SPEC 3.7): pruning parameters samples the Jacobian's columns, with the kernel error "
            f"(trace^2 - ||Theta||^2)/c for the optimal iid sampling. Monte Carlo agrees with the formula in "
            f"{within} of {len(sampled)} cells. Over densities {', '.join(f'{d:g}' for d in dens)}, top-k by column "
            f"norm has {span(top_vs)} the optimal sampled error (below 1: top-k is better "
            f"for the kernel), and uniform sampling {span(uni_vs)}.")
    return {"formula_matches": within, "cells": len(sampled), "text": text}


def plot(result: dict[str, Any], path: Path) -> Path:
    from sketchprune.plotting import plt
    from sketchprune.atomic import save_figure

    fig, ax = plt.subplots(figsize=(6, 4.2))
    for method, color in (("topk", "tab:red"), ("sampled", "tab:blue"), ("uniform", "tab:gray")):
        sel = [r for r in result["rows"] if r["method"] == method]
        x = [r["density"] for r in sel]
        ax.errorbar(x, [r["mc_mean"] for r in sel], yerr=[r["ci99"] for r in sel], marker="o", color=color,
                    label=method)
        if method != "topk":
            ax.plot(x, [r["exact"] for r in sel], "x", color=color, ms=8)
    ax.set(xscale="log", yscale="log", xlabel="density (columns kept)", ylabel="||Theta - J D J^T||_F^2",
           title="NTK column sampling (x = exact iid formula)")
    ax.grid(alpha=0.3)
    ax.legend()
    return save_figure(fig, path)


TABLE_COLUMNS = ["density", "method", "budget", "mc_mean", "ci99", "exact", "relative"]
