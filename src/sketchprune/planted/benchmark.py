"""The planted-ticket benchmark: prune the mother network with registered methods and score the masks
against the ticket that is known to be there (Fischer & Burkholz, ICLR 2022).

Per run (task, method, mode, density, seed): ``recall`` (the share of the planted weights and
biases the mask keeps), ``precision`` (the share of kept entries that are planted), ``strong``
(the pruned network's test metric before any training), ``weak`` (after the paper's training: 10
epochs of Adam, lr 1e-3, batch 32), the collapsed layers and whether an input-output path
survives. The density ``ticket`` is the planted ticket's own density. Masks cover weights and
biases (``include_bias=True``), as in the paper. Data-driven methods see 40 training samples
(the reference's ``prune_dataset_ratio`` 10 times 4 classes); methods that train while they prune
get a trainer with the same training settings.

Runs are appended to ``runs.jsonl`` in the output folder as they finish, so a killed benchmark
resumes where it stopped (the folder's ``config.json`` must match).
"""

from __future__ import annotations

import copy
import json
import statistics
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from sketchprune import methods, seeding
from sketchprune.atomic import write_json, write_text
from sketchprune.errors import SketchpruneError, check
from sketchprune.masks import Masks
from sketchprune.planted.tickets import Planted, evaluate, higher_is_better, plant
from sketchprune.train import TrainConfig, train

PAPER_TRAINING = TrainConfig(epochs=10, batch_size=32, optimizer="adam", lr=1e-3, weight_decay=0.0,
                             lr_schedule="constant")
"""The paper's training of the pruned network (and the trainer of methods that train)."""
PRUNE_SAMPLES = 40
MODES = ("topk", "sample")
TICKET = "ticket"


def parse_densities(values: Iterable[str | float]) -> list[float | str]:
    """Densities in (0, 1] and the word ``ticket`` (the planted ticket's own density)."""
    out: list[float | str] = []
    for v in values:
        if isinstance(v, str) and v.strip() == TICKET:
            out.append(TICKET)
            continue
        try:
            d = float(v)
        except (TypeError, ValueError):
            raise SketchpruneError(f"density {v!r} is neither a number in (0, 1] nor 'ticket'") from None
        check(0 < d <= 1, f"density must lie in (0, 1] or be 'ticket', got {v!r}")
        out.append(d)
    check(bool(out), "give at least one density")
    return out


def pai_methods() -> list[str]:
    """Every registered method that prunes at initialization: the score and mask kinds (not those that
    train while they prune, nor dynamic sparse training)."""
    return [n for n in methods.names("weights") if methods.get(n).kind in ("score", "mask")]


def method_list(text: str | Sequence[str]) -> list[str]:
    """Method names from a comma list (``pai``: :func:`pai_methods`), each checked against the registry."""
    items = [t.strip() for t in text.split(",")] if isinstance(text, str) else list(text)
    out: list[str] = []
    for t in items:
        for name in (pai_methods() if t == "pai" else [t] if t else []):
            methods.get(name).check_form("weights")
            if name not in out:
                out.append(name)
    check(bool(out), "give at least one method (a comma list, or pai)")
    return out


def input_output_path(model: nn.Module, masks: Masks) -> bool:
    """Whether some input reaches some output through kept weights of ``model``'s Linear layers (in order)."""
    reach: Tensor | None = None
    for name, m in model.named_modules():
        if not isinstance(m, nn.Linear):
            continue
        keep = masks.get(f"{name}.weight" if name else "weight")
        keep = torch.ones(m.weight.shape, dtype=torch.bool) if keep is None else keep.cpu()
        if reach is None:
            reach = torch.ones(m.in_features, dtype=torch.bool)
        reach = (keep.double() @ reach.double()) > 0
    return bool(reach is not None and reach.any())


def overlap(masks: Masks, ticket: Masks) -> tuple[int, int, int]:
    """(kept, planted, kept and planted) over the ticket's tensors."""
    kept = sum(int(masks[n].sum()) for n in ticket)
    planted = sum(int(t.sum()) for t in ticket.values())
    both = sum(int((masks[n].cpu() & t).sum()) for n, t in ticket.items())
    return kept, planted, both


def prune_data(p: Planted, samples: int, seed: int) -> list[tuple[Tensor, Tensor]]:
    """``samples`` training samples of a seeded permutation, one batch."""
    perm = torch.randperm(len(p.data.train_y), generator=seeding.generator(seed, "planted-prune-data"))[:samples]
    return [(p.data.train_x[perm], p.data.train_y[perm])]


def trained_metric(p: Planted, masks: Masks, cfg: TrainConfig, seed: int,
                   start_state: dict[str, Tensor] | None = None) -> float:
    """The paper's metric of the pruned mother after training its kept weights with ``cfg``."""
    model = copy.deepcopy(p.model)
    if start_state is not None:
        model.load_state_dict(start_state)
    train(model, p.data, cfg, masks=masks, seed=seed, device="cpu")
    return evaluate(model, p.data, masks)


