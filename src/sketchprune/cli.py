"""The ``sketchprune`` command line. Each command is a thin shell around a library function.

Every command takes ``--out DIR`` (where its files go) and ``--json`` (print the result as one
JSON object on stdout instead of tables). Bad input exits with status 2 and a one-line
``error: ...`` that names the fix.
"""

from __future__ import annotations

import contextvars
import dataclasses
import inspect
import sys
from pathlib import Path
from typing import Any, Callable, Optional

import typer

from sketchprune import __version__
from sketchprune import cli_flags
from sketchprune.config import config_hash, help_of
from sketchprune.errors import SketchpruneError, check, one_line_warnings
from sketchprune.atomic import to_json, write_json
from sketchprune.tables import format_table

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,  # plain click help: no "<bool>" metavar on flags that take no value
    help="Pruning at initialization, seen as sketching for approximate matrix multiplication.",
    pretty_exceptions_enable=False,
)
theory_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                         help="Theory lab: check each claim of the paper (E1-E4, E6, E7).")
app.add_typer(theory_app, name="theory")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"sketchprune {__version__}")
        raise typer.Exit()


THREADS_ENV = "SKETCHPRUNE_THREADS"
THREADS_HELP = ("CPU threads of torch: N, auto (the default: the cores this process may use less the load other "
                "processes keep on them, at least 1; benchmarks/bench_load.py) or torch (torch's own default, as "
                f"when OMP_NUM_THREADS is set). Also ${THREADS_ENV}.")


def thread_count(setting: str | None, environ: Any = None, cores: int | None = None,
                 load: float | None = None) -> int | None:
    """The number of CPU threads a command gives torch, or None to leave torch's default: ``setting``
    (``--threads``), else ``$SKETCHPRUNE_THREADS``, else torch's default when ``OMP_NUM_THREADS`` or
    ``MKL_NUM_THREADS`` is set (the user chose), else ``auto``: the usable cores less what other
    processes keep busy (:func:`busy_elsewhere`), rounded, at least 1. Under load, threads that
    wait on each other's descheduled siblings make every parallel kernel slow; one thread per free
    core does not (``benchmarks/bench_load.py``)."""
    import os

    environ = os.environ if environ is None else environ
    value = setting if setting is not None else environ.get(THREADS_ENV)
    if value is None:
        if environ.get("OMP_NUM_THREADS") or environ.get("MKL_NUM_THREADS"):
            return None
        value = "auto"
    value = str(value).strip().lower()
    if value == "torch":
        return None
    if value == "auto":
        cores = cores if cores is not None else len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
            else (os.cpu_count() or 1)
        load = load if load is not None else busy_elsewhere()
        return max(1, min(cores, int(cores - load + 0.5)))
    check(value.isdecimal() and int(value) >= 1,
          f"--threads (or ${THREADS_ENV}) must be a number >= 1, auto or torch, got {value!r}")
    return int(value)


def busy_elsewhere() -> float:
    """How many cores other processes keep busy: the larger of the 1-minute load average and the
    processes runnable right now besides this one (``/proc/loadavg``: the average lags a load that
    has just begun)."""
    import os

    average = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    try:
        with open("/proc/loadavg") as f:
            running = int(f.read().split()[3].split("/")[0]) - 1  # this process is one of them
    except (OSError, ValueError, IndexError):
        running = 0
    return max(average, float(running))


def _use_threads(setting: str | None) -> None:
    n = thread_count(setting)
    if n is not None:
        import torch

        if torch.get_num_threads() != n:
            torch.set_num_threads(n)


@app.callback()
def _main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
    threads: Optional[str] = typer.Option(None, "--threads", help=THREADS_HELP),
) -> None:
    """sketchprune command line."""
    _use_threads(threads)


def out_json_params(default_out: str) -> list[inspect.Parameter]:
    """The ``--out`` and ``--json`` options every command takes."""
    kw = inspect.Parameter.KEYWORD_ONLY
    return [
        inspect.Parameter("out", kw, default=typer.Option(Path(default_out), "--out", help="Output folder."),
                          annotation=Path),
        inspect.Parameter("as_json", kw, default=typer.Option(False, "--json", help="Print the result as one JSON object."),
                          annotation=bool),
    ]


