"""Reports of runs: the tables and figures a paper needs, from every run's ``result.json``.

Under ``FOLDER/report``: ``results.csv`` (one row per run: the data, long format), ``summary.csv``
(per setting x method x mode x compression: mean, 95 % t interval, seeds), ``paired.csv``
(sample - top-k and auto - top-k per method and compression over the seeds both have, with their
95 % interval and a verdict only where it excludes 0; for a mask that moved while training, ``rigl -
static (topk)`` against the same starting mask kept static), ``diagnostics.csv`` (per compression: how
well each mask diagnostic at init predicts the final accuracy), ``pivot.md`` (methods x
compression per mode, best in bold, significant differences to top-k marked), and the figures:

* ``accuracy.png``: small multiples, one panel per method: top-k, sample and auto (mean and 95 %
  band over seeds) against the compression ratio (log10, the data's range), with the dense model;
* ``differences.png``: sample - top-k and auto - top-k per method, with intervals and the zero line;
* ``collapse.png``: the per-layer kept fraction of top-k, sample and auto for the method and
  compression where they differ most;
* ``report.html``: all of it on one offline page.

Runs at density 1 are the dense reference. A run whose mask moved while training (``dst``,
:mod:`sketchprune.dst`) is labelled by its starting method and updater (``snip +rigl``) and paired,
seed by seed, with the run of the same starting mask, mode and compression kept static: ``dst`` is
an axis of comparison as the mode is. A settings group is one (model, dataset) pair; each
group gets its own figures (``accuracy-2.png``, ...) when a folder holds several. Panels follow
the methods' registration order; lines are coloured by mode.

The runs are read with :mod:`sketchprune.results` (the run-folder layout and the
:class:`~sketchprune.results.Result` record): a report needs neither the sweep runner nor the
training stack.
"""

from __future__ import annotations

import base64
import html
import json
import math
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from sketchprune import stats
from sketchprune.errors import SketchpruneError
from sketchprune.results import Result, collect
from sketchprune.tables import html_table, markdown_table

MODES = ("topk", "sample", "auto")
MODE_STYLE = {"topk": ("tab:blue", "-"), "sample": ("tab:orange", "--"), "auto": ("tab:green", ":")}
DST_PALETTE = ("tab:brown", "tab:purple", "tab:olive", "tab:cyan", "tab:pink", "tab:gray")
"""Colours of the ``<updater> - static`` differences (a moving mask against the same mask kept static), given
to the registered updaters in their order (:func:`updater_color`)."""


def updater_color(updater: str) -> str:
    """The colour of a DST updater's differences: its place among the registered updaters (kind ``update``)."""
    from sketchprune import dst

    moving = [n for n in dst.names() if dst.moves(n)]
    return DST_PALETTE[moving.index(updater) % len(DST_PALETTE)] if updater in moving else DST_PALETTE[-1]


def compression_label(compression: float) -> str:
    """A compression ratio as every table, figure and progress line writes it: three significant
    digits and an ``x`` (``3.16x``, ``10x``, ``31.6x``, ``316x``, ``1000x``; the dense model is ``1x``)."""
    return f"{compression:.3g}x" if compression < 999.5 else f"{round(compression)}x"


def setting_of(config: dict[str, Any]) -> str:
    """The settings group of a run: model and data set, with their options when they have any."""
    opts = {**config.get("model_options", {}), **config.get("data_options", {})}
    extra = ", ".join(f"{k}={v}" for k, v in sorted(opts.items()))
    return f"{config['model']} / {config['dataset']}" + (f" ({extra})" if extra else "")


def method_label(config: dict[str, Any]) -> str:
    """The method as the tables name it: the method, with what else sets its runs apart (structured
    units and their budget, rescaling, an N:M projection, a per-layer scope, a DST updater)."""
    label = config["method"]
    if config.get("structure", "weights") == "units":
        label += f" units by {config.get('keep_by', 'units')}" + (" rescaled" if config.get("rescale") else "")
    if config.get("nm"):
        label += f" {config['nm']}"
    if config.get("scope", "global") != "global":
        label += f" [{config['scope']}]"
    if config.get("dst", "static") != "static":
        label += f" +{config['dst']}"
    return label


SAMPLING_ONLY = ("scheme", "power", "sample_rounds", "signed_map")
"""Settings that apply to sampled masks only: a top-k run is the partner of every value of them."""
_NAMED = {"model", "dataset", "model_options", "data_options", "method", "mode", "density", "seed", "structure",
          "keep_by", "rescale", "nm", "scope", "dst"}  # named by the setting, the method label or the table's axes


def _other_settings(config: dict[str, Any]) -> dict[str, Any]:
    """A run's settings beside the named ones, flat: ``train.FIELD`` and the method's options by name."""
    flat: dict[str, Any] = {}
    for k, v in config.items():
        if k in _NAMED:
            continue
        if isinstance(v, dict):
            flat.update({(kk if k == "method_options" else f"{k}.{kk}"): vv for kk, vv in v.items()})
        else:
            flat[k] = v
    return flat


def _flat_settings(config: dict[str, Any]) -> dict[str, Any]:
    """Every setting of a run, flat: the named ones as they are, the others as :func:`_other_settings`
    gives them (the two never share a key)."""
    return {**{k: config[k] for k in _NAMED if k in config}, **_other_settings(config)}


