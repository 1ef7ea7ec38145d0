"""The ``sketchprune`` command line. Each command is a thin shell around a library function.

Every command takes ``--out DIR`` (where its files go) and ``--json`` (print the result as one
JSON object on stdout instead of tables). Bad input exits with status 2 and a one-line
``error: ...`` that names the fix.
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path
from typing import Any, Callable, Optional

import typer

from sketchprune import __version__
from sketchprune import config as cfgmod
from sketchprune.errors import SketchpruneError
from sketchprune.results import format_table, to_json, write_json

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Pruning at initialization, seen as sketching for approximate matrix multiplication.",
    pretty_exceptions_enable=False,
)
theory_app = typer.Typer(no_args_is_help=True, help="Theory lab: check each claim of the paper (E1-E4, E6).")
app.add_typer(theory_app, name="theory")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"sketchprune {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """sketchprune command line."""


def out_json_params(default_out: str) -> list[inspect.Parameter]:
    """The ``--out`` and ``--json`` options every command takes."""
    kw = inspect.Parameter.KEYWORD_ONLY
    return [
        inspect.Parameter("out", kw, default=typer.Option(Path(default_out), "--out", help="Output folder."),
                          annotation=Path),
        inspect.Parameter("as_json", kw, default=typer.Option(False, "--json", help="Print the result as one JSON object."),
                          annotation=bool),
    ]


def emit(result: dict[str, Any], as_json: bool, tables: list[tuple[str, list[dict], Optional[list[str]]]],
         files: dict[str, Path]) -> None:
    """Print ``result`` as JSON, or its tables followed by the files written."""
    result = {**result, "files": {k: str(v) for k, v in files.items()}}
    if as_json:
        typer.echo(to_json(result))
        return
    for title, rows, columns in tables:
        if title:
            typer.echo(f"\n{title}")
        typer.echo(format_table(rows, columns))
    for what, path in files.items():
        typer.echo(f"{what}: {path}")


def theory_command(name: str, module: Any, cls: type, help: str, tables: Callable[[dict], list]) -> None:
    """Register ``sketchprune theory NAME``: run, write JSON and PNG under --out, print tables."""

    @cfgmod.command(theory_app, name, cls, out_json_params(f"runs/theory-{name}"), help)
    def _cmd(config: Any, out: Path, as_json: bool) -> None:
        result = module.run(config)
        files = {"json": write_json(out / f"{name}.json", result), "plot": module.plot(result, out / f"{name}.png")}
        emit(result, as_json, tables(result), files)


def _register_theory() -> None:
    from sketchprune.theory import data_independence as e3
    from sketchprune.theory import deep_linear as e4
    from sketchprune.theory import linear as e2
    from sketchprune.theory import ntk as e6
    from sketchprune.theory import sketch as e1

    theory_command(
        "sketch", e1, e1.SketchConfig,
        "E1: Monte Carlo sketch error vs the exact formulas (uniform / optimal / B-only; iid / poisson / exact-k).",
        lambda r: [("E1: mean squared error (99% CI) vs exact formula", r["rows"], e1.TABLE_COLUMNS),
                   ("error ratios", r["ratios"], None)],
    )
    theory_command(
        "linear", e2, e2.LinearConfig,
        "E2: the init mask at the end of training (linear regression): formula, beta bound, retraining bound.",
        lambda r: [("E2: init mask vs end of training", r["rows"], e2.TABLE_COLUMNS),
                   ("sweep over N/d and init scale", r["sweep"], None)],
    )
    theory_command(
        "data", e3, e3.DataConfig,
        "E3: data independence: optimal vs magnitude vs random, raw vs standardized features.",
        lambda r: [("E3: sketch errors and mask overlap", r["rows"], e3.TABLE_COLUMNS),
                   ("distance of data-free probabilities from the optimal ones", r["probabilities"], None)],
    )
    theory_command(
        "deep-linear", e4, e4.DeepLinearConfig,
        "E4: deep linear networks: optimal (with/without data) vs SynFlow scores, correlations and errors.",
        lambda r: [("E4: relative output error of the masked network", r["rows"], e4.TABLE_COLUMNS),
                   ("Spearman correlations", r["correlations"], None)],
    )
    theory_command(
        "ntk", e6, e6.NTKConfig,
        "E6: NTK kernel error of column masks: top-k vs sampled vs uniform, against the exact iid formula.",
        lambda r: [("E6: ||Theta - J D J^T||_F^2", r["rows"], e6.TABLE_COLUMNS)],
    )


_register_theory()


@app.command("prune")
def prune_cmd(
    model: str = typer.Option("resnet20", "--model", help="Model name (see sketchprune.models.names())."),
    method: str = typer.Option("synflow", "--method", help="random, magnitude, snip, grasp, synflow, ntk, ..."),
    density: Optional[float] = typer.Option(None, "--density", help="Fraction of prunable weights kept."),
    compression: Optional[float] = typer.Option(None, "--compression", help="1 / density (alternative)."),
    mode: str = typer.Option("topk", "--mode", help="topk or sample."),
    scheme: str = typer.Option("exact", "--scheme", help="exact, poisson or iid (mode sample)."),
    power: float = typer.Option(1.0, "--power", help="Sampling weights = scores ** power (mode sample)."),
    scope: str = typer.Option("global", "--scope", help="global, layer or erk."),
    iterations: Optional[int] = typer.Option(None, "--iterations", help="Rounds (default: method's own)."),
    schedule: str = typer.Option("exponential", "--schedule", help="exponential or linear."),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="Data for snip/grasp/ntk (a batch of it)."),
    batch_size: int = typer.Option(128, "--batch-size", help="Size of the data batch given to the scorer."),
    seed: int = typer.Option(0, "--seed"),
    out: Path = typer.Option(Path("runs/prune"), "--out", help="Output folder."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as one JSON object."),
) -> None:
    """Prune a model at initialization and write its masks and per-layer density table."""
    import warnings

    import torch

    from sketchprune import data as datasets
    from sketchprune import models
    from sketchprune.pruning import prune

    from sketchprune.experiment import density_from

    d = density_from(density, compression)
    data, shape, classes = None, (3, 32, 32), 10
    if dataset is not None:
        ds = datasets.load(dataset)
        shape, classes = ds.input_shape, ds.num_classes
        perm = torch.randperm(len(ds.train_y), generator=torch.Generator().manual_seed(seed))[:batch_size]
        data = [(ds.train_x[perm], ds.train_y[perm])]
    torch.manual_seed(seed)
    net = models.create(model, num_classes=classes, input_shape=shape)
    extra = {"scheme": scheme, "power": power} if mode == "sample" else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        masks = prune(net, method, d, mode=mode, scope=scope, iterations=iterations, schedule=schedule, data=data,
                      seed=seed, input_shape=shape, **extra)
    files = {"masks": masks.save(out / "masks.safetensors"),
             "json": write_json(out / "density.json", {**masks.report(), "meta": masks.meta})}
    result = {"model": model, "method": method, **masks.report(), "meta": masks.meta}
    if as_json:
        emit(result, True, [], files)
        return
    typer.echo(masks.table())
    if masks.collapsed():
        typer.echo(f"warning: layer collapse in {', '.join(masks.collapsed())}", err=True)
    emit({}, False, [], files)


def _train_params() -> list[inspect.Parameter]:
    from sketchprune.experiment import RunConfig
    from sketchprune.train import TrainConfig

    kw = inspect.Parameter.KEYWORD_ONLY
    extra = [
        inspect.Parameter("compression", kw, default=typer.Option(None, "--compression", help="1 / density."),
                          annotation=Optional[float]),
        inspect.Parameter("device", kw, default=typer.Option(None, "--device", help="cpu or cuda (default: cuda if present)."),
                          annotation=Optional[str]),
        inspect.Parameter("data_root", kw, default=typer.Option(None, "--data-root",
                          help="Folder of data files (default $SKETCHPRUNE_DATA)."), annotation=Optional[str]),
        inspect.Parameter("download", kw, default=typer.Option(False, "--download", help="Fetch missing data files."),
                          annotation=bool),
    ]
    return (out_json_params("runs/train") + extra + cfgmod.options(RunConfig, exclude=("train",))
            + cfgmod.options(TrainConfig, exclude=("seed",)))


def train_cmd(**kwargs: Any) -> None:
    """Prune at initialization, then train; writes a run folder with config, masks, metrics and result."""
    import dataclasses

    from sketchprune.experiment import RunConfig, density_from, execute
    from sketchprune.train import TrainConfig

    run_fields = [f.name for f in dataclasses.fields(RunConfig) if f.name != "train"]
    train_fields = [f.name for f in dataclasses.fields(TrainConfig) if f.name != "seed"]
    tcfg = cfgmod.build(TrainConfig, {k: kwargs[k] for k in train_fields})
    values = {k: kwargs[k] for k in run_fields}
    if kwargs["compression"] is not None:
        values["density"] = density_from(None, kwargs["compression"])  # --compression replaces --density
    cfg = dataclasses.replace(cfgmod.build(RunConfig, values), train=tcfg)
    out = kwargs["out"]
    result = execute(cfg, out, device=kwargs["device"], data_root=kwargs["data_root"], download=kwargs["download"],
                     progress=not kwargs["as_json"])
    keys = ["final_test_acc", "best_test_acc", "kept", "total", "density_actual", "wall_seconds"]
    emit(result, kwargs["as_json"], [("result", [{k: result[k] for k in keys}], keys)],
         {"result": Path(out) / "result.json"})


train_cmd.__signature__ = inspect.Signature(_train_params())  # type: ignore[attr-defined]
app.command("train")(train_cmd)


@app.command("run")
def run_default(
    dataset: str = typer.Option("mnist1d", "--dataset"),
    model: str = typer.Option("conv1d", "--model"),
    methods: str = typer.Option("random,magnitude,snip,grasp,synflow", "--methods", help="Comma list."),
    densities: str = typer.Option("0.316,0.1,0.0316", "--densities", help="Comma list (compression 10^0.5-10^1.5)."),
    seeds: str = typer.Option("0,1", "--seeds", help="Comma list."),
    epochs: int = typer.Option(6, "--epochs"),
    device: Optional[str] = typer.Option(None, "--device", help="cpu or cuda (default: cuda if present)."),
    out: Path = typer.Option(Path("runs/default"), "--out", help="Output folder."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as one JSON object."),
) -> None:
    """The default job: top-k vs sampled masks for five pruners x 3 densities x 2 seeds on MNIST-1D."""
    import time

    from sketchprune import data as datasets
    from sketchprune.experiment import RunConfig, execute, run_name
    from sketchprune.report import accuracy_plot, summarize
    from sketchprune.results import write_csv
    from sketchprune.train import TrainConfig

    t0 = time.perf_counter()
    tcfg = cfgmod.build(TrainConfig, {"epochs": epochs, "optimizer": "adam", "lr": 1e-2, "weight_decay": 0.0,
                                      "batch_size": 256})
    grid = [cfgmod.build(RunConfig, {"model": model, "dataset": dataset, "method": m, "mode": mode, "density": d,
                                     "seed": s}, RunConfig(train=tcfg))
            for m in methods.split(",") for mode in ("topk", "sample")
            for d in cfgmod.parse_value(tuple[float, ...], densities, "densities")
            for s in cfgmod.parse_value(tuple[int, ...], seeds, "seeds")]
    data = datasets.load(dataset)
    results = []
    from tqdm import tqdm

    for cfg in tqdm(grid, desc="runs", disable=as_json, leave=False):
        results.append(execute(cfg, out / "runs" / run_name(cfg), device=device, dataset=data))
    summary = summarize(results)
    files = {"csv": write_csv(out / "summary.csv", summary), "plot": accuracy_plot(summary, out / "accuracy.png"),
             "json": write_json(out / "summary.json", {"rows": summary})}
    emit({"runs": len(results), "seconds": time.perf_counter() - t0, "rows": summary}, as_json,
         [("test accuracy (mean ± std over seeds)", summary,
           ["method", "mode", "density", "compression", "mean", "std", "seeds"])], files)
    if not as_json:
        typer.echo(f"{len(results)} runs in {time.perf_counter() - t0:.1f} s")


@app.command("sweep")
def sweep_cmd(
    config: Path = typer.Argument(..., help="Sweep YAML file (fixed settings + grid axes)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default runs/<file stem>)."),
    workers: int = typer.Option(1, "--workers", help="Local worker processes."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="Run on Ray: 'auto' or HOST:PORT."),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="Run the failed runs again."),
    dry_run: bool = typer.Option(False, "--dry-run", help="List the runs and stop."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as one JSON object."),
) -> None:
    """Run a grid of runs; finished runs are skipped, interrupted ones resume."""
    from sketchprune import config as cm
    from sketchprune import sweep as sw

    spec = sw.load(config)
    out = out or Path("runs") / config.stem
    rows = [{"hash": cm.config_hash(c), "status": sw.status(sw.folder(out, c)), "model": c.model,
             "dataset": c.dataset, "method": c.method, "mode": c.mode, "density": c.density, "seed": c.seed}
            for c in spec.runs]
    if dry_run:
        emit({"runs": rows}, as_json, [(f"{len(rows)} runs", rows, None)], {})
        return
    done = [0]

    def progress(outcome: dict) -> None:
        done[0] += 1
        if not as_json:
            msg = outcome["status"] + (f" ({outcome['error']})" if outcome["status"] == "failed" else "")
            typer.echo(f"[{done[0]}] {Path(outcome['dir']).name}: {msg}", err=True)

    import contextlib

    # with --json, stdout carries only the result: anything a backend prints goes to stderr
    with contextlib.redirect_stdout(sys.stderr) if as_json else contextlib.nullcontext():
        counts = sw.execute_sweep(spec, out, workers=workers, ray_address=ray_address, retry_failed=retry_failed,
                                  progress=progress)
    line = f"done {counts['done']}, skipped {counts['skipped']}, failed {counts['failed']}"
    if counts["failed_earlier"]:
        line += f" (+{counts['failed_earlier']} failed earlier; --retry-failed reruns them)"
    emit({**counts, "out": str(out)}, as_json, [], {})
    if not as_json:
        typer.echo(line)


@app.command("report")
def report_cmd(
    folder: Path = typer.Argument(..., help="A sweep or run output folder."),
    out: Optional[Path] = typer.Option(None, "--out", help="Report folder (default FOLDER/report)."),
    run: Optional[str] = typer.Option(None, "--run", help="Hash of the run for the per-layer density plot."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as one JSON object."),
) -> None:
    """Tables (CSV, Markdown), paper-style plots and an offline HTML page for every run under FOLDER."""
    from sketchprune.report import build_report

    rep = build_report(folder, out, run)
    emit({"runs": rep["runs"], "rows": rep["summary"]}, as_json,
         [("test accuracy (mean ± std over seeds)", rep["summary"],
           ["model", "dataset", "method", "mode", "density", "mean", "std", "seeds"])],
         {k: Path(v) for k, v in rep["files"].items()})


def main(argv: list[str] | None = None) -> int:
    """Console entry point: runs the app, turning bad input into a one-line error (exit 2)."""
    try:
        app(args=argv, standalone_mode=False)
    except SketchpruneError as e:
        typer.echo(f"error: {e}", err=True)
        return 2
    except typer.Exit as e:
        return e.exit_code
    except typer.Abort:
        typer.echo("aborted", err=True)
        return 1
    except Exception as e:  # usage errors of the click layer under typer (bad flag, missing argument)
        if hasattr(e, "format_message") and hasattr(e, "exit_code"):
            typer.echo(f"error: {e.format_message()}", err=True)
            return 2
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
