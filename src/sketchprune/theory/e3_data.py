"""E3: data independence (SPEC 3.4). With standardized features ``||X_i|| = sqrt(N)`` for every i,
so the optimal probabilities ``∝ ||X_i|| |w_i|`` equal magnitude's ``∝ |w_i|``: no data needed.

For raw and standardized features, masks from data-aware optimal, data-free magnitude and random
probabilities are compared: exact Poisson sketch errors, the distance between magnitude's and the
optimal probabilities, and the Jaccard overlap of the masks (top-k and sampled).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from sketchprune import select, sketch
from sketchprune.theory.common import jaccard, span
from sketchprune.theory.e2_linear import RULES, LinearConfig, _covering, dataset, rule_probs

DataConfig = LinearConfig  # same data and density flags


def standardize(X: Tensor) -> Tensor:
    """Each column centred and scaled to unit (population) variance: ``||X_i||_2 = sqrt(N)``."""
    Xc = X - X.mean(0, keepdim=True)
    std = Xc.pow(2).mean(0, keepdim=True).sqrt()
    return Xc / torch.where(std > 0, std, torch.ones_like(std))


def run(cfg: LinearConfig = LinearConfig()) -> dict[str, Any]:
    gen = torch.Generator().manual_seed(cfg.seed)
    X_raw, _ = dataset(cfg, gen)
    w = cfg.init_scale * torch.randn(X_raw.shape[1], generator=gen, dtype=torch.float64) / X_raw.shape[1] ** 0.5
    rows, probs_rows = [], []
    for features, X in (("raw", X_raw), ("standardized", standardize(X_raw))):
        probs = {r: _covering(rule_probs(r, X, w)) for r in RULES}
        tv = 0.5 * float((probs["magnitude"] - probs["optimal"]).abs().sum())
        probs_rows.append({"features": features, "tv_magnitude_vs_optimal": tv,
                           "tv_random_vs_optimal": 0.5 * float((probs["random"] - probs["optimal"]).abs().sum())})
        for dens in cfg.densities:
            k = max(1, round(dens * w.numel()))
            errs = {r: sketch.expected_error(X, w, k, probs=probs[r], scheme="poisson") for r in RULES}
            top = {r: select(probs[r], k / w.numel()) for r in RULES}
            # common random numbers: the same seed for every rule, so equal probabilities give equal masks
            samp = {r: select(probs[r], k / w.numel(), mode="sample",
                              generator=torch.Generator().manual_seed(cfg.seed + 1)) for r in RULES}
            rows.append({
                "features": features, "density": dens, "err_optimal": errs["optimal"],
                "err_magnitude": errs["magnitude"], "err_random": errs["random"],
                "magnitude_over_optimal": errs["magnitude"] / errs["optimal"] if errs["optimal"] else 1.0,
                "jaccard_topk_mag_opt": jaccard(top["magnitude"], top["optimal"]),
                "jaccard_topk_rand_opt": jaccard(top["random"], top["optimal"]),
                "jaccard_sampled_mag_opt": jaccard(samp["magnitude"], samp["optimal"]),
            })
    return {"experiment": "data", "config": asdict(cfg), "rows": rows, "probabilities": probs_rows,
            "reading": reading(rows, probs_rows)}


def reading(rows: list[dict[str, Any]], probs_rows: list[dict[str, Any]]) -> dict[str, Any]:
    """What the numbers say about SPEC 3.4: data independence after standardization."""
    tv = {r["features"]: r["tv_magnitude_vs_optimal"] for r in probs_rows}
    ratio = {f: [r["magnitude_over_optimal"] for r in rows if r["features"] == f] for f in ("raw", "standardized")}
    overlap = {f: [r["jaccard_topk_mag_opt"] for r in rows if r["features"] == f] for f in ("raw", "standardized")}
    text = (f"Claim (SPEC 3.4): with standardized features the optimal probabilities are magnitude's, so no data is "
            f"needed. Total-variation distance between magnitude and optimal probabilities: {tv['raw']:.3f} on the "
            f"raw features, {tv['standardized']:.2e} standardized. Magnitude's sketch error is "
            f"{span(ratio['raw'])} the optimal one on raw features and {span(ratio['standardized'], 3)} "
            f"standardized; the top-k masks overlap {span(overlap['raw'], unit='')} (Jaccard) raw and "
            f"{span(overlap['standardized'], unit='')} standardized.")
    return {"tv_raw": tv["raw"], "tv_standardized": tv["standardized"], "text": text}


def plot(result: dict[str, Any], path: Path) -> Path:
    from sketchprune.plotting import plt
    from sketchprune.atomic import save_figure

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, features in zip(axes, ("raw", "standardized")):
        sel = [r for r in result["rows"] if r["features"] == features]
        x = [r["density"] for r in sel]
        for key, color in (("err_optimal", "tab:blue"), ("err_magnitude", "tab:orange"), ("err_random", "tab:gray")):
            ax.plot(x, [r[key] for r in sel], marker="o", color=color, label=key.removeprefix("err_"))
        ax.set(yscale="log", xlabel="density", title=f"{features} features", ylabel="E||Xw - XDw||^2 (Poisson)")
        ax.grid(alpha=0.3)
    axes[0].legend()
    return save_figure(fig, path)


TABLE_COLUMNS = ["features", "density", "err_optimal", "err_magnitude", "err_random", "magnitude_over_optimal",
                 "jaccard_topk_mag_opt", "jaccard_topk_rand_opt", "jaccard_sampled_mag_opt"]