def _with_default_options(flats: dict[str, dict[str, Any]], runs: list[Result]) -> None:
    """Fill in the method options a run's config leaves out (a config records only the options that
    differ from their defaults) where another run of the group sets them, at their default value."""
    keys = {k for f in flats.values() for k in f}
    if all(keys <= set(f) for f in flats.values()):
        return
    from sketchprune import methods  # only here: the registry imports every method

    for r in runs:
        method = r.config.get("method")
        if method in methods.names():
            defaults = {f.name: f.default for f in methods.get(method).option_fields()}
            flats[r.hash].update({k: defaults[k] for k in keys - set(flats[r.hash]) if k in defaults})


def _value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, tuple)):
        return ",".join(map(_value, v))
    return str(v)


def run_labels(results: list[Result]) -> dict[str, str]:
    """Hash -> the label of the run's group: the method label (or ``dense``) followed by every other
    setting that differs between the runs of its setting and method (``snip power=8``), so that runs
    which differ are never averaged together. Sampling-only settings are left out of top-k labels: a
    top-k run is the partner of sampled runs at every power."""
    groups: dict[tuple[str, str], list[Result]] = defaultdict(list)
    for r in results:
        c = r.config
        groups[(setting_of(c), "dense" if c["density"] >= 1 else method_label(c))].append(r)
    labels = {}
    for (_, base), runs in groups.items():
        flats = {r.hash: _other_settings(r.config) for r in runs}
        _with_default_options(flats, runs)
        keys = sorted({k for f in flats.values() for k in f})
        varying = [k for k in keys if len({json.dumps(f.get(k), sort_keys=True, default=str)
                                           for f in flats.values()}) > 1]
        for r in runs:
            shown = [k for k in varying if not (k in SAMPLING_ONLY and r.config["mode"] == "topk")]
            labels[r.hash] = " ".join([base, *(f"{k}={_value(flats[r.hash].get(k))}" for k in shown)])
    return labels


def is_dense(label: str) -> bool:
    """The label names the dense reference (runs at density 1)."""
    return label == "dense" or label.startswith("dense ")


def _partner(label: str) -> str:
    """The label of a sampled group's top-k partner (its sampling-only settings dropped)."""
    return " ".join(w for w in label.split(" ") if w.split("=", 1)[0] not in SAMPLING_ONLY)


def _static_partner(label: str) -> str:
    """The label of a moving mask's static partner: its updater (``+rigl``) and the DST settings dropped."""
    return " ".join(w for w in label.split(" ") if not w.startswith("+") and not w.startswith("dst_"))


RESULT_COLUMNS = ["hash", "setting", "method", "mode", "density", "compression", "seed", "final_test_acc",
                  "best_test_acc", "kept", "total", "collapsed_layers", "min_layer_density", "connected",
                  "log10_paths", "log10_flow", "auto_mode", "auto_power", "params_fraction", "macs_fraction",
                  "wall_seconds"]


def flat_row(result: Result, label: str | None = None) -> dict[str, Any]:
    """One table row of a run's result (``label``: its group's, from :func:`run_labels`)."""
    c = result.config
    diag = result.diagnostics or {}
    auto = result.auto or {}
    return {"hash": result.hash, "setting": setting_of(c), "method": label or method_label(c), "mode": c["mode"],
            "density": c["density"], "compression": result.compression, "seed": c["seed"],
            "final_test_acc": result.final_test_acc, "best_test_acc": result.best_test_acc,
            "kept": result.kept, "total": result.total, "collapsed_layers": len(result.collapsed),
            "min_layer_density": diag.get("min_layer_density"), "connected": diag.get("connected"),
            "log10_paths": diag.get("log10_paths"), "log10_flow": diag.get("log10_flow"),
            "auto_mode": auto.get("mode"), "auto_power": auto.get("power"),
            "params_fraction": result.params_fraction, "macs_fraction": result.macs_fraction,
            "wall_seconds": result.wall_seconds}


def _by_seed(results: list[Result], metric: str) -> dict[tuple, dict[int, float]]:
    """(setting, label, mode, density) -> seed -> metric; density-1 runs are (setting, 'dense...', 'dense', 1).
    Two runs with the same key are an error: they would be averaged as one."""
    labels = run_labels(results)
    groups: dict[tuple, dict[int, float]] = defaultdict(dict)
    seen: dict[tuple, str] = {}
    for r in results:
        c = r.config
        key = (setting_of(c), labels[r.hash], "dense", 1.0) if c["density"] >= 1 else \
            (setting_of(c), labels[r.hash], c["mode"], c["density"])
        held = seen.setdefault((*key, c["seed"]), r.hash)
        if held != r.hash and c["density"] >= 1:  # dense runs of several methods: the same training (no mask)
            continue
        if held != r.hash:
            raise SketchpruneError(f"runs {held} and {r.hash} have the same setting, method, mode, density and seed "
                                   f"({key[1]}, {key[2]}, {key[3]:g}, seed {c['seed']}) and would be averaged as one; "
                                   "report them from separate folders")
        groups[key][c["seed"]] = getattr(r, metric)
    return groups


def summarize(results: list[Result], metric: str = "final_test_acc") -> list[dict[str, Any]]:
    """Mean, 95 % t interval, std and seeds of ``metric`` per (setting, method, mode, density)."""
    rows = []
    for (setting, method, mode, density), seeds in sorted(_by_seed(results, metric).items(),
                                                          key=lambda kv: (kv[0][:3], -kv[0][3])):
        vals = list(seeds.values())
        mean, ci = stats.mean_ci(vals)
        std = statistics.stdev(vals) if len(vals) > 1 else 0.0
        rows.append({"setting": setting, "method": method, "mode": mode, "density": density,
                     "compression": 1 / density, "mean": mean, "ci95": ci, "std": std, "seeds": len(vals)})
    return rows