def run_one(p: Planted, method: str, mode: str, density: float, *, weak: bool = True,
            cfg: TrainConfig = PAPER_TRAINING, prune_samples: int = PRUNE_SAMPLES,
            options: dict[str, Any] | None = None) -> dict[str, Any]:
    """One benchmark run on ``p`` (its seed seeds the pruning and the training too)."""
    from sketchprune.experiment import Trainer
    from sketchprune.pruning import prune

    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # collapse is recorded
        masks = prune(p.model, method, density, mode=mode, data=prune_data(p, prune_samples, p.seed), seed=p.seed,
                      trainer=Trainer(p.data, cfg, seed=p.seed, device="cpu"), include_bias=True,
                      input_shape=tuple(p.data.input_shape), **(options or {}))
    start = masks.start_state
    model = p.model
    if start is not None:
        model = copy.deepcopy(p.model)
        model.load_state_dict(start)
    kept, planted, both = overlap(masks, p.ticket)
    weights = [n for n in masks if n.endswith("weight")]
    return {"method": method, "mode": mode, "kept": kept, "recall": both / planted,
            "precision": both / kept if kept else 0.0, "strong": evaluate(model, p.data, masks),
            "weak": trained_metric(p, masks, cfg, p.seed, start) if weak else None,
            "collapsed": [n for n in weights if not bool(masks[n].any())],
            "path": input_output_path(model, masks), "seconds": time.perf_counter() - t0}


def ticket_record(planted: Sequence[Planted], cfg: TrainConfig) -> dict[str, Any]:
    """The planted ticket: its size, and per seed its own metric (the paper's), the metric of the
    mother masked to it (evaluated as the runs are), after the paper's training, and the mother's."""
    p0 = planted[0]
    rep = p0.ticket.report()
    per_seed = [{"seed": p.seed, "ticket_metric": p.ticket_metric, "masked_metric": evaluate(p.model, p.data, p.ticket),
                 "trained_metric": trained_metric(p, p.ticket, cfg, p.seed), "mother_metric": p.mother_metric}
                for p in planted]
    mean = {k: statistics.fmean(s[k] for s in per_seed) for k in ("ticket_metric", "masked_metric",
                                                                   "trained_metric", "mother_metric")}
    return {"task": p0.task, "depth": p0.depth, "width": p0.width, "metric": p0.metric_name,
            "higher_is_better": higher_is_better(p0.task), "kept": rep["kept"], "total": rep["total"],
            "density": rep["kept"] / rep["total"], **mean, "seeds": per_seed}


def _key(method: str, mode: str, density: float | str, seed: int) -> str:
    return f"{method}|{mode}|{density}|{seed}"


