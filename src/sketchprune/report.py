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

PALETTE = ("tab:gray", "tab:blue", "tab:orange", "tab:pink", "tab:green", "tab:red", "tab:purple", "tab:brown",
           "tab:olive", "tab:cyan", "navy", "gold", "teal", "crimson", "darkkhaki", "slateblue", "sienna", "lime")


def color_of(method: str) -> str:
    """The plot colour of ``method``: one per registered method, in registration order (plugins too)."""
    from sketchprune import methods

    names = methods.names()
    i = names.index(method) if method in names else len(names) + sum(map(ord, method))
    return PALETTE[i % len(PALETTE)]


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
    from sketchprune.atomic import save_figure

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
                color = color_of(method)
                ax.plot(x, m, ls=ls, marker="o", ms=3, color=color, label=f"{method} ({mode})")
                ax.fill_between(x, [a - b for a, b in zip(m, s)], [a + b for a, b in zip(m, s)], color=color,
                                alpha=0.12)
        ax.set(xlabel="compression ratio (log10)", ylabel="test accuracy", title=title or f"{model} / {dataset}",
               xlim=(0.4, 3.1))  # the SynFlow paper's range, 10^0.5 to 10^3
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, ncol=2)
    return save_figure(fig, path)


RESULT_COLUMNS = ["hash", "model", "dataset", "method", "mode", "density", "compression", "seed",
                  "final_test_acc", "best_test_acc", "kept", "total", "collapsed_layers", "wall_seconds"]


def flat_row(result: dict[str, Any]) -> dict[str, Any]:
    """One table row of a run's ``result.json``."""
    c = result["config"]
    return {"hash": result["hash"], "model": c["model"], "dataset": c["dataset"], "method": c["method"],
            "mode": c["mode"], "density": c["density"], "compression": result["compression"], "seed": c["seed"],
            "final_test_acc": result["final_test_acc"], "best_test_acc": result["best_test_acc"],
            "kept": result["kept"], "total": result["total"], "collapsed_layers": len(result["collapsed"]),
            "wall_seconds": result["wall_seconds"]}


def markdown_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    from sketchprune.tables import format_cell

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(format_cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def layer_density_plot(result: dict[str, Any], path: str | Path) -> Path:
    """Bar chart of the kept fraction per layer of one run."""
    from sketchprune.plotting import plt
    from sketchprune.atomic import save_figure

    names = list(result["layer_density"])
    fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(names)), 4))
    ax.bar(range(len(names)), [result["layer_density"][n] for n in names], color="tab:blue")
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
    ax.set(yscale="log", ylabel="density kept", title=f"{result['config']['method']} ({result['config']['mode']}), "
           f"density {result['config']['density']:.3g}")
    ax.axhline(result["config"]["density"], color="tab:red", ls="--", lw=1)
    return save_figure(fig, path)


def build_report(root: str | Path, out: str | Path | None = None, run: str | None = None) -> dict[str, Any]:
    """Collect every run under ``root`` into CSV/Markdown tables, PNG plots and one offline HTML page."""
    import base64
    import html

    from sketchprune.errors import SketchpruneError
    from sketchprune.atomic import write_csv, write_text
    from sketchprune.sweep import collect

    root = Path(root)
    out = Path(out) if out is not None else root / "report"
    results = collect(root)
    if not results:
        raise SketchpruneError(f"no finished runs (result.json) under {root}; run `sketchprune sweep` first")
    rows = [flat_row(r) for r in results]
    summary = summarize(results)
    files = {
        "results_csv": write_csv(out / "results.csv", rows, RESULT_COLUMNS),
        "results_md": write_text(out / "results.md", markdown_table(rows, RESULT_COLUMNS)),
        "summary_csv": write_csv(out / "summary.csv", summary),
        "summary_md": write_text(out / "summary.md", markdown_table(
            summary, ["model", "dataset", "method", "mode", "density", "compression", "mean", "std", "seeds"])),
        "accuracy_png": accuracy_plot(summary, out / "accuracy.png"),
    }
    chosen = next((r for r in results if r["hash"] == run), None) if run else results[0]
    if chosen is None:
        raise SketchpruneError(f"no run with hash {run!r} under {root}; see results.csv for the hashes")
    files["layers_png"] = layer_density_plot(chosen, out / "layers.png")
    images = "".join(
        f'<h2>{html.escape(title)}</h2><img alt="{html.escape(title)}" src="data:image/png;base64,'
        f'{base64.b64encode(Path(files[key]).read_bytes()).decode()}">'
        for key, title in (("accuracy_png", "Test accuracy vs compression ratio"),
                           ("layers_png", f"Per-layer density of run {chosen['hash']}")))
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>sketchprune report</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;font-size:12px}"
        "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}img{max-width:100%}</style></head><body>"
        f"<h1>sketchprune report: {html.escape(str(root))}</h1><p>{len(results)} runs.</p>{images}"
        f"<h2>Summary (mean ± std over seeds)</h2>{_html_table(summary)}<h2>All runs</h2>{_html_table(rows)}"
        "</body></html>"
    )
    files["html"] = write_text(out / "report.html", page)
    return {"runs": len(results), "summary": summary, "files": {k: str(v) for k, v in files.items()}}


def _html_table(rows: list[dict[str, Any]]) -> str:
    import html

    if not rows:
        return "<p>(none)</p>"
    cols = list(rows[0])
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    from sketchprune.tables import format_cell

    body = "".join("<tr>" + "".join(f"<td>{html.escape(format_cell(r[c]))}</td>" for c in cols) + "</tr>"
                   for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"