def paired_differences(results: list[Result], metric: str = "final_test_acc") -> list[dict[str, Any]]:
    """``sample - topk`` and ``auto - topk`` per (setting, method, density), and ``<dst> - static (mode)``
    for a mask that moved against the same starting mask kept static, paired by seed; ``identical``
    says the two gave the same accuracy on every seed (the same masks)."""
    groups = _by_seed(results, metric)
    rows = []
    for (setting, method, mode, density), seeds in sorted(groups.items()):
        base = groups.get((setting, _partner(method), "topk", density))
        if mode in ("sample", "auto") and base:
            d = stats.paired(seeds, base)
            if d is not None:
                rows.append({"setting": setting, "method": method, "versus": f"{mode} - topk", "density": density,
                             "compression": 1 / density, **d, "identical": _identical(seeds, base)})
        updater = next((w[1:] for w in method.split(" ") if w.startswith("+")), None)
        static = groups.get((setting, _static_partner(method), mode, density)) if updater else None
        if static:
            d = stats.paired(seeds, static)
            if d is not None:
                rows.append({"setting": setting, "method": method, "versus": f"{updater} - static ({mode})",
                             "density": density, "compression": 1 / density, **d,
                             "identical": _identical(seeds, static)})
    return rows


def _identical(a: dict[int, float], b: dict[int, float]) -> bool:
    """Every seed both have gave the same accuracy: the two modes chose the same masks (auto = top-k
    wherever top-k starves no layer), so their difference is no finding."""
    common = set(a) & set(b)
    return bool(common) and all(a[s] == b[s] for s in common)


DIAGNOSTICS = ("min_layer_density", "log10_paths", "log10_flow")


