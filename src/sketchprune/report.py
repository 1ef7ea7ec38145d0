"""Summaries and paper-style plots of run results (accuracy vs compression ratio).

Plots follow the SynFlow paper: x = compression ratio on a log10 axis, one colour per method,
solid lines for top-k masks and dashed for sampled masks, mean over seeds with a ±std band.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

COLORS = {"random": "tab:gray", "magnitude": "tab:blue", "snip": "tab:orange", "grasp": "tab:green",
          "synflow": "tab:red", "ntk": "tab:purple", "sketch": "tab:brown", "iterative_snip": "tab:pink"}


def summarize(results: list[dict[str, Any]], metric: str = "final_test_acc") -> list[dict[str, Any]]:
    """Mean and std of ``metric`` over seeds, per (model, dataset, method, mode, density)."""
    groups: dict[tuple, list[float]] = defaultdict(list)
    for r in results:
        c = r["config"]
        groups[(c["model"], c["dataset"], c["method"], c["mode"], c["density"])].append(r[metric])
    rows = []
    for (model, dataset, method, mode, density), vals in sorted(groups.items(), key=lambda kv: (kv[0][:4], -kv[0][4])):
        rows.append({"model": model, "dataset": dataset, "method": method, "mode": mode, "density": density,
                     "compression": 1 / density, "mean": statistics.fmean(vals),
                     "std": statistics.stdev(vals) if len(vals) > 1 else 0.0, "seeds": len(vals)})
    return rows


def accuracy_plot(summary: list[dict[str, Any]], path: str | Path, title: str = "") -> Path:
    """Accuracy vs compression ratio: one panel per model/dataset, colour = method, dashed = sampled."""
    from sketchprune.plotting import plt
    from sketchprune.results import save_figure

    panels = sorted({(r["model"], r["dataset"]) for r in summary})
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.2), squeeze=False)
    for ax, (model, dataset) in zip(axes[0], panels):
        for method in sorted({r["method"] for r in summary}):
            for mode, ls in (("topk", "-"), ("sample", "--")):
                rows = sorted((r for r in summary if (r["model"], r["dataset"], r["method"], r["mode"])
                               == (model, dataset, method, mode)), key=lambda r: r["compression"])
                if not rows:
                    continue
                x = [math.log10(r["compression"]) for r in rows]
                m = [r["mean"] for r in rows]
                s = [r["std"] for r in rows]
                color = COLORS.get(method)
                ax.plot(x, m, ls=ls, marker="o", ms=3, color=color, label=f"{method} ({mode})")
                ax.fill_between(x, [a - b for a, b in zip(m, s)], [a + b for a, b in zip(m, s)], color=color,
                                alpha=0.12)
        ax.set(xlabel="compression ratio (log10)", ylabel="test accuracy", title=title or f"{model} / {dataset}")
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, ncol=2)
    return save_figure(fig, path)