def out_folder(out: Path, flag: str = "--out") -> Path:
    """``out`` as an output folder, refused in one line (exit 2) before any work when it cannot hold
    files: it is a file, it sits under a file, or the nearest folder that exists is not writable."""
    import os

    out = Path(out)
    check(not os.path.lexists(out) or out.is_dir(),
          f"{flag} {out} is a file, not a folder; pass a folder (it is made when missing)")
    above = out
    while not os.path.lexists(above) and above != above.parent:
        above = above.parent
    check(not os.path.lexists(above) or above.is_dir(),
          f"{flag} {out} sits under {above}, which is a file; pass a folder path")
    check(not os.path.lexists(above) or os.access(above, os.W_OK | os.X_OK),
          f"{flag} {out}: the folder {above} is not writable; pass an --out folder you can write")
    return out


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

    @cli_flags.command(theory_app, name, cls, out_json_params(f"runs/theory-{name}"), help)
    def _cmd(config: Any, out: Path, as_json: bool) -> None:
        out_folder(out)
        result = module.run(config)
        files = {"json": write_json(out / f"{name}.json", result), "plot": module.plot(result, out / f"{name}.png")}
        emit(result, as_json, tables(result), files)
        if not as_json and "reading" in result:
            typer.echo(f"\nReading: {result['reading']['text']}")


def _register_theory() -> None:
    from sketchprune.theory import e3_data as e3
    from sketchprune.theory import e4_deep_linear as e4
    from sketchprune.theory import e2_linear as e2
    from sketchprune.theory import e6_ntk as e6
    from sketchprune.theory import e7_structured as e7
    from sketchprune.theory import e1_sketch as e1
    from sketchprune.theory import subset_sum as ss

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
    theory_command(
        "structured", e7, e7.StructuredConfig,
        "E7: pruning hidden units is column sampling: Monte Carlo vs the exact formulas (iid / poisson / exact-k), "
        "optimal vs uniform vs L1-norm unit probabilities.",
        lambda r: [("E7: ||Z - Z_hat||_F^2 of the next layer's input", r["rows"], e7.TABLE_COLUMNS)],
    )
    theory_command(
        "subset-sum", ss, ss.SubsetSumConfig,
        "Strong tickets (Lueker; Pensia et al. 2020): the best subset sum of n random weights vs a target, error "
        "against n beside the exponential rate, and a random two-layer network pruned to a target layer.",
        lambda r: [("subset sum: |z - best subset sum| over the targets", r["rows"], ss.TABLE_COLUMNS),
                   ("a random two-layer network pruned to a target layer", r["layer"], ss.LAYER_COLUMNS)],
    )


_register_theory()


TRAINING_ONLY = ("reinit", "dst", "dst_interval", "dst_start", "dst_end", "dst_fraction", "dst_schedule", "dst_options")
"""Run settings that act on training only (besides TrainConfig's): ``prune`` neither lists nor takes them
(nor the options of dynamic sparse training's updaters, which move a mask while it trains)."""


def _settings_flags(training: bool = True) -> list[inspect.Parameter]:
    """One flag per run setting: RunConfig's fields, TrainConfig's (as --epochs, ...) and every
    registered method's options; all default to "not given", so the defaults live in one place.
    Without ``training`` (``prune``): no training-only settings, and TrainConfig's flags are hidden
    (only a method that trains while it prunes, such as imp, takes them)."""
    from sketchprune import methods
    from sketchprune.experiment import RunConfig
    from sketchprune.train import TrainConfig

    kw = inspect.Parameter.KEYWORD_ONLY
    flags = [inspect.Parameter("compression", kw, default=typer.Option(
        None, "--compression", help="Compression ratio C instead of --density (density = 1/C)."),
        annotation=Optional[float])]
    flags += cli_flags.options(RunConfig, exclude=("train", "method_options") + (() if training else TRAINING_ONLY),
                               unset=True)
    train_flags = cli_flags.options(TrainConfig, unset=True)
    if not training:
        for p in train_flags:
            p.default.hidden = True
    flags += train_flags
    for name in methods.names():
        m = methods.get(name)
        if not training and m.runner.kind == "update":  # a DST updater's options: training only
            continue
        flags += cli_flags.options(m.options, unset=True,
                                   help_text={f.name: f"[{name}] {help_of(f)}" for f in m.option_fields()})
    seen: set[str] = set()
    for p in flags:  # a flag name used twice would silently shadow a setting
        if p.name in seen:
            raise AssertionError(f"two settings share the flag --{p.name}")
        seen.add(p.name)
    return flags