def diagnostic_power(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Which mask diagnostic at init predicts the accuracy after training: per setting and compression,
    over every pruned run that has diagnostics, the Spearman correlation of each diagnostic with the
    final accuracy (a disconnected mask counts as the lowest path count and flow, an overflow as the
    highest), and the mean accuracy of connected and disconnected masks."""
    import torch

    def value(r: dict[str, Any], key: str) -> float:
        v = r[key]
        if v is None:
            return -math.inf if not r["connected"] else math.inf
        return float(v)

    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if r["density"] < 1 and r["connected"] is not None:
            groups[(r["setting"], round(r["compression"], 4))].append(r)
    out = []
    for (setting, comp), runs in sorted(groups.items()):
        acc = torch.tensor([r["final_test_acc"] for r in runs], dtype=torch.float64)
        row: dict[str, Any] = {"setting": setting, "compression": comp, "runs": len(runs)}
        for key in DIAGNOSTICS:
            row[f"rho_{key}"] = stats.spearman(torch.tensor([value(r, key) for r in runs], dtype=torch.float64), acc)
        for label, want in (("connected", True), ("disconnected", False)):
            sel = [r["final_test_acc"] for r in runs if bool(r["connected"]) is want]
            row[f"{label}_runs"] = len(sel)
            row[f"{label}_acc"] = statistics.fmean(sel) if sel else None
        out.append(row)
    return out


def _dense(summary: list[dict[str, Any]], setting: str) -> dict[str, Any] | None:
    return next((r for r in summary if r["setting"] == setting and is_dense(r["method"])), None)


def _method_order(methods_present: set[str]) -> list[str]:
    from sketchprune import methods

    known = [m for m in methods.names() if m in methods_present]
    return known + sorted(methods_present - set(known))


CLASSES = {"synthetic": 10, "digits": 10, "mnist1d": 10, "mnist": 10, "fashion-mnist": 10, "cifar10": 10,
           "cifar100": 100, "tiny-imagenet": 200}
"""Classes of the built-in classification data sets (chance accuracy is one over them); ``tokens``
has ``vocab`` of them (16 by default)."""


def chance_accuracy(config: dict[str, Any]) -> float | None:
    """The accuracy of guessing uniformly on a run's data set (None when it is not known here)."""
    name, options = config.get("dataset"), config.get("data_options") or {}
    classes = int(options.get("vocab", 16)) if name == "tokens" else CLASSES.get(str(name))
    return 1.0 / classes if classes else None


def _compression_axis(ax: Any, compressions: list[float]) -> None:
    """A log-scale x axis ticked at the compressions there are, labelled as the tables write them."""
    from matplotlib.ticker import NullFormatter, NullLocator

    ticks = sorted(set(round(c, 6) for c in compressions))
    ax.set_xscale("log")
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xticks(ticks, [compression_label(c) for c in ticks])
    lo, hi = min(ticks), max(ticks)
    pad = (hi / lo) ** 0.08 if hi > lo else 1.3
    ax.set_xlim(lo / pad, hi * pad)


MODE_MARKERS = {"topk": dict(marker="o", ms=4.5, lw=2.6, mfc=None),
                "sample": dict(marker="s", ms=3.5, lw=1.6, mfc=None),
                "auto": dict(marker="^", ms=5.5, lw=1.3, mfc="white")}
"""Line width, marker and fill per mode: top-k wide under the others, auto hollow on top, so a line
drawn over another still shows both."""


def small_multiples(summary: list[dict[str, Any]], setting: str, path: str | Path,
                    paired: list[dict[str, Any]] | None = None, chance: float | None = None) -> Path:
    """One panel per method: top-k / sample / auto (mean and 95 % band, clipped to [0, 1]) against the
    compression (log scale), with the dense model and chance; a mode that gave top-k's accuracy on
    every seed at every compression is named in its panel (its line lies on top-k's)."""
    from sketchprune.atomic import save_figure

    rows = [r for r in summary if r["setting"] == setting and not is_dense(r["method"])]
    names = _method_order({r["method"] for r in rows})
    fig, axes = _panels(len(names), 2.8)
    dense = _dense(summary, setting)
    same = _same_as_topk(paired or [], setting)
    for ax, method in zip(axes.flat, names):
        if chance is not None:
            ax.axhline(chance, color="0.45", lw=0.9, ls=(0, (1, 2)), label="chance")
        if dense is not None:
            ax.axhline(dense["mean"], color="0.3", lw=1, ls="-.", label="dense")
            if math.isfinite(dense["ci95"]):
                ax.axhspan(*_clip(dense["mean"] - dense["ci95"], dense["mean"] + dense["ci95"]), color="0.5",
                           alpha=0.12)
        for mode in MODES:
            line = sorted((r for r in rows if r["method"] == method and r["mode"] == mode),
                          key=lambda r: r["compression"])
            if not line:
                continue
            color, ls = MODE_STYLE[mode]
            style = MODE_MARKERS[mode]
            x = [r["compression"] for r in line]
            m = [r["mean"] for r in line]
            h = [r["ci95"] if math.isfinite(r["ci95"]) else 0.0 for r in line]
            ax.plot(x, m, ls=ls, color=color, label=mode, marker=style["marker"], ms=style["ms"], lw=style["lw"],
                    mfc=style["mfc"] or color, zorder=3 + MODES.index(mode))
            band = [_clip(a - b, a + b) for a, b in zip(m, h)]
            ax.fill_between(x, [b[0] for b in band], [b[1] for b in band], color=color, alpha=0.13, lw=0)
        note = [f"{mode} = top-k" for mode in ("sample", "auto") if (method, mode) in same]
        if note:
            ax.text(0.03, 0.04, ", ".join(note) + " (same masks)", transform=ax.transAxes, ha="left", va="bottom",
                    fontsize=7, color="0.25")
    _label_panels(axes, names, "test accuracy")
    _compression_axis(axes[0][0], [r["compression"] for r in rows])
    top = max([_clip(r["mean"], r["mean"] + (r["ci95"] if math.isfinite(r["ci95"]) else 0))[1] for r in rows]
              + ([dense["mean"] + (dense["ci95"] if math.isfinite(dense["ci95"]) else 0)] if dense else []))
    axes[0][0].set_ylim(0, min(1.0, top + 0.08))
    _legend_and_title(fig, axes, len(names), f"{setting}: test accuracy, mean and 95 % interval over seeds")
    return save_figure(fig, path)


def _clip(lo: float, hi: float) -> tuple[float, float]:
    """An interval of accuracies clipped to what accuracy can be, [0, 1]."""
    return max(0.0, lo), min(1.0, hi)


def _same_as_topk(paired: list[dict[str, Any]], setting: str) -> set[tuple[str, str]]:
    """(method, mode) pairs whose every paired difference with top-k is identical (the same masks)."""
    by: dict[tuple[str, str], list[bool]] = defaultdict(list)
    for r in paired:
        if r["setting"] == setting and r["versus"].endswith(" - topk"):
            by[(r["method"], r["versus"].split(" ")[0])].append(bool(r.get("identical")))
    return {k for k, v in by.items() if v and all(v)}


def _panels(count: int, height: float) -> tuple[Any, Any]:
    """A grid of up to 4 columns with shared axes, for ``count`` panels (and a spare for the legend)."""
    from sketchprune.plotting import plt

    cols = min(4, max(1, count))
    rows = max(1, math.ceil(count / cols))
    return plt.subplots(rows, cols, figsize=(3.4 * cols, height * rows), sharex=True, sharey=True, squeeze=False)


def _label_panels(axes: Any, titles: list[str], ylabel: str) -> None:
    for ax, title in zip(axes.flat, titles):
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
    for ax in axes[-1]:
        ax.set_xlabel("compression (log scale)")
    for ax in axes[:, 0]:
        ax.set_ylabel(ylabel)


def _legend_and_title(fig: Any, axes: Any, used: int, title: str) -> None:
    """The legend in a spare panel (or under the figure) and the title above it."""
    handles, labels = {}, {}
    for ax in axes.flat[:used]:
        for h, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, h)
    for ax in axes.flat[used:]:
        ax.set_visible(False)
    if used < axes.size:
        spare = axes.flat[used]
        spare.set_visible(True)
        spare.axis("off")
        spare.legend(list(handles.values()), list(handles), loc="center", fontsize=9, frameon=False)
    else:
        fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=len(handles), fontsize=8,
                   frameon=False, bbox_to_anchor=(0.5, -0.04))
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()