def benchmark(task: str, method_names: Sequence[str], densities: Sequence[float | str], seeds: Sequence[int],
              modes: Sequence[str] = ("topk",), *, depth: int = 5, width: int = 100,
              weak_methods: Sequence[str] | None = None, cfg: TrainConfig = PAPER_TRAINING,
              prune_samples: int = PRUNE_SAMPLES, out: Path | None = None,
              progress: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Every method x mode x density x seed on the planted ``task`` (see the module docstring).

    ``weak_methods``: the methods whose pruned networks are also trained (default: all); the
    others record ``weak`` as None. A mode a method has no form for (built masks have no sampled
    form) is listed under ``skipped``; a run that fails is listed under ``failed`` with its error.
    """
    check(bool(method_names), "give at least one method")
    for m in method_names:
        methods.get(m).check_form("weights")
    check(all(mode in MODES for mode in modes), f"modes must be among {', '.join(MODES)}, got {list(modes)}")
    check(bool(seeds), "give at least one seed")
    densities = parse_densities(densities)
    weak_set = set(method_names if weak_methods is None else weak_methods)
    settings = {"task": task, "depth": depth, "width": width, "methods": list(method_names),
                "densities": [str(d) for d in densities], "seeds": list(seeds), "modes": list(modes),
                "weak_methods": sorted(weak_set), "prune_samples": prune_samples,
                "train": {k: v for k, v in vars(cfg).items()}}
    done: dict[str, dict[str, Any]] = {}
    log = None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        cfg_file, log = out / "config.json", out / "runs.jsonl"
        if cfg_file.exists():
            held = json.loads(cfg_file.read_text())
            check(held == json.loads(json.dumps(settings)), f"{out} holds a planted benchmark of other settings; "
                                                            "pass another --out or delete the folder")
        else:
            write_json(cfg_file, settings)
        if log.exists():
            for line in log.read_text().splitlines():
                if line.strip():
                    r = json.loads(line)
                    done[r["key"]] = r
    planted = [plant(task, depth=depth, width=width, seed=s) for s in seeds]
    ticket = ticket_record(planted, cfg)
    runs, skipped, failed = [], [], []
    for p in planted:
        for method in method_names:
            spec = methods.get(method)
            for mode in modes:
                if mode != "topk" and spec.kind != "score":
                    if p.seed == seeds[0]:
                        skipped.append({"method": method, "mode": mode, "why": f"a {spec.kind} method has no "
                                                                               "sampled form"})
                    continue
                for d in densities:
                    density = ticket["density"] if d == TICKET else float(d)
                    key = _key(method, mode, d, p.seed)
                    if key in done:
                        rec = done[key]
                    else:
                        try:
                            rec = run_one(p, method, mode, density, weak=method in weak_set, cfg=cfg,
                                          prune_samples=prune_samples)
                        except SketchpruneError as e:
                            failed.append({"method": method, "mode": mode, "density": density, "seed": p.seed,
                                           "error": str(e)})
                            continue
                        rec = {"key": key, "task": task, "density": density, "ticket_density": d == TICKET,
                               "seed": p.seed, **rec}
                        if log is not None:
                            with open(log, "a", encoding="utf-8") as f:
                                f.write(json.dumps(rec) + "\n")
                    runs.append(rec)
                    if progress is not None:
                        progress(rec)
    return {"ticket": ticket, "runs": [{k: v for k, v in r.items() if k != "key"} for r in runs],
            "skipped": skipped, "failed": failed, "settings": settings, "summary": summary(runs),
            "reading": reading(ticket, runs)}


def summary(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per method, mode and density: the means over seeds of recall, precision, strong and weak."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in runs:
        groups.setdefault((r["method"], r["mode"], "ticket" if r["ticket_density"] else r["density"]), []).append(r)
    rows = []
    for (method, mode, d), rs in groups.items():
        row: dict[str, Any] = {"method": method, "mode": mode, "density": d, "seeds": len(rs)}
        for k in ("recall", "precision", "strong", "weak"):
            vals = [r[k] for r in rs if r[k] is not None]
            row[k] = statistics.fmean(vals) if vals else None
        row["path"] = sum(r["path"] for r in rs) / len(rs)
        row["collapsed"] = sum(bool(r["collapsed"]) for r in rs) / len(rs)
        rows.append(row)
    return rows


def _better(a: float, b: float, higher: bool) -> bool:
    return a > b if higher else a < b


def _fmt(v: float, higher: bool) -> str:
    return f"{v:.3f}" if higher else f"{v:.2e}"


def reading(ticket: dict[str, Any], runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """What the numbers say: which methods find weak tickets at which density (the trained pruned
    network, mean over seeds, comes within 0.02 accuracy or 2x the MSE of the planted ticket's own
    metric), whether any finds the planted ticket (recall 1), and whether sampling keeps more of it
    than top-k (recall, per method and density)."""
    rows = summary(runs)
    higher = ticket["higher_is_better"]
    name = ticket["metric"]
    goal = ticket["ticket_metric"]
    tol = 0.02 if higher else 2.0  # within 0.02 accuracy, or within 2x the MSE
    ok = (lambda v: v >= goal - tol) if higher else (lambda v: v <= goal * tol)
    weak: dict[str, list[str]] = {}
    for r in rows:
        if r["weak"] is not None and ok(r["weak"]):
            weak.setdefault(f"{r['method']} ({r['mode']})", []).append(str(r["density"]))
    found = sorted({f"{r['method']} ({r['mode']}, {r['density']})" for r in runs if r["recall"] >= 1.0})
    pairs = {}
    for r in rows:
        pairs.setdefault((r["method"], r["density"]), {})[r["mode"]] = r["recall"]
    both = [(k, v["sample"] - v["topk"]) for k, v in pairs.items() if "sample" in v and "topk" in v]
    more = sum(d > 1e-12 for _, d in both)
    less = sum(d < -1e-12 for _, d in both)
    at_ticket = [r for r in rows if r["density"] == "ticket"]
    best_recall = max(at_ticket, key=lambda r: r["recall"]) if at_ticket else None
    text = (f"Planted {ticket['task']} ticket: {ticket['kept']} of {ticket['total']} weights and biases (density "
            f"{ticket['density']:.4f}); its own test {name} is {_fmt(ticket['ticket_metric'], higher)} (the paper's "
            f"evaluation, outputs divided by the planted output scales), {_fmt(ticket['masked_metric'], higher)} for "
            f"the mother masked to it and evaluated as the runs are, {_fmt(ticket['trained_metric'], higher)} after "
            f"the paper's training of that mask, against {_fmt(ticket['mother_metric'], higher)} for the unpruned "
            f"mother network. "
            + (f"Weak tickets (trained {name} within {'0.02' if higher else '2x'} of the planted ticket's own): "
               + "; ".join(f"{m} at {', '.join(ds)}" for m, ds in sorted(weak.items())) + ". " if weak else
               "No method's trained network comes within reach of the planted ticket's own metric. ")
            + (f"The planted ticket is kept whole (recall 1) by {', '.join(found)}. " if found else
               "No mask keeps the whole planted ticket (recall 1) in any run. ")
            + (f"At the ticket's density the best recall is {best_recall['recall']:.3f} ({best_recall['method']}, "
               f"{best_recall['mode']}; random expects {ticket['density']:.4f}). " if best_recall else "")
            + (f"Sampling keeps more of the ticket than top-k in {more} of {len(both)} method x density cells and "
               f"less in {less}." if both else ""))
    return {"weak_tickets": weak, "found": found, "sample_more": more, "sample_less": less, "pairs": len(both),
            "text": text}


def plot(result: dict[str, Any], path: Path) -> Path:
    """Per mode: the strong and weak metric against density with the planted ticket's line, and
    recall against density with random's line (recall = density)."""
    from sketchprune.atomic import save_figure
    from sketchprune.plotting import plt

    ticket, rows = result["ticket"], result["summary"]
    modes = [m for m in MODES if any(r["mode"] == m for r in rows)] or ["topk"]
    names = list(dict.fromkeys(r["method"] for r in rows))
    colors = plt.get_cmap("tab20")
    fig, axes = plt.subplots(len(modes), 3, figsize=(15, 4.2 * len(modes)), squeeze=False)

    def x_of(r: dict[str, Any]) -> float:
        return ticket["density"] if r["density"] == "ticket" else float(r["density"])

    for i, mode in enumerate(modes):
        for j, key in enumerate(("strong", "weak", "recall")):
            ax = axes[i][j]
            for c, m in enumerate(names):
                sel = sorted((r for r in rows if r["method"] == m and r["mode"] == mode and r[key] is not None),
                             key=x_of)
                if sel:
                    ax.plot([x_of(r) for r in sel], [r[key] for r in sel], marker="o", ms=3,
                            color=colors(c % 20), label=m)
            if key == "recall":
                xs = sorted({x_of(r) for r in rows})
                if xs:
                    ax.plot(xs, xs, color="black", ls=":", label="random (recall = density)")
                ax.set(ylabel="recall of the planted ticket", ylim=(-0.02, 1.02))
            else:
                ax.axhline(ticket["ticket_metric"], color="black", ls="--", label="planted ticket")
                if key == "weak":
                    ax.axhline(ticket["trained_metric"], color="gray", ls=":", label="planted ticket, trained")
                ax.set(ylabel=f"{ticket['metric']} ({'after training' if key == 'weak' else 'before training'})")
                if not ticket["higher_is_better"]:
                    ax.set_yscale("log")
            ax.axvline(ticket["density"], color="gray", lw=0.6)
            ax.set(xscale="log", xlabel="density", title=f"{ticket['task']}: {key}, {mode}")
            ax.grid(alpha=0.3)
    axes[0][2].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return save_figure(fig, path)


TABLE_COLUMNS = ["method", "mode", "density", "seeds", "recall", "precision", "strong", "weak", "path", "collapsed"]


def markdown(result: dict[str, Any]) -> str:
    """The summary as a Markdown table, with the ticket's line first."""
    from sketchprune.tables import markdown_table

    t = result["ticket"]
    higher = t["higher_is_better"]
    rows = [{"method": "planted ticket", "mode": "-", "density": f"{t['density']:.4f}", "seeds": len(t["seeds"]),
             "recall": "1", "precision": "1", "strong": _fmt(t["ticket_metric"], higher),
             "weak": _fmt(t["trained_metric"], higher), "path": "1", "collapsed": "0"}]
    for r in result["summary"]:
        rows.append({**r, **{k: ("-" if r[k] is None else f"{r[k]:.3f}") for k in ("recall", "precision")},
                     **{k: ("-" if r[k] is None else _fmt(r[k], higher)) for k in ("strong", "weak")},
                     "density": r["density"] if isinstance(r["density"], str) else f"{r['density']:g}",
                     "path": f"{r['path']:.2f}", "collapsed": f"{r['collapsed']:.2f}"})
    return markdown_table(rows, TABLE_COLUMNS)


def write(result: dict[str, Any], out: Path) -> dict[str, Path]:
    """``planted-<task>.json``, ``.png`` and ``.md`` under ``out``."""
    task = result["ticket"]["task"]
    return {"json": write_json(out / f"planted-{task}.json", result), "plot": plot(result, out / f"planted-{task}.png"),
            "table": write_text(out / f"planted-{task}.md", markdown(result) + "\n\n" + result["reading"]["text"] + "\n")}