def _config_from_flags(kwargs: dict[str, Any]) -> Any:
    """The run config of the flags that were given (train fields become ``train.FIELD``)."""
    from sketchprune.experiment import make_config
    from sketchprune.train import TrainConfig

    train_fields = {f.name for f in dataclasses.fields(TrainConfig)}
    values = {("train." + k if k in train_fields else k): v for k, v in kwargs.items() if v is not None}
    return make_config(values)


def _prune_config_from_flags(kwargs: dict[str, Any]) -> Any:
    """The run config of ``prune``'s flags: training settings only for a method that trains while it prunes."""
    from sketchprune import methods
    from sketchprune.experiment import RunConfig
    from sketchprune.train import TrainConfig

    _DATA_GIVEN.set(kwargs.get("dataset") is not None or kwargs.get("data_options") is not None)
    given = [f.name for f in dataclasses.fields(TrainConfig) if kwargs.get(f.name) is not None]
    method = kwargs.get("method") or RunConfig.method
    if given and method in methods.names() and not methods.get(method).runner.needs_trainer:
        flag = "--" + given[0].replace("_", "-")
        raise SketchpruneError(f"{flag} is a training setting and prune --method {method} does not train; drop it, "
                               "or use sketchprune train (only methods that train while they prune, such as imp, "
                               "take it here)")
    return _config_from_flags(kwargs)


def _register_settings_command(name: str, fn: Callable[..., None], extra: list[inspect.Parameter],
                               training: bool = True) -> None:
    """``fn(cfg, **extra)`` as command ``name`` with every settings flag plus ``extra`` (``training``:
    see :func:`_settings_flags`)."""
    cli_flags.register(app, name, fn, _settings_flags(training),
                       _config_from_flags if training else _prune_config_from_flags, extra, fn.__doc__ or "")


def _data_params() -> list[inspect.Parameter]:
    kw = inspect.Parameter.KEYWORD_ONLY
    return [
        inspect.Parameter("data_root", kw, default=typer.Option(None, "--data-root",
                          help="Folder of data files (default $SKETCHPRUNE_DATA)."), annotation=Optional[str]),
        inspect.Parameter("download", kw, default=typer.Option(False, "--download", help="Fetch missing data files."),
                          annotation=bool),
    ]


def _device_param() -> inspect.Parameter:
    return inspect.Parameter("device", inspect.Parameter.KEYWORD_ONLY, default=typer.Option(
        None, "--device", help="cpu or cuda (default: cuda if present)."), annotation=Optional[str])


