"""Strong lottery tickets from subset sums (Pensia et al., NeurIPS 2020, "Optimal lottery tickets via
SubsetSum"; Lueker 1998): pruning a wide enough random network, without training, approximates
any target network.

1. **Subset sum.** A target ``z`` in ``[-1, 1]`` is approximated by the best sum of a subset of
   ``n`` random weights ``X_i ~ U[-1, 1]``: ``eps_n(z) = min_S |z - sum_{i in S} X_i|``, computed
   exactly by enumerating all ``2^n`` subset sums. Lueker's theorem, in the form Pensia et al. use
   (their Corollary 2): for ``n >= C log(2/eps)``, with probability at least ``1 - eps`` every
   ``z`` in ``[-1, 1]`` is within ``eps`` of a subset sum. So the worst error over ``z`` falls
   exponentially in ``n``, and ``O(log(1/eps))`` random weights per target weight suffice; no
   rule can beat ``2^-n`` (there are only ``2^n`` subsets). We measure the error against ``n``,
   fit its rate and read off ``C``.

2. **Pruning a random two-layer network to a target layer.** A target layer ``x -> W x``
   (``W ~ U[-1, 1]^{d_out x d_in}``) is approximated by ``x -> V relu(U x)`` with ``U`` and ``V``
   ``U[-1, 1]`` of hidden width ``2 n d_in`` (block ``j`` of ``2n`` units holds ``n`` of each sign
   in its first layer, the balanced block Pensia et al. pick out of an i.i.d. one), pruned as their
   construction does: block ``j`` keeps only its connection to input ``j``; since ``w x = w relu(x) -
   w relu(-x)``, a block's units with ``u > 0`` carry ``x_j > 0`` and those with ``u < 0`` carry
   ``x_j < 0``, and on each side output ``i`` keeps the subset of the block's units whose products
   ``v_ik u_k`` best sum to ``W_ij`` (a subset-sum instance). The pruned network equals the target
   up to those subset-sum errors; we build it and measure the worst weight error and the relative
   output error on random inputs against the width.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sketchprune.config import Settings, setting
from sketchprune.errors import check

MAX_N = 24
"""Subset sums are enumerated (``2^n`` of them): n is capped to keep memory small."""


@dataclass(frozen=True)
class SubsetSumConfig(Settings):
    """Settings of ``sketchprune theory subset-sum``; every field is a flag."""

    ns: tuple[int, ...] = setting((2, 4, 6, 8, 10, 12, 14, 16, 18, 20), "Numbers n of random weights.")
    targets: int = setting(201, "Targets z, evenly spaced in [-1, 1].")
    trials: int = setting(20, "Random draws of the n weights per n.")
    eps: float = setting(0.01, "The accuracy eps of the reading: the n whose worst error is below it.")
    d_in: int = setting(8, "Inputs of the target layer.")
    d_out: int = setting(8, "Outputs of the target layer.")
    units: tuple[int, ...] = setting((2, 4, 6, 8, 10, 12, 14, 16), "Hidden units per input and sign side (hidden width "
                                                           "2 * units * d_in) of the random network pruned to the "
                                                           "target layer.")
    samples: int = setting(1000, "Random inputs on which the pruned network is compared with the target.")
    seed: int = setting(0, "Seed of the weights, targets and inputs.")

    def validate(self) -> None:
        check(bool(self.ns) and all(1 <= n <= MAX_N for n in self.ns), f"ns must lie in [1, {MAX_N}]")
        check(bool(self.units) and all(1 <= n <= MAX_N for n in self.units), f"units must lie in [1, {MAX_N}]")
        check(self.targets >= 2 and self.trials >= 1, "targets must be >= 2 and trials >= 1")
        check(0 < self.eps < 1, f"eps must lie in (0, 1), got {self.eps}")
        check(min(self.d_in, self.d_out, self.samples) >= 1, "d_in, d_out and samples must be >= 1")


def subset_sums(weights: np.ndarray, order: str = "sorted") -> np.ndarray:
    """Every subset sum of ``weights`` (``2^n`` values, the empty subset included), sorted, or with
    ``order="code"`` at index ``sum_k 2^k [k in S]`` (bit k of the index says whether weight k is in)."""
    sums = np.zeros(1)
    for w in weights:
        sums = np.concatenate([sums, sums + w])
    return np.sort(sums) if order == "sorted" else sums


def best_error(sums: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each target in ``z``: the error of the nearest subset sum and its index in ``sums`` (sorted)."""
    i = np.clip(np.searchsorted(sums, z), 1, len(sums) - 1)
    left, right = sums[i - 1], sums[i]
    take_left = np.abs(z - left) <= np.abs(right - z)
    best = np.where(take_left, i - 1, i)
    return np.abs(z - sums[best]), best