def difference_plot(paired: list[dict[str, Any]], setting: str, path: str | Path) -> Path:
    """Per method: sample - top-k and auto - top-k (mean, 95 % interval) against the compression (log
    scale); a filled marker where the interval excludes 0. Points where both gave the same accuracy on
    every seed (the same masks) are left out, and each panel names them."""
    from matplotlib.lines import Line2D

    from sketchprune.atomic import save_figure

    rows = [r for r in paired if r["setting"] == setting]
    names = _method_order({r["method"] for r in rows})
    fig, axes = _panels(len(names), 2.6)
    shifts = {"auto": 10 ** 0.02, "sample": 10 ** -0.02}
    notes: dict[str, str] = {}
    for ax, method in zip(axes.flat, names):
        ax.axhline(0, color="0.3", lw=1)
        left_out = []
        for versus in sorted({r["versus"] for r in rows if r["method"] == method}):
            line = sorted((r for r in rows if r["method"] == method and r["versus"] == versus),
                          key=lambda r: r["compression"])
            mode = versus.split(" ")[0]  # sample, auto, or a DST updater (against static)
            color = MODE_STYLE[mode][0] if mode in MODE_STYLE else updater_color(mode)
            shift = shifts.get(mode, 1.0)
            same = [r for r in line if r.get("identical")]
            if same:
                where = "every x" if len(same) == len(line) else ", ".join(compression_label(r["compression"])
                                                                           for r in same)
                partner = "top-k" if mode in MODE_STYLE else "static"  # a moving mask's partner: it kept static
                left_out.append(f"{mode} (vs {partner}) at {where}")
            shown = [r for r in line if not r.get("identical")]
            for r in shown:
                err = r["ci"] if math.isfinite(r["ci"]) else 0.0
                ax.errorbar(r["compression"] * shift, r["diff"], yerr=err, fmt="o", ms=4, color=color, capsize=2,
                            mfc=color if r["verdict"] else "white", zorder=3)
            if shown:
                ax.plot([r["compression"] * shift for r in shown], [r["diff"] for r in shown], color=color, lw=0.8,
                        alpha=0.6, label=versus)
        notes[method] = "; ".join(left_out)
    _label_panels(axes, names, "accuracy difference")
    for ax, method in zip(axes.flat, names):
        if notes.get(method):  # under the panel's name: which points are left out, being the same masks
            import textwrap

            text = textwrap.fill(f"not drawn (the same accuracy as its partner on every seed): {notes[method]}", 52)
            ax.set_title(method + "\n" * (text.count("\n") + 1), fontsize=9)
            ax.text(0.5, 1.02, text, transform=ax.transAxes, ha="center", va="bottom", fontsize=6.5, color="0.3")
    _compression_axis(axes[0][0], [r["compression"] for r in rows])
    for m in (Line2D([], [], ls="", marker="o", color="0.3", mfc="0.3", label="filled: 95 % interval excludes 0"),
              Line2D([], [], ls="", marker="o", color="0.3", mfc="white", label="hollow: it includes 0")):
        axes.flat[len(names) - 1].add_line(m)  # legend entries after the lines' (they draw nothing)
    _legend_and_title(fig, axes, len(names), f"{setting}: paired differences over seeds (mean and 95 % interval)")
    return save_figure(fig, path)