def prune_cmd(cfg: Any, out: Path, as_json: bool, data_root: Optional[str], download: bool) -> None:
    """Prune a model at initialization and write its masks and per-layer density table."""
    import warnings

    from sketchprune import experiment, methods

    out_folder(out)
    spec = methods.get(cfg.method)
    data = experiment.load_data(cfg, data_root, download)
    try:
        model = experiment.build_model(cfg, data)  # checked to take the data's inputs: the masks are for them
        shape = data.input_shape
    except SketchpruneError:
        if spec.data != "none" or spec.runner.needs_trainer or _data_given():
            raise
        # a data-free method needs no data set: a model that does not take the default one's inputs is
        # pruned on its own input shape (what its registry entry records)
        import torch

        from sketchprune import models

        torch.manual_seed(cfg.seed)  # as build_model: the run's seed initializes the model
        theirs, data, model = tuple(data.input_shape), None, models.create(cfg.model, **cfg.model_options)
        shape = tuple(model.input_shape)
        typer.echo(f"note: {cfg.model} does not take {cfg.dataset}'s inputs {theirs}; {cfg.method} is data-free, "
                   f"so {cfg.model} is pruned on its own input shape {shape} (--dataset names a data set to fit)",
                   err=True)
    if cfg.structure == "units":  # a smaller dense network: report its layers and costs
        from sketchprune.costs import costs

        report = experiment.units_report(experiment.units_model(cfg, model, data), costs(model, shape), shape)
        rows = [{"layer": n, **v, "fraction": v["kept"] / v["total"]} for n, v in report["layers"].items()]
        emit({"model": cfg.model, "method": cfg.method, **report}, as_json,
             [(f"units kept (params {report['params_fraction']:.3f}, MACs {report['macs_fraction']:.3f} of dense)",
               rows, ["layer", "kept", "total", "fraction"])],
             {"json": write_json(out / "units.json", report)})
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # collapse is reported below
        masks = experiment.prune_model(cfg, model, data)  # data None: on the model's own input shape
    files = {"masks": masks.save(out / "masks.safetensors"),
             "json": write_json(out / "density.json", {**masks.report(), "meta": masks.meta})}
    result = {"model": cfg.model, "method": cfg.method, **masks.report(), "meta": masks.meta}
    if as_json:
        emit(result, True, [], files)
        return
    typer.echo(masks.table())
    if masks.collapsed():
        typer.echo(f"warning: layer collapse in {', '.join(masks.collapsed())}", err=True)
    emit({}, False, [], files)


_INTERRUPTED: contextvars.ContextVar[Optional[Callable[[], str]]] = contextvars.ContextVar("interrupted",
                                                                                          default=None)
"""What the running command has kept so far, for the line Ctrl-C prints (None: nothing it keeps)."""
_RESUMES = ("run", "sweep", "train", "planted")
"""Commands that continue where they stopped when run again."""


def interrupted_line(args: list[str]) -> str:
    """The line Ctrl-C prints: what was kept and how to go on (the same command line)."""
    import shlex

    note = _INTERRUPTED.get()
    command = next((a for a in args if not a.startswith("-")), "")
    kept = note() if note is not None else "nothing was written (a command writes its files when it ends)"
    again = "resume with" if command in _RESUMES else "run it again with"
    return f"interrupted: {kept}; {again}: sketchprune {shlex.join(args)}"


_DATA_GIVEN: contextvars.ContextVar[bool] = contextvars.ContextVar("data_given", default=True)
"""Whether this ``prune`` command line names a data set (``--dataset`` or ``--data-options``): a
data-free method on a model that does not take the default data set's inputs is then an error,
not pruned on the model's own input shape."""


def _data_given() -> bool:
    """Whether the command line names a data set (set when ``prune``'s flags become its config)."""
    return _DATA_GIVEN.get()


def train_cmd(cfg: Any, out: Optional[Path], as_json: bool, data_root: Optional[str], download: bool,
              device: Optional[str]) -> None:
    """Prune at initialization, then train; writes a run folder with config, masks, metrics and result."""
    from sketchprune.experiment import run
    from sketchprune.results import RESULT_FILE, run_name
    from sketchprune.train import resolve_device

    from sketchprune.results import status

    resolve_device(device)  # a missing GPU is an error before any work
    out = out_folder(out if out is not None else Path("runs/train") / run_name(cfg))
    finished = status(out, config_hash(cfg)) == "done"
    _INTERRUPTED.set(lambda: f"{out} keeps the run's last finished epoch (checkpoint.pt) and its masks")
    result = run(cfg, out, device=device, data_root=data_root, download=download, progress=not as_json)
    if finished and not as_json:
        typer.echo(f"note: {out} already held this run's result (it finished earlier): shown as it is, nothing "
                   "trained; another --out, or deleting the folder, trains it again", err=True)
    record = result.to_dict()
    keys = ["final_test_acc", "best_test_acc", "kept", "total", "density_actual", "wall_seconds"]
    emit(record, as_json, [("result", [{k: record[k] for k in keys}], keys)], {"result": out / RESULT_FILE})


_register_settings_command("prune", prune_cmd, out_json_params("runs/prune") + _data_params(), training=False)
_register_settings_command("train", train_cmd, [
    inspect.Parameter("out", inspect.Parameter.KEYWORD_ONLY, default=typer.Option(
        None, "--out", help="Run folder (default runs/train/<method>-<mode>-...-<hash>, one per config)."),
        annotation=Optional[Path]),
    out_json_params("")[1]] + _data_params() + [_device_param()])