def subset_of(weights: np.ndarray, z: float) -> np.ndarray:
    """The bool choice of ``weights`` whose sum is nearest to ``z`` (exhaustive, ``2^n`` subsets)."""
    code = int(np.argmin(np.abs(subset_sums(weights, order="code") - z)))
    return ((code >> np.arange(len(weights))) & 1).astype(bool)


def subset_sum_rows(cfg: SubsetSumConfig, rng: np.random.Generator) -> list[dict[str, Any]]:
    z = np.linspace(-1.0, 1.0, cfg.targets)
    rows = []
    for n in cfg.ns:
        worst, median = [], []
        for _ in range(cfg.trials):
            err, _ = best_error(subset_sums(rng.uniform(-1.0, 1.0, size=n)), z)
            worst.append(float(err.max()))
            median.append(float(np.median(err)))
        rows.append({"n": n, "worst_error": float(np.median(worst)), "median_error": float(np.median(median)),
                     "worst_of_trials": float(np.max(worst)), "counting_limit": 2.0 ** -n,
                     "below_eps": float(np.mean(np.array(worst) <= cfg.eps))})
    return rows


def fit_rate(rows: list[dict[str, Any]], key: str = "worst_error") -> dict[str, float]:
    """Least-squares fit ``log err = a - n / C`` over the rows (positive errors only)."""
    pts = [(r["n"], math.log(r[key])) for r in rows if r[key] > 0]
    if len(pts) < 2:
        return {"C": math.nan, "factor_per_weight": math.nan, "intercept": math.nan}
    n = np.array([p[0] for p in pts], dtype=float)
    y = np.array([p[1] for p in pts])
    slope, intercept = np.polyfit(n, y, 1)
    return {"C": float(-1.0 / slope) if slope < 0 else math.inf, "factor_per_weight": float(math.exp(slope)),
            "intercept": float(intercept)}


def prune_to_layer(W: np.ndarray, units: int, rng: np.random.Generator) -> tuple[torch.nn.Sequential, dict[str, Any]]:
    """Pensia et al.'s construction (see the module docstring): a random ``V relu(U x)`` of hidden
    width ``2 * units * d_in``, pruned (masks returned in the info) to approximate ``x -> W x``."""
    d_out, d_in = W.shape
    width = 2 * units * d_in
    U = rng.uniform(0.0, 1.0, size=(width, d_in))
    U[np.arange(width) % (2 * units) >= units] *= -1  # each block: `units` units of each sign
    V = rng.uniform(-1.0, 1.0, size=(d_out, width))
    keep_u = np.zeros_like(U, dtype=bool)
    keep_v = np.zeros_like(V, dtype=bool)
    errors = np.zeros((d_out, d_in, 2))
    for j in range(d_in):
        block = np.arange(j * 2 * units, (j + 1) * 2 * units)
        keep_u[block, j] = True
        for s, side in enumerate((block[U[block, j] > 0], block[U[block, j] < 0])):
            for i in range(d_out):
                if len(side) == 0:
                    errors[i, j, s] = abs(W[i, j])
                    continue
                products = V[i, side] * U[side, j]
                chosen = subset_of(products, W[i, j])
                keep_v[i, side[chosen]] = True
                errors[i, j, s] = abs(W[i, j] - products[chosen].sum())
    net = torch.nn.Sequential(torch.nn.Linear(d_in, width, bias=False), torch.nn.ReLU(),
                              torch.nn.Linear(width, d_out, bias=False)).double()
    with torch.no_grad():
        net[0].weight.copy_(torch.from_numpy(U * keep_u))
        net[2].weight.copy_(torch.from_numpy(V * keep_v))
    kept = int(keep_u.sum() + keep_v.sum())
    return net, {"width": width, "kept": kept, "total": U.size + V.size, "max_weight_error": float(errors.max()),
                 "median_weight_error": float(np.median(errors))}


def layer_rows(cfg: SubsetSumConfig, rng: np.random.Generator) -> list[dict[str, Any]]:
    W = rng.uniform(-1.0, 1.0, size=(cfg.d_out, cfg.d_in))
    x = torch.from_numpy(rng.uniform(-1.0, 1.0, size=(cfg.samples, cfg.d_in)))
    target = x @ torch.from_numpy(W).T
    rows = []
    for units in cfg.units:
        net, info = prune_to_layer(W, units, rng)
        with torch.no_grad():
            err = float(((net(x) - target) ** 2).sum() / (target ** 2).sum())
        rows.append({"units": units, **info, "density": info["kept"] / info["total"], "relative_error": err})
    return rows


def run(cfg: SubsetSumConfig = SubsetSumConfig()) -> dict[str, Any]:
    cfg.validate()
    rng = np.random.default_rng(cfg.seed)
    rows = subset_sum_rows(cfg, rng)
    layer = layer_rows(cfg, rng)
    rate = fit_rate(rows)
    return {"experiment": "subset-sum", "config": asdict(cfg), "rows": rows, "layer": layer, "fit": rate,
            "reading": reading(cfg, rows, layer, rate)}