def collapse_case(results: list[Result], setting: str, run: str | None = None
                  ) -> tuple[str, float, dict[str, dict[str, float]]] | None:
    """The (method, density) where the modes' mean accuracies differ most: the case where what the
    masks keep per layer matters most (or the case of run ``run``); ties go to the case whose
    per-layer kept fractions differ most. Returns it with each mode's mean per-layer fraction over seeds."""
    per: dict[tuple, dict[str, list[dict[str, float]]]] = defaultdict(lambda: defaultdict(list))
    acc: dict[tuple, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    labels = run_labels(results)
    for r in results:
        c = r.config
        if setting_of(c) == setting and c["density"] < 1:
            key = (_partner(labels[r.hash]), c["density"])
            per[key][c["mode"]].append(r.layer_density)
            acc[key][c["mode"]].append(r.final_test_acc)
    if run is not None:
        chosen = next((r for r in results if r.hash == run), None)
        if chosen is None:
            raise SketchpruneError(f"no run with hash {run!r} here; see results.csv for the hashes")
        keys = [(_partner(labels[chosen.hash]), chosen.config["density"])]
    else:
        keys = [k for k, modes in per.items() if len(modes) > 1]
    if not keys:
        return None

    def mean_layers(rows: list[dict[str, float]]) -> dict[str, float]:
        return {n: sum(r[n] for r in rows) / len(rows) for n in rows[0]}

    def at_stake(key: tuple) -> tuple[float, float]:
        means = [statistics.fmean(v) for v in acc[key].values()]
        fracs = [mean_layers(v) for v in per[key].values()]
        layers = max(abs(math.log10(a[n] + 1e-4) - math.log10(b[n] + 1e-4)) for a in fracs for b in fracs for n in a)
        return max(means) - min(means), layers

    best = max(keys, key=at_stake)
    return best[0], best[1], {mode: mean_layers(rows) for mode, rows in sorted(per[best].items(),
                                                                              key=lambda kv: MODES.index(kv[0])
                                                                              if kv[0] in MODES else 9)}


def layer_names(shapes: dict[str, tuple[int, ...]]) -> dict[str, str]:
    """Each prunable tensor's name with its layer type and shape, as the collapse view writes it
    (``1.weight: Conv1d 32x1x5``): the type follows from the shape (and an attention projection's name)."""
    kinds = {2: "Linear", 3: "Conv1d", 4: "Conv2d", 5: "Conv3d"}
    out = {}
    for name, shape in shapes.items():
        kind = "attention" if name.rsplit(".", 1)[-1].endswith("proj_weight") else kinds.get(len(shape), "tensor")
        out[name] = f"{name}: {kind} {'x'.join(map(str, shape))}"
    return out


def collapse_plot(case: tuple[str, float, dict[str, dict[str, float]]], path: str | Path,
                  accuracy: dict[str, float] | None = None, names: dict[str, str] | None = None) -> Path:
    """Grouped bars: the kept fraction of each layer under each mode (log scale); a layer a mode
    emptied gets an x at the foot of its bar instead of a bar. ``accuracy``: each mode's mean
    accuracy, in the title; ``names``: each tensor's label (:func:`layer_names`)."""
    from sketchprune.atomic import save_figure
    from sketchprune.plotting import plt

    method, density, modes = case
    layers = list(next(iter(modes.values())))
    positive = [f for fracs in modes.values() for f in fracs.values() if f > 0]
    floor = min([density, *positive]) / 3
    fig, ax = plt.subplots(figsize=(max(6.5, 0.6 * len(layers) * len(modes)), 4.2))
    width = 0.8 / len(modes)
    emptied = False
    for i, (mode, fracs) in enumerate(modes.items()):
        color = MODE_STYLE.get(mode, ("tab:gray", "-"))[0]
        xs = [j + i * width for j in range(len(layers))]
        label = mode + (f" (accuracy {accuracy[mode]:.3f})" if accuracy and mode in accuracy else "")
        ax.bar([x for x, n in zip(xs, layers) if fracs[n] > 0], [fracs[n] - floor for n in layers if fracs[n] > 0],
               width, bottom=floor, color=color, label=label)
        zero = [x for x, n in zip(xs, layers) if fracs[n] <= 0]
        if zero:
            emptied = True
            ax.plot(zero, [floor * 1.15] * len(zero), ls="", marker="X", ms=8, color=color, mec="black", mew=0.6)
    if emptied:
        ax.plot([], [], ls="", marker="X", ms=8, color="white", mec="black", mew=0.6, label="x: layer emptied (0 kept)")
    ax.set_xticks([j + width * (len(modes) - 1) / 2 for j in range(len(layers))],
                  [(names or {}).get(n, n) for n in layers], rotation=30, ha="right", fontsize=7)
    ax.axhline(density, color="tab:red", ls="--", lw=1, label=f"overall density {density:.3g}")
    ax.set_yscale("log")
    ax.set_ylim(floor, 1.5)
    ax.set(ylabel="kept fraction of the layer")
    ax.set_title(f"{method} at {compression_label(1 / density)}: kept fraction per layer, where the modes' "
                 "accuracies differ most", fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)  # beside the bars, never on them
    fig.tight_layout()
    return save_figure(fig, path)


def pivot_tables(summary: list[dict[str, Any]], paired: list[dict[str, Any]], setting: str,
                 markdown: bool = True) -> str:
    """Methods x compression per mode: mean ± 95 % interval, the best of each column in bold, and
    ▲ / ▼ where sampling (or auto) beats / loses to top-k with the interval excluding 0."""
    rows = [r for r in summary if r["setting"] == setting and not is_dense(r["method"])]
    comps = sorted({round(r["compression"], 4) for r in rows})
    verdict = {(r["method"], r["versus"].split(" ")[0], round(r["compression"], 4)): r["verdict"] for r in paired
               if r["setting"] == setting}
    best = {c: max(r["mean"] for r in rows if round(r["compression"], 4) == c) for c in comps}
    out = []
    for mode in MODES:
        table: list[dict[str, str]] = []
        bold: set[tuple[int, str]] = set()
        for method in _method_order({r["method"] for r in rows if r["mode"] == mode}):
            row = {"method": method}
            for c in comps:
                r = next((x for x in rows if (x["method"], x["mode"], round(x["compression"], 4)) == (method, mode, c)),
                         None)
                if r is None:
                    row[compression_label(c)] = ""
                    continue
                cell = f"{r['mean']:.3f} ± {r['ci95']:.3f}" if math.isfinite(r["ci95"]) else f"{r['mean']:.3f}"
                mark = {1: " ▲", -1: " ▼"}.get(verdict.get((method, mode, c), 0), "")
                if abs(r["mean"] - best[c]) < 1e-12:
                    cell = f"**{cell}**" if markdown else cell
                    bold.add((len(table), compression_label(c)))
                row[compression_label(c)] = cell + mark
            table.append(row)
        if not table:
            continue
        columns = ["method"] + [compression_label(c) for c in comps]
        title = f"{mode}: test accuracy, mean ± 95 % interval"
        if markdown:
            out.append(f"### {title}\n\n" + markdown_table(table, columns))
        else:
            out.append(f"<h3>{html.escape(title)}</h3>" + html_table(table, columns, bold=bold))
    return "\n".join(out)


DIAGNOSTICS_NOTE = ("Per compression, over every pruned run: the Spearman correlation of each diagnostic with the "
                    "final test accuracy (rho), and the mean accuracy of connected and disconnected masks.")


def readable(rows: list[dict[str, Any]], drop: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """Table rows as the page and the command line show them: the compression as ``3.16x`` (the CSV
    files keep the ratio as a number), booleans as yes / no, ``drop``'s columns left out."""
    out = []
    for r in rows:
        row = {k: v for k, v in r.items() if k not in drop}
        if isinstance(row.get("compression"), (int, float)):
            row["compression"] = compression_label(row["compression"])
        out.append({k: ("yes" if v is True else "no" if v is False else v) for k, v in row.items()})
    return out


def varying_settings(results: list[Result]) -> list[str]:
    """Every setting (flat: ``power``, ``train.epochs``, a method option, ``scope``, ...) whose value
    differs between the runs, beside those the tables show anyway (setting, method, mode, density,
    seed): each is a column of the all-runs table."""
    shown = {"model", "dataset", "model_options", "data_options", "method", "mode", "density", "seed"}
    flats = [{k: v for k, v in _flat_settings(r.config).items() if k not in shown} for r in results]
    keys = sorted({k for f in flats for k in f})
    return [k for k in keys if len({json.dumps(f.get(k), sort_keys=True, default=str) for f in flats}) > 1]


RUN_TABLE = ["setting", "method", "mode", "compression", "seed", "final_test_acc", "collapsed_layers",
             "min_layer_density", "connected", "auto_mode", "auto_power", "params_fraction", "macs_fraction",
             "wall_seconds", "hash"]
"""The all-runs table of the page (results.csv has every column)."""


def _run_order(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Runs in the order of the tables: setting, method (registry order), mode, compression, seed."""
    order = {m: i for i, m in enumerate(_method_order({r["method"] for r in rows}))}
    return sorted(rows, key=lambda r: (r["setting"], is_dense(r["method"]), order.get(r["method"], 0), r["method"],
                                       MODES.index(r["mode"]) if r["mode"] in MODES else 9, r["compression"],
                                       r["seed"]))


def _paired_order(paired: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Paired rows in the order of the figures: setting, method (registry order), comparison, compression."""
    order = {m: i for i, m in enumerate(_method_order({r["method"] for r in paired}))}
    return sorted(paired, key=lambda r: (r["setting"], order.get(r["method"], 0), r["method"], r["versus"],
                                         r["compression"]))


def _layer_shapes(root: Path, results: list[Result], setting: str) -> dict[str, tuple[int, ...]]:
    """Each prunable tensor's shape, from the masks file of a run of ``setting`` (none when no run
    folder holds one: a structured run, or results without their folders)."""
    from safetensors import safe_open

    hashes = {r.hash for r in results if setting_of(r.config) == setting}
    for path in sorted(root.rglob("masks.safetensors")):
        if not any(h in path.parent.name for h in hashes):
            continue
        try:
            with safe_open(str(path), framework="pt") as f:
                return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        except Exception:  # noqa: BLE001 - a damaged file: the names alone
            return {}
    return {}


UNNAMED_LAYER = "(a layer results.csv does not name)"
"""What a collapsed layer of a run read back from ``results.csv`` is called (the file keeps their number)."""


def results_from_csv(path: str | Path) -> list[Result]:
    """The runs of a report's ``results.csv`` as Results, for a report made again without the run
    folders (the committed E5 reports): each run's group label stands for its method (so the groups,
    summaries, paired differences, pivot tables and the accuracy and difference figures are those of
    the folders); the per-layer kept fractions are not in the file, so there is no collapse view, and
    of the collapsed layers only their number is (each stands as ``UNNAMED_LAYER``)."""
    import csv

    def number(v: str) -> float | None:
        return float(v) if v not in ("", None) else None

    out = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            model, _, rest = row["setting"].partition(" / ")
            dataset, _, options = rest.partition(" (")
            opts = dict(kv.split("=", 1) for kv in options.rstrip(")").split(", ")) if options else {}
            config = {"model": model, "dataset": dataset, "model_options": opts, "method": row["method"],
                      "mode": row["mode"], "density": float(row["density"]), "seed": int(row["seed"])}
            diag = {k: number(row.get(k, "")) for k in ("min_layer_density", "log10_paths", "log10_flow")}
            diag["connected"] = {"True": True, "False": False}.get(row.get("connected", ""))
            out.append(Result(
                config=config, hash=row["hash"], compression=float(row["compression"]),
                final_test_acc=float(row["final_test_acc"]), best_test_acc=float(row["best_test_acc"]),
                final_train_loss=math.nan, kept=int(row["kept"]), total=int(row["total"]),
                density_actual=int(row["kept"]) / int(row["total"]),
                collapsed=[UNNAMED_LAYER] * int(row["collapsed_layers"]), layer_density={},
                diagnostics=diag if diag["connected"] is not None else None,
                auto={"mode": row["auto_mode"], "power": number(row["auto_power"])} if row.get("auto_mode") else None,
                params_fraction=number(row.get("params_fraction", "")),
                macs_fraction=number(row.get("macs_fraction", "")), prune_seconds=math.nan,
                wall_seconds=float(row["wall_seconds"])))
    return out


def build_report(root: str | Path, out: str | Path | None = None, run: str | None = None) -> dict[str, Any]:
    """Collect every run under ``root`` into CSV/Markdown tables, figures and one offline HTML page;
    ``root`` may also be a report's ``results.csv`` (:func:`results_from_csv`: no collapse view)."""
    from sketchprune.atomic import write_csv, write_text

    root = Path(root)
    from_csv = root.is_file() and root.suffix == ".csv"
    out = Path(out) if out is not None else (root.parent if from_csv else root) / "report"
    results = results_from_csv(root) if from_csv else collect(root)
    if not results:
        raise SketchpruneError(f"no finished runs (result.json) under {root}; run `sketchprune sweep` first")
    if run is not None and not any(r.hash == run for r in results):  # before anything is written
        raise SketchpruneError(f"no run with hash {run!r} under {root}; see results.csv (or sketchprune sweep "
                               "--dry-run) for the hashes")
    labels = run_labels(results)
    varying = varying_settings(results)
    configs = {r.hash: r.config for r in results}
    flats = {r.hash: _flat_settings(r.config) for r in results}
    rows = _run_order([{**flat_row(r, labels[r.hash]), **{k: flats[r.hash].get(k) for k in varying}}
                       for r in results])
    summary = summarize(results)
    paired = paired_differences(results)
    power = diagnostic_power(rows)
    files: dict[str, Path] = {
        "results_csv": write_csv(out / "results.csv", rows, RESULT_COLUMNS + varying),
        "summary_csv": write_csv(out / "summary.csv", summary),
        "paired_csv": write_csv(out / "paired.csv", paired,
                                ["setting", "method", "versus", "density", "compression", "diff", "ci", "lo", "hi",
                                 "pairs", "verdict", "identical"]),
        "diagnostics_csv": write_csv(out / "diagnostics.csv", power,
                                     ["setting", "compression", "runs"] + [f"rho_{k}" for k in DIAGNOSTICS]
                                     + ["connected_runs", "connected_acc", "disconnected_runs", "disconnected_acc"]),
    }
    settings = sorted({r["setting"] for r in summary})
    sections, pivots = [], []
    for i, setting in enumerate(settings):
        suffix = "" if i == 0 else f"-{i + 1}"
        figs = {}
        chance = next((chance_accuracy(c) for c in configs.values() if setting_of(c) == setting), None)
        if any(r["setting"] == setting and not is_dense(r["method"]) for r in summary):  # not dense runs alone
            figs[f"accuracy{suffix}"] = small_multiples(summary, setting, out / f"accuracy{suffix}.png", paired,
                                                        chance)
        if any(r["setting"] == setting for r in paired):
            figs[f"differences{suffix}"] = difference_plot(paired, setting, out / f"differences{suffix}.png")
        case = None if from_csv else collapse_case(results, setting, run)
        if case is not None:
            means = {r["mode"]: r["mean"] for r in summary if r["setting"] == setting
                     and _partner(r["method"]) == case[0] and abs(r["density"] - case[1]) < 1e-12}
            figs[f"collapse{suffix}"] = collapse_plot(case, out / f"collapse{suffix}.png", means,
                                                      layer_names(_layer_shapes(root, results, setting)))
        files.update({f"{k}_png": v for k, v in figs.items()})
        pivots.append(f"## {setting}\n\n" + pivot_tables(summary, paired, setting))
        dense = _dense(summary, setting)
        dense_text = (f"Dense model: {dense['mean']:.3f} ± {dense['ci95']:.3f} over {dense['seeds']} seed(s)."
                      if dense else "No dense runs (density 1) here.")
        if chance is not None:
            dense_text += f" Chance: {chance:.3f}."
        if not figs:
            dense_text += " Only dense runs here: nothing pruned to compare."
        images = "".join(f'<figure><img alt="{html.escape(k)}" src="data:image/png;base64,'
                         f'{base64.b64encode(Path(v).read_bytes()).decode()}"></figure>' for k, v in figs.items())
        sections.append(f"<h2>{html.escape(setting)}</h2><p>{html.escape(dense_text)}</p>{images}"
                        f"{pivot_tables(summary, paired, setting, markdown=False)}")
    files["pivot_md"] = write_text(out / "pivot.md", "\n".join(pivots))
    legend = ("▲ / ▼: sampling (or auto) better / worse than top-k, paired over seeds, the 95 % t interval "
              "excluding 0; bold: the best mean of each compression. Compression x keeps 1/x of the weights.")
    one_setting = len(settings) == 1
    run_columns = [c for c in RUN_TABLE if not (one_setting and c == "setting")]
    run_columns = run_columns[:5] + varying + run_columns[5:]
    identical = [r for r in paired if r.get("identical")]
    paired_note = (f"{len(identical)} of {len(paired)} comparisons gave the same accuracy on every seed (the same "
                   "masks: auto keeps top-k wherever top-k starves no layer); they are marked identical and left "
                   "out of the differences figure." if identical else "")
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><meta name='viewport' content='width=device-width'>"
        "<title>sketchprune report</title>"
        "<style>body{font-family:sans-serif;margin:1.5em auto;max-width:1280px;padding:0 1em}"
        "table{border-collapse:collapse;font-size:12px;margin-bottom:1em}"
        "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right;white-space:nowrap}"
        "th{background:#f4f4f4;position:sticky;top:0}.wide{overflow-x:auto;max-width:100%}"
        "img{max-width:100%;height:auto}figure{margin:1em 0}</style></head><body>"
        f"<h1>sketchprune report: {html.escape(str(root))}</h1><p>{len(results)} runs. {html.escape(legend)}</p>"
        + "".join(sections)
        + f"<h2>Paired differences</h2><p>{html.escape(paired_note)}</p><div class='wide'>"
        + html_table(readable(_paired_order(paired), drop=("density", "lo", "hi") + (("setting",) if one_setting else ())))
        + "</div>"
        + f"<h2>Mask diagnostics at init against the final accuracy</h2><p>{html.escape(DIAGNOSTICS_NOTE)}</p>"
        + f"<div class='wide'>{html_table(readable(power, drop=('setting',) if one_setting else ()))}</div>"
        + "<h2>All runs</h2><p>Sorted by method, mode, compression and seed. Every setting that differs between "
          "runs is a column" + (f" ({', '.join(varying)})" if varying else ": here none beside method, mode, "
                                "compression and seed") + "; results.csv has every column.</p>"
        + f"<div class='wide'>{html_table(readable(rows), run_columns)}</div>"
        + "</body></html>"
    )
    files["html"] = write_text(out / "report.html", page)
    return {"runs": len(results), "summary": summary, "paired": paired,
            "files": {k: str(v) for k, v in files.items()}}