@app.command("planted")
def planted_cmd(
    task: str = typer.Option("circle", "--task", help="Planted task: circle, relu or helix."),
    methods: str = typer.Option("synflow,snip,magnitude", "--methods", help="Comma list of registered methods; "
                                "'pai' names every score and mask method."),
    densities: str = typer.Option("0.5,0.1,0.01,ticket", "--densities", help="Comma list; 'ticket' is the planted "
                                  "ticket's own density."),
    seeds: str = typer.Option("0,1,2", "--seeds", help="Comma list (each seed plants a new mother network)."),
    modes: str = typer.Option("topk", "--modes", help="Comma list of topk and sample."),
    weak_methods: Optional[str] = typer.Option(None, "--weak-methods", help="Comma list of the methods whose "
                                               "pruned networks are also trained (default: all)."),
    depth: int = typer.Option(5, "--depth", help="Layer widths, input and output included (the paper's depth)."),
    width: int = typer.Option(100, "--width", help="Units of each hidden layer of the mother network."),
    out: Path = typer.Option(Path("runs/planted"), "--out", help="Output folder (runs.jsonl there resumes)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as one JSON object."),
) -> None:
    """Planted tickets (Fischer & Burkholz 2022): prune a mother network with a known ticket and score each
    mask by the planted weights it keeps (recall, precision) and its metric before (strong) and after (weak)
    the paper's training."""
    from sketchprune.planted import benchmark as pb

    def progress(r: dict) -> None:
        if not as_json:
            weak = "-" if r["weak"] is None else f"{r['weak']:.4g}"
            typer.echo(f"{r['method']} {r['mode']} d={r['density']:.4g} seed {r['seed']}: recall {r['recall']:.3f} "
                       f"strong {r['strong']:.4g} weak {weak}", err=True)

    result = pb.benchmark(task, pb.method_list(methods), _csv(densities), [int(s) for s in _csv(seeds)],
                          _csv(modes), depth=depth, width=width,
                          weak_methods=pb.method_list(weak_methods) if weak_methods else None, out=out,
                          progress=progress)
    files = pb.write(result, out)
    emit({k: result[k] for k in ("ticket", "runs", "skipped", "failed", "reading")}, as_json,
         [(f"planted {task}: means over seeds", result["summary"], pb.TABLE_COLUMNS)], files)
    if not as_json:
        typer.echo(f"\nReading: {result['reading']['text']}")


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


