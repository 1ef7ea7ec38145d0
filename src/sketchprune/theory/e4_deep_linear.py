"""E4: deep linear networks ``f(x) = W_L ... W_1 x`` (SPEC 3.2, 3.5).

The output on data is a sum over the entries (j, k) of layer l of rank-one terms; the optimal
sketching score of entry (j, k) is ``|W_l[j,k]| ||P_after[:, j]|| ||(P_before X^T)[k, :]||``.
Under whitening (``X^T X = N I``) the last factor is ``sqrt(N) ||P_before[k, :]||``: data-free.
SynFlow's score is the L1 analogue ``|W_l[j,k]| (1^T |P_after|)_j (|P_before| 1)_k``.
Reported: Spearman correlations between the three scores (all layers pooled, and the mean over
layers) and the end-to-end relative output error of masks built from each, top-k and sampled.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from sketchprune import select
from sketchprune.config import Settings, setting
from sketchprune.errors import check
from sketchprune.stats import spearman

SOURCES = ("optimal", "whitened", "synflow", "random")


@dataclass(frozen=True)
class DeepLinearConfig(Settings):
    depth: int = setting(4, "Layers of the deep linear network.")
    width: int = setting(32, "Width of its hidden layers.")
    d_in: int = setting(32, "Input features.")
    d_out: int = setting(10, "Outputs.")
    n: int = setting(256, "Samples.")
    densities: tuple[float, ...] = setting((0.05, 0.1, 0.2, 0.5), "Densities of the masks.")
    whiten: bool = setting(False, "Whiten the data (X^T X = N I): the optimal scores become data-free.")
    draws: int = setting(20, "Sampled masks per rule and density.")
    seed: int = setting(0, "Seed of the data, the weights and the draws.")

    def validate(self) -> None:
        check(self.depth >= 2, "depth must be >= 2")
        check(min(self.width, self.d_in, self.d_out, self.n, self.draws) >= 1,
              "width, d_in, d_out, n and draws must be >= 1")
        check(not self.whiten or self.n >= self.d_in, "whitening needs n >= d_in")
        check(bool(self.densities) and all(0 < x <= 1 for x in self.densities), "densities must lie in (0, 1]")


def chain(Ws: list[Tensor], lo: int, hi: int, size: int) -> Tensor:
    """``W_{hi-1} ... W_lo`` (identity of ``size`` when empty)."""
    out = torch.eye(size, dtype=Ws[0].dtype)
    for W in Ws[lo:hi]:
        out = W @ out
    return out


def scores(Ws: list[Tensor], X: Tensor) -> dict[str, list[Tensor]]:
    """Per-layer score matrices of every source (``X`` is N x d_in, rows are samples)."""
    out: dict[str, list[Tensor]] = {s: [] for s in SOURCES}
    absW = [W.abs() for W in Ws]
    g = torch.Generator().manual_seed(123)
    for l, W in enumerate(Ws):
        after = chain(Ws, l + 1, len(Ws), W.shape[0])       # P_after: d_out x n_l
        before = chain(Ws, 0, l, Ws[0].shape[1])             # P_before: n_{l-1} x d_in
        a_norm = torch.linalg.vector_norm(after, dim=0)       # ||P_after[:, j]||
        h_norm = torch.linalg.vector_norm(before @ X.T, dim=1)  # ||(P_before X^T)[k, :]||
        w_norm = X.shape[0] ** 0.5 * torch.linalg.vector_norm(before, dim=1)
        ones_after = torch.ones(1, Ws[-1].shape[0], dtype=W.dtype) @ chain(absW, l + 1, len(Ws), W.shape[0])
        ones_before = chain(absW, 0, l, Ws[0].shape[1]) @ torch.ones(Ws[0].shape[1], 1, dtype=W.dtype)
        out["optimal"].append(W.abs() * a_norm.unsqueeze(1) * h_norm.unsqueeze(0))
        out["whitened"].append(W.abs() * a_norm.unsqueeze(1) * w_norm.unsqueeze(0))
        out["synflow"].append(W.abs() * ones_after.T * ones_before.T)
        out["random"].append(torch.rand(W.shape, generator=g, dtype=W.dtype))
    return out


def whiten(X: Tensor) -> Tensor:
    """Rotate and scale ``X`` so that ``X^T X = N I`` (requires N >= d)."""
    Xc = X - X.mean(0, keepdim=True)
    U, S, Vh = torch.linalg.svd(Xc, full_matrices=False)
    return U * X.shape[0] ** 0.5 @ torch.eye(S.numel(), dtype=X.dtype) @ Vh


def output_error(Ws: list[Tensor], masks: list[Tensor], X: Tensor) -> float:
    """``||f(X) - f_masked(X)||_F^2 / ||f(X)||_F^2``."""
    full = chain(Ws, 0, len(Ws), Ws[0].shape[1]) @ X.T
    pruned = chain([W * m for W, m in zip(Ws, masks)], 0, len(Ws), Ws[0].shape[1]) @ X.T
    return float(torch.linalg.matrix_norm(full - pruned) ** 2 / torch.linalg.matrix_norm(full) ** 2)


def run(cfg: DeepLinearConfig = DeepLinearConfig()) -> dict[str, Any]:
    gen = torch.Generator().manual_seed(cfg.seed)
    dims = [cfg.d_in] + [cfg.width] * (cfg.depth - 1) + [cfg.d_out]
    Ws = [torch.randn(b, a, generator=gen, dtype=torch.float64) / a**0.5 for a, b in zip(dims[:-1], dims[1:])]
    X = torch.randn(cfg.n, cfg.d_in, generator=gen, dtype=torch.float64) * torch.exp(
        torch.randn(cfg.d_in, generator=gen, dtype=torch.float64))
    if cfg.whiten:
        X = whiten(X)
    sc = scores(Ws, X)
    flat = {s: torch.cat([t.reshape(-1) for t in v]) for s, v in sc.items()}
    corr = []
    for i, a in enumerate(SOURCES[:3]):
        for b in SOURCES[i + 1:3]:
            per_layer = [spearman(x, y) for x, y in zip(sc[a], sc[b])]
            corr.append({"a": a, "b": b, "spearman_pooled": spearman(flat[a], flat[b]),
                         "spearman_layer_mean": sum(per_layer) / len(per_layer)})
    rows = []
    for dens in cfg.densities:
        for source in SOURCES:
            named = {str(i): t for i, t in enumerate(sc[source])}
            top = select(named, dens)
            err_top = output_error(Ws, [top[str(i)] for i in range(len(Ws))], X)
            errs = []
            for _ in range(cfg.draws):
                m = select(named, dens, mode="sample", generator=gen)
                errs.append(output_error(Ws, [m[str(i)] for i in range(len(Ws))], X))
            rows.append({"density": dens, "source": source, "topk_error": err_top,
                         "sampled_error": sum(errs) / len(errs)})
    return {"experiment": "deep-linear", "config": asdict(cfg), "rows": rows, "correlations": corr,
            "reading": reading(rows, corr, cfg.whiten)}


def reading(rows: list[dict[str, Any]], corr: list[dict[str, Any]], whitened: bool) -> dict[str, Any]:
    """What the numbers say about SPEC 3.2 / 3.5: SynFlow as a sketching score of a deep linear net."""
    rho = {(c["a"], c["b"]): c["spearman_pooled"] for c in corr}
    err = {(r["source"], r["density"]): r for r in rows}
    dens = sorted({r["density"] for r in rows})
    best_top = [min((s for s, d in err if d == x), key=lambda s: err[(s, x)]["topk_error"]) for x in dens]
    pairs = ", ".join(f"{a} ~ {b} {v:.3f}" for (a, b), v in rho.items())
    text = (f"Claims (SPEC 3.2, 3.5): the optimal sketching score of a deep linear network factors into the layer's "
            f"weight times the norms of the products after and before it, and SynFlow is its data-free L1 analogue. "
            f"Spearman correlations of the scores: {pairs}{' (data whitened: the optimal score is data-free)' if whitened else ''}. "
            f"The smallest top-k output error at each density ({', '.join(f'{d:g}' for d in dens)}) comes from: "
            f"{', '.join(best_top)}.")
    return {"spearman": {f"{a}~{b}": v for (a, b), v in rho.items()}, "best_topk": dict(zip(map(str, dens), best_top)),
            "text": text}


def plot(result: dict[str, Any], path: Path) -> Path:
    from sketchprune.plotting import plt
    from sketchprune.atomic import save_figure

    fig, ax = plt.subplots(figsize=(6, 4.2))
    colors = {"optimal": "tab:blue", "whitened": "tab:cyan", "synflow": "tab:red", "random": "tab:gray"}
    for source, color in colors.items():
        sel = [r for r in result["rows"] if r["source"] == source]
        x = [r["density"] for r in sel]
        ax.plot(x, [r["topk_error"] for r in sel], "-o", color=color, label=f"{source} top-k")
        ax.plot(x, [r["sampled_error"] for r in sel], "--o", color=color, label=f"{source} sampled")
    ax.set(xscale="log", yscale="log", xlabel="density", ylabel="relative output error")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    return save_figure(fig, path)


TABLE_COLUMNS = ["density", "source", "topk_error", "sampled_error"]