def reading(cfg: SubsetSumConfig, rows: list[dict[str, Any]], layer: list[dict[str, Any]],
            rate: dict[str, float]) -> dict[str, Any]:
    """What the numbers say about the strong-ticket theory."""
    first = next((r["n"] for r in rows if r["worst_error"] <= cfg.eps), None)
    factor = rate["factor_per_weight"]
    ok = layer[-1]["relative_error"] < layer[0]["relative_error"]
    falls = all(b["worst_error"] < a["worst_error"] for a, b in zip(rows, rows[1:]))
    text = (f"Claim (Lueker; Pensia et al. 2020): the best subset sum of n random U[-1, 1] weights approximates any "
            f"target in [-1, 1] with an error that falls exponentially in n, so O(log(1/eps)) weights per target "
            f"weight suffice. Measured over {cfg.targets} targets, the worst error of the median of {cfg.trials} "
            f"draws "
            f"{'falls at every step' if falls else 'falls overall'}, from {rows[0]['worst_error']:.3g} at n = "
            f"{rows[0]['n']} to {rows[-1]['worst_error']:.3g} at n = {rows[-1]['n']}; the fitted rate is a factor "
            f"{factor:.3f} per added weight (error ~ exp(-n / C) with C = {rate['C']:.2f}; the counting limit 2^-n "
            f"is a factor 0.5). "
            + (f"The worst error first drops below eps = {cfg.eps:g} at n = {first} (there "
               f"{_share(rows, first)} of the draws are within eps everywhere), against C log(2/eps) = "
               f"{rate['C'] * math.log(2 / cfg.eps):.1f} from the fit. " if first is not None else
               f"No n tried reaches a worst error below eps = {cfg.eps:g}. ")
            + f"Pruning a random two-layer network to a {cfg.d_out}x{cfg.d_in} target layer (Pensia et al.'s "
            f"construction, no training): the relative output error is {layer[0]['relative_error']:.3g} at hidden "
            f"width {layer[0]['width']} and {layer[-1]['relative_error']:.3g} at width {layer[-1]['width']} (median "
            f"weight error {layer[0]['median_weight_error']:.2g} to {layer[-1]['median_weight_error']:.2g}, worst "
            f"{layer[0]['max_weight_error']:.2g} to {layer[-1]['max_weight_error']:.2g}), keeping "
            f"{layer[-1]['density']:.3f} of the weights at the widest"
            + ("; pruning alone gets closer as the network widens." if ok else "."))
    return {"n_for_eps": first, "factor_per_weight": factor, "C": rate["C"], "text": text}


def _share(rows: list[dict[str, Any]], n: int) -> str:
    return f"{100 * next(r['below_eps'] for r in rows if r['n'] == n):.0f} %"


def plot(result: dict[str, Any], path: Path) -> Path:
    from sketchprune.atomic import save_figure
    from sketchprune.plotting import plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2))
    rows = result["rows"]
    n = [r["n"] for r in rows]
    a.plot(n, [r["worst_error"] for r in rows], marker="o", label="worst over targets (median draw)")
    a.plot(n, [r["median_error"] for r in rows], marker="s", label="median over targets (median draw)")
    fit = result["fit"]
    if math.isfinite(fit["intercept"]):
        a.plot(n, [math.exp(fit["intercept"]) * fit["factor_per_weight"] ** k for k in n], ls="--", color="gray",
               label=f"fit: factor {fit['factor_per_weight']:.2f} per weight")
    a.plot(n, [2.0 ** -k for k in n], ls=":", color="black", label="counting limit 2^-n")
    a.axhline(result["config"]["eps"], color="tab:red", lw=0.8, label="eps")
    a.set(yscale="log", xlabel="n random weights", ylabel="|z - best subset sum|", title="subset sum")
    a.grid(alpha=0.3)
    a.legend(fontsize=8)
    layer = result["layer"]
    w = [r["width"] for r in layer]
    b.plot(w, [r["relative_error"] for r in layer], marker="o", label="relative output error")
    b.plot(w, [r["median_weight_error"] for r in layer], marker="s", label="median weight error")
    b.plot(w, [r["max_weight_error"] for r in layer], marker="^", label="worst weight error")
    b.set(yscale="log", xlabel="hidden width of the random network", ylabel="error",
          title="pruned random 2-layer net vs target layer")
    b.grid(alpha=0.3)
    b.legend(fontsize=8)
    return save_figure(fig, path)


TABLE_COLUMNS = ["n", "worst_error", "median_error", "worst_of_trials", "counting_limit", "below_eps"]
LAYER_COLUMNS = ["units", "width", "kept", "total", "density", "median_weight_error", "max_weight_error",
                 "relative_error"]