@app.command("methods")
def methods_cmd(
    markdown: bool = typer.Option(False, "--markdown", help="Print the README's Markdown table."),
    costs: Optional[Path] = typer.Option(None, "--costs", help="With --markdown: a bench_prune.py --json file "
                                                               "whose VGG-16-BN times fill a cost column."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as one JSON object."),
) -> None:
    """List every registered pruning method (built-in and plugins) with its forms (weights, units), kind, data,
    rounds and options."""
    from sketchprune import methods

    if markdown:
        typer.echo(methods.markdown_table(costs=vgg16_costs(costs) if costs else None), nl=False)
        return
    rows = []
    for name in methods.names():
        m = methods.get(name)
        rows.append({"method": name, "forms": ",".join(m.forms), "kind": m.kind if m.fn else "-", "data": m.data,
                     "rounds": m.rounds, "signed": m.signed,
                     "options": ", ".join(f"{k}={v}" for k, v in m.defaults().items()) or "-",
                     "source": m.source, "description": m.description})
    emit({"methods": rows}, as_json, [("", [{k: r[k] for k in r if k != "description"} for r in rows], None)], {})


def vgg16_costs(path: Path) -> dict[str, float | None]:
    """Method -> our seconds on VGG-16-BN, from a ``benchmarks/bench_prune.py --json`` file."""
    import json

    try:
        rows = json.loads(Path(path).read_text())["rows"]
        return {r["method"]: r["ours_seconds"] for r in rows if r["model"] == "vgg16_bn"}
    except (OSError, ValueError, KeyError, TypeError):
        raise SketchpruneError(f"{path} is not a bench_prune.py --json file; write one with "
                               "python benchmarks/bench_prune.py --json FILE") from None


STACK_HELP = ("Runs trained at once: K, or auto (on the CPU as many as stay fast, at most 16; on CUDA 1). "
              "A run's result is the same in any stack.")


@app.command("run")
def run_cmd(
    dataset: str = typer.Option("mnist1d", "--dataset", help="Data set of the comparison."),
    model: str = typer.Option("conv1d", "--model", help="Model of the comparison."),
    methods: str = typer.Option("random,magnitude,snip,grasp,synflow", "--methods", help="Comma list of methods."),
    densities: str = typer.Option("0.316,0.1,0.0316", "--densities", help="Comma list (compression 10^0.5-10^1.5)."),
    seeds: str = typer.Option("0,1,2,3,4", "--seeds", help="Comma list."),
    epochs: int = typer.Option(4, "--epochs", help="Training epochs of each run."),
    workers: int = typer.Option(1, "--workers", help="Local worker processes."),
    stack: str = typer.Option("auto", "--stack", help=STACK_HELP),
    device: Optional[str] = typer.Option(None, "--device", help="cpu or cuda (default: cuda if present)."),
    out: Path = typer.Option(Path("runs/default"), "--out", help="Output folder."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as one JSON object."),
) -> None:
    """The default job: top-k vs sampled vs auto masks for five pruners x 3 densities x 5 seeds on
    MNIST-1D, with the dense model, run as a built-in sweep (hash-named run folders, resumable) and
    reported like `sketchprune report`."""
    import time

    from sketchprune import sweep as sw
    from sketchprune.report import build_report, readable

    out_folder(out)
    t0 = time.perf_counter()
    spec = sw.default_spec(dataset=dataset, model=model, methods=methods, densities=densities, seeds=seeds,
                           epochs=epochs, device=device)
    counts = _run_sweep(sw.from_spec(spec, "sketchprune run"), out, workers, None, False, as_json, stack)
    _INTERRUPTED.set(lambda: f"every run finished and is kept in {out}/runs, the report is not finished "
                             f"(sketchprune report {out} builds it)")
    rep = build_report(out, out / "report")
    seconds = time.perf_counter() - t0
    emit({**counts, "seconds": seconds, "rows": rep["summary"], "paired": rep["paired"]}, as_json,
         [("test accuracy (mean ± 95 % interval over seeds)", readable(rep["summary"]),
           ["method", "mode", "compression", "mean", "ci95", "seeds"])],
         {k: Path(v) for k, v in rep["files"].items()})
    if not as_json:
        typer.echo(f"{counts['done']} runs done, {counts['skipped']} already done, in {seconds:.1f} s")
    if counts["failed"] or counts["failed_earlier"]:
        typer.echo(f"error: {counts['failed'] + counts['failed_earlier']} run(s) failed; each run folder's "
                   "error.json says why; fix the cause, delete those folders and run again", err=True)
        raise typer.Exit(1)


def _run_sweep(spec: Any, out: Path, workers: int, ray_address: Optional[str], retry_failed: bool,
               as_json: bool, stack: Optional[str] = None) -> dict[str, int]:
    """Run a sweep, printing where it stands on stderr (stdout stays clean for --json): how many runs
    there are to do, then one line per run, ``[20/92] magnitude sample 10x seed 1: 0.452 (3.1 s)``."""
    import contextlib

    from sketchprune import sweep as sw

    state = {"done": 0, "total": 0}
    labels = _progress_labels(spec.runs)

    def start(to_run: int, skipped: int) -> None:
        state["total"] = to_run
        earlier = f", {skipped} finished earlier (kept)" if skipped else ""
        if not as_json:
            typer.echo(f"{to_run} run(s) to do{earlier}, in {out}", err=True)
        _INTERRUPTED.set(lambda: _sweep_interrupted(out, state["done"], to_run))

    def progress(outcome: dict) -> None:
        state["done"] += 1
        if as_json:
            return
        cfg, head = outcome.get("config"), f"[{state['done']}/{state['total']}]"
        name = labels.get(config_hash(cfg), Path(outcome["dir"]).name) if cfg is not None else Path(outcome["dir"]).name
        if outcome["status"] == "failed":
            typer.echo(f"{head} {name}: failed ({outcome['error']}; error.json in {outcome['dir']})", err=True)
            return
        result = outcome["result"]
        typer.echo(f"{head} {name}: {result.final_test_acc:.3f} ({result.wall_seconds:.1f} s)", err=True)

    # with --json, stdout carries only the result: anything a backend prints goes to stderr
    with contextlib.redirect_stdout(sys.stderr) if as_json else contextlib.nullcontext():
        return sw.run(spec, out, workers=workers, ray_address=ray_address, retry_failed=retry_failed,
                      progress=progress, stack=stack, on_start=start)


def _progress_labels(runs: list[Any]) -> dict[str, str]:
    """Run hash -> how a progress line names the run: its group's label (the method and whatever
    else sets it apart in this sweep, as the report labels it), mode, compression and seed."""
    from types import SimpleNamespace

    from sketchprune.config import to_dict
    from sketchprune.report import compression_label, run_labels

    records = [SimpleNamespace(config=to_dict(c), hash=config_hash(c)) for c in runs]
    groups = run_labels(records)  # type: ignore[arg-type]
    out = {}
    for r in records:
        c = r.config
        where = "" if c["density"] >= 1 else f" {c['mode']} {compression_label(1 / c['density'])}"
        out[r.hash] = f"{groups[r.hash]}{where} seed {c['seed']}"
    return out


def _sweep_interrupted(out: Path, finished: int, total: int) -> str:
    return (f"{finished} of {total} run(s) finished and are kept in {out}/runs (a result.json each); a run "
            "in progress keeps its last finished epoch (checkpoint.pt)")


@app.command("sweep")
def sweep_cmd(
    config: Path = typer.Argument(..., help="Sweep YAML file (fixed settings + grid axes)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default runs/<file stem>)."),
    workers: int = typer.Option(1, "--workers", help="Local worker processes."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="Run on Ray: 'auto' or HOST:PORT."),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="Run the failed runs again."),
    stack: Optional[str] = typer.Option(None, "--stack", help=STACK_HELP + " Default: the file's stack:, else auto."),
    dry_run: bool = typer.Option(False, "--dry-run", help="List the runs and stop."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as one JSON object."),
) -> None:
    """Run a grid of runs; finished runs are skipped, interrupted ones resume."""
    from sketchprune import config as cm
    from sketchprune import sweep as sw

    spec = sw.load(config)
    out = out_folder(out or Path("runs") / config.stem)
    rows = [{"hash": cm.config_hash(c), "status": sw.status(sw.folder(out, c), cm.config_hash(c)), "model": c.model,
             "dataset": c.dataset, "method": c.method, "mode": c.mode, "density": c.density, "seed": c.seed}
            for c in spec.runs]
    if dry_run:
        emit({"runs": rows}, as_json, [(f"{len(rows)} runs", rows, None)], {})
        return
    counts = _run_sweep(spec, out, workers, ray_address, retry_failed, as_json, stack)
    line = f"done {counts['done']}, skipped {counts['skipped']}, failed {counts['failed']}"
    if counts["failed_earlier"]:
        line += f" (+{counts['failed_earlier']} failed earlier; --retry-failed reruns them)"
    emit({**counts, "out": str(out)}, as_json, [], {})
    if not as_json:
        typer.echo(line)
    if counts["failed"] or counts["failed_earlier"]:  # runs failed, in this call or before: error.json says why
        typer.echo(f"error: {counts['failed'] + counts['failed_earlier']} run(s) failed; each run folder's "
                   "error.json says why, --retry-failed reruns them", err=True)
        raise typer.Exit(1)


@app.command("report")
def report_cmd(
    folder: Path = typer.Argument(..., help="A sweep or run output folder, or a report's results.csv (the report "
                                            "made again without the run folders: no collapse view)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Report folder (default FOLDER/report; beside a "
                                                           "results.csv, report/)."),
    run: Optional[str] = typer.Option(None, "--run", help="Hash of a run whose method and compression the collapse "
                                                          "view shows (default: where the modes differ most)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as one JSON object."),
) -> None:
    """Tables (CSV, Markdown), paper-style plots and an offline HTML page for every run under FOLDER."""
    from sketchprune.report import build_report, readable

    default = (folder.parent if folder.is_file() else folder) / "report"
    rep = build_report(folder, out_folder(out if out is not None else default), run)
    emit({"runs": rep["runs"], "rows": rep["summary"], "paired": rep["paired"]}, as_json,
         [("test accuracy (mean ± 95 % interval over seeds)", readable(rep["summary"]),
           ["setting", "method", "mode", "compression", "mean", "ci95", "seeds"])],
         {k: Path(v) for k, v in rep["files"].items()})


def main(argv: list[str] | None = None) -> int:
    """Console entry point: runs the app, turning bad input into a one-line error (exit 2)."""
    import warnings

    args = sys.argv[1:] if argv is None else list(argv)
    _INTERRUPTED.set(None)
    with warnings.catch_warnings():
        one_line_warnings()
        try:
            _check_repeated_flags(args)
            rc = app(args=args, standalone_mode=False)  # a command's typer.Exit(code) comes back as its code
            if rc == 130:  # typer's code for Ctrl-C (no command of ours exits 130 itself)
                typer.echo(interrupted_line(args), err=True)
            return rc if isinstance(rc, int) else 0
        except SketchpruneError as e:
            typer.echo(f"error: {e}", err=True)
            return 2
        except KeyboardInterrupt:
            typer.echo(interrupted_line(args), err=True)
            return 130
        except typer.Exit as e:
            return e.exit_code
        except OSError as e:  # the disk filled up, or a path cannot be written: one line naming it
            typer.echo(f"error: {os_error_line(e, args)}", err=True)
            return 2
        except typer.Abort:
            typer.echo("aborted", err=True)
            return 1
        except Exception as e:  # usage errors of the click layer under typer (bad flag, missing argument)
            if hasattr(e, "format_message") and hasattr(e, "exit_code"):
                typer.echo(f"error: {' '.join(e.format_message().split())}", err=True)
                return 2
            raise
    return 0


def os_error_line(e: OSError, args: list[str]) -> str:
    """One line for an OSError of a command: the path (the error's own, else the command's --out),
    what happened and what to do."""
    import errno

    where = e.filename or _flag_value(args, "--out") or "the output folder"
    fixes = {errno.ENOSPC: "free disk space or pass an --out folder on another disk",
             errno.EDQUOT: "free disk space (the quota is full) or pass another --out",
             errno.EACCES: "check its permissions, or pass an --out folder you can write",
             errno.EPERM: "check its permissions, or pass an --out folder you can write",
             errno.EROFS: "the file system is read-only; pass an --out folder on a writable disk",
             errno.ENOTDIR: "a file is in the way; pass another --out or remove the file",
             errno.EEXIST: "a file is in the way; pass another --out or remove the file",
             errno.EISDIR: "a folder is in the way; pass another --out or remove the folder"}
    why = (e.strerror or type(e).__name__).lower()
    return f"{where}: {why}; {fixes.get(e.errno, 'check the path (or pass another --out)')}"


def _flag_value(args: list[str], flag: str) -> str | None:
    """The value given to ``flag`` in ``args`` (``--flag V`` or ``--flag=V``), or None."""
    for i, a in enumerate(args):
        if a == flag and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(flag + "="):
            return a.split("=", 1)[1]
    return None


def _check_repeated_flags(args: list[str]) -> None:
    """A flag given twice is an error (click would silently keep the last one), ``--x`` with ``--no-x`` too."""
    seen: dict[str, str] = {}
    for a in args:
        if a == "--":
            break
        if a.startswith("--"):
            flag = a.split("=", 1)[0]
            setting = "--" + flag[len("--no-"):] if flag.startswith("--no-") else flag  # --x/--no-x: one setting
            if setting in seen and flag != "--help":
                first = seen[setting]
                raise SketchpruneError(f"{flag} is given twice; give each flag once" if first == flag else
                                       f"{first} and {flag} are both given; give one of them")
            seen[setting] = flag


if __name__ == "__main__":
    sys.exit(main())
