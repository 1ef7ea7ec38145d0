"""Sweeps: a grid of runs from a YAML file, each in a folder named by its config hash.

```yaml
fixed:                      # settings shared by every run (any RunConfig setting; train: {...} or train.x)
  model: conv1d
  model_options: {width: 64}
  dataset: mnist1d
  train: {epochs: 6, optimizer: adam, lr: 0.01, weight_decay: 0.0}
grid:                       # the axes: every combination is one run
  method: [random, magnitude, snip, grasp, synflow]
  grasp_temperature: [100, 200]   # a method's option: applies to the runs of that method
  mode: [topk, sample]
  compression: [3.16, 10, 31.6]   # or density: [...]
  seed: [0, 1, 2]
```

Runs that share the model, the data and the training settings train together, ``stack`` at a
time (``stack: 16`` in the file or ``--stack``; ``auto``, the default, sizes the stacks on the CPU
and trains one at a time on CUDA): :mod:`sketchprune.stack` trains them as one batched network,
each with its own batch order, mask, checkpoint and result, which are those it gets alone. On
Ray, ``gpus_per_task: 0.25`` packs four tasks (a stack each) onto one GPU.

A folder with a valid ``result.json`` is finished and skipped; a folder with ``error.json``, or
with a ``result.json`` that cannot be read, failed (skipped unless ``retry_failed``, which reruns
it from scratch); anything else is (re)started, resuming its checkpoint. Results are written
atomically, so killing a sweep at any moment loses at most the epoch in progress. One sweep at a
time runs in a folder (a lock file), and worker processes end with the sweep that started them.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sketchprune import config as cfgmod
from sketchprune.atomic import hold_lock, remove_stale_temps, write_json
from sketchprune.errors import SketchpruneError, check, one_line_warnings
from sketchprune.experiment import RunConfig, make_config
from sketchprune.experiment import run as run_experiment
from sketchprune.methods import registry
from sketchprune.results import ERROR_FILE, Result, status
from sketchprune.results import collect, read_result  # noqa: F401  (the names sweep.collect and sweep.read_result)
from sketchprune.results import run_folder as folder
from sketchprune.stack import parse_stack, plan, run_many
from sketchprune.train import resolve_device


@dataclass
class Sweep:
    """A parsed sweep: the runs and how to run them."""

    runs: list[RunConfig]
    device: str | None = None
    data_root: str | None = None
    source: dict[str, Any] = field(default_factory=dict)
    stack: int | str = "auto"  # runs trained at once (sketchprune.stack); auto: sized by the engine
    gpus_per_task: float | None = None  # Ray: the GPU fraction each task asks for (default: 1 on cuda)


def from_spec(spec: Mapping[str, Any], where: str = "sweep") -> Sweep:
    """A sweep from ``{"fixed": {...}, "grid": {axis: [values]}, "device": ..., "data_root": ...}``.

    Any run setting can be fixed or an axis (see ``experiment.make_config``). ``grids: [{...}, ...]``
    instead of ``grid`` runs the union of several grids (e.g. sampled masks only for the methods
    that have them). A method's option applies to the runs of that method (and is left out of the
    others' settings and hashes).
    """
    check(isinstance(spec, Mapping), f"{where}: the top level must be a mapping with 'fixed' and 'grid'")
    unknown = sorted(set(spec) - {"fixed", "grid", "grids", "device", "data_root", "stack", "gpus_per_task"})
    if unknown:
        raise SketchpruneError(f"{where}: unknown key {unknown[0]!r}; use fixed, grid (or grids), device, data_root, "
                               "stack, gpus_per_task")
    check(not ("grid" in spec and "grids" in spec), f"{where}: give grid or grids, not both")
    for key in ("device", "data_root"):
        check(spec.get(key) is None or isinstance(spec[key], str), f"{where}: {key} must be a string")
    fixed = spec.get("fixed") or {}
    grids = spec.get("grids") if "grids" in spec else [spec.get("grid") or {}]
    check(isinstance(fixed, dict), f"{where}: 'fixed' must be a mapping")
    check(isinstance(grids, list) and all(isinstance(g, dict) for g in grids),
          f"{where}: 'grid' must be a mapping and 'grids' a list of mappings")
    check(bool(grids), f"{where}: grids is an empty list (no runs); list at least one grid, or use grid:")
    check(bool(fixed) or any(grids), f"{where} is empty; give settings under fixed: and axes under grid:")
    runs: list[RunConfig] = []
    axes_used: list[str] = []
    for grid in grids:
        for k, v in grid.items():
            check(isinstance(v, list) and v, f"{where}: grid axis {k!r} must be a non-empty list")
            repeated = [x for i, x in enumerate(v) if x in v[:i]]
            if repeated:
                raise SketchpruneError(f"{where}: grid axis {k!r} lists {repeated[0]!r} twice; give each value once")
        axes = list(grid)
        axes_used += axes
        for combo in itertools.product(*(grid[a] for a in axes)):
            values = {**fixed, **dict(zip(axes, combo))}
            cfg = make_config(_own_options(values))
            if cfg not in runs:
                runs.append(cfg)
    methods_used = {c.method for c in runs} | {c.dst for c in runs}  # a DST updater's options count as used too
    for key in list(fixed) + axes_used:
        owner = registry.option_owner(key)
        check(owner is None or owner in methods_used,
              f"{where}: {key!r} is an option of method {owner!r}, which no run of this sweep uses")
    stack = parse_stack(spec.get("stack", "auto"), f"{where}: stack")
    share = spec.get("gpus_per_task")
    check(share is None or (isinstance(share, (int, float)) and not isinstance(share, bool) and 0 < share <= 1),
          f"{where}: gpus_per_task must be a number in (0, 1] (a fraction of one GPU per task), got {share!r}")
    return Sweep(runs, spec.get("device"), spec.get("data_root"), dict(spec), stack, share)


def _own_options(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` without the options of methods other than the run's own and its DST updater's, and
    without the DST settings its updater does not take (a static run takes no schedule)."""
    from sketchprune import dst as dynamic_sparse

    method, dst = values.get("method", RunConfig.method), values.get("dst", RunConfig.dst)
    unused = dynamic_sparse.unused_settings(dst) if dst in dynamic_sparse.names() else ()
    return {k: v for k, v in values.items() if registry.option_owner(k) in (None, method, dst) and k not in unused}


def default_spec(*, dataset: str = "mnist1d", model: str = "conv1d", methods: str = "random,magnitude,snip,grasp,synflow",
                 densities: str = "0.316,0.1,0.0316", seeds: str = "0,1,2,3,4", epochs: int = 4,
                 device: str | None = None) -> dict[str, Any]:
    """The built-in comparison of ``sketchprune run`` as a sweep spec: top-k vs sampled vs auto masks
    for ``methods`` x ``densities`` x ``seeds``, and the dense model per seed; Adam (lr 1e-2,
    batch 256) for ``epochs`` epochs. Five seeds of four epochs: about a minute on 2 cores, and 95 %
    intervals of a few points (t with 4 degrees of freedom is 2.8; with two seeds it is 12.7 and the
    dense band alone spanned 0.28-0.88)."""
    seed_list = list(cfgmod.parse_value(tuple[int, ...], seeds, "seeds"))
    method_list = list(cfgmod.parse_value(tuple[str, ...], methods, "methods"))
    pruned = [d for d in cfgmod.parse_value(tuple[float, ...], densities, "densities") if not d >= 1]
    # methods that build their mask themselves have top-k only; density 1 is the dense reference's
    scored = [m for m in method_list if m not in registry.names() or registry.get(m).runner.gives_scores]
    built = [m for m in method_list if m not in scored]
    grids = [{"method": names, "mode": modes, "density": pruned, "seed": seed_list}
             for names, modes in ((scored, ["topk", "sample", "auto"]), (built, ["topk"])) if names and pruned]
    return {
        "fixed": {"model": model, "dataset": dataset,
                  "train": {"epochs": epochs, "optimizer": "adam", "lr": 0.01, "weight_decay": 0.0, "batch_size": 256}},
        "grids": grids + [{"method": ["random"], "density": [1.0], "seed": seed_list}],  # the dense reference
        "device": device,
    }


def load(path: str | os.PathLike) -> Sweep:
    """Parse a sweep file; unknown settings and malformed axes are one-line errors."""
    path = Path(path)
    check(path.is_file(), f"sweep file {path} does not exist or is not a file")
    try:
        spec = yaml.safe_load(path.read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise SketchpruneError(f"{path} is not valid YAML ({str(e).splitlines()[0]})") from None
    return from_spec(spec, str(path))


def run_recorded(cfg_dict: dict[str, Any], run_dir: str, device: str | None, data_root: str | None
                 ) -> dict[str, Any]:
    """Run one config (a plain dict, so it crosses process boundaries); a failure is recorded in
    ``error.json`` and returned, never raised. A finished run's outcome holds its ``result`` (a Result)."""
    path = Path(run_dir)
    try:
        result: Result = run_experiment(make_config(cfg_dict), path, device=device, data_root=data_root)
        if (path / ERROR_FILE).exists():
            (path / ERROR_FILE).unlink()
        return {"status": "done", "dir": run_dir, "result": result}
    except Exception as e:  # a failing run must not stop the sweep
        err = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
        write_json(path / ERROR_FILE, err)
        return {"status": "failed", "dir": run_dir, "error": err["error"]}


def run_recorded_stack(cfg_dicts: list[dict[str, Any]], run_dirs: list[str], device: str | None,
                       data_root: str | None, stack: int | str = "auto") -> list[dict[str, Any]]:
    """Run configs that can train together (:func:`sketchprune.stack.run_many`), recording each
    failure in its own ``error.json``; one outcome per run, as :func:`run_recorded` gives."""
    if len(cfg_dicts) == 1:
        return [run_recorded(cfg_dicts[0], run_dirs[0], device, data_root)]
    outcomes: list[dict[str, Any]] = []
    try:
        results = run_many([make_config(c) for c in cfg_dicts], run_dirs, stack=stack, device=device,
                           data_root=data_root)
    except Exception as e:  # not one run could start (a config that no longer parses): each fails
        results = [e] * len(cfg_dicts)
    for run_dir, result in zip(run_dirs, results):
        path = Path(run_dir)
        if isinstance(result, Exception):
            trace = "".join(traceback.format_exception(type(result), result, result.__traceback__))
            err = {"error": f"{type(result).__name__}: {result}", "traceback": trace}
            write_json(path / ERROR_FILE, err)
            outcomes.append({"status": "failed", "dir": run_dir, "error": err["error"]})
        else:
            if (path / ERROR_FILE).exists():
                (path / ERROR_FILE).unlink()
            outcomes.append({"status": "done", "dir": run_dir, "result": result})
    return outcomes


def run(
    sweep: Sweep,
    out: Path,
    *,
    workers: int = 1,
    ray_address: str | None = None,
    retry_failed: bool = False,
    progress: Callable[[dict[str, Any]], None] | None = None,
    stack: int | str | None = None,
    on_start: Callable[[int, int], None] | None = None,
) -> dict[str, int]:
    """Run every unfinished run of ``sweep`` under ``out``; returns counts done / skipped / failed.
    ``stack`` (default: the sweep's) is how many compatible runs train at once (``auto`` or K).
    ``on_start(to_run, skipped)`` is called once the runs to do are known; ``progress(outcome)``
    after each run, its outcome holding ``status``, ``dir``, ``config`` (the RunConfig) and
    ``result`` or ``error``."""
    check(isinstance(workers, int) and workers >= 1, f"--workers must be >= 1, got {workers}")
    stack = parse_stack(stack, "--stack") if stack is not None else sweep.stack
    if ray_address is None:
        resolve_device(sweep.device)  # a missing GPU is an error before any run (a Ray cluster has its own)
    check_runs(sweep)  # a model that does not fit its data, or a density below one weight: before any run
    with _lock(out):
        remove_stale_temps(out)  # a killed sweep's half-written files (run folders are cleaned by their runs)
        write_json(out / "sweep.json", {"source": sweep.source, "runs": [cfgmod.config_hash(c) for c in sweep.runs]})
        todo, skipped, failed_before = [], 0, 0
        todo_cfgs: list[RunConfig] = []
        for cfg in sweep.runs:
            d = folder(out, cfg)
            st = status(d, cfgmod.config_hash(cfg))  # a result of another run in this folder is not this run's
            if st == "done" or (st == "failed" and not retry_failed):
                skipped += 1
                failed_before += st == "failed"
                continue
            if st == "failed":  # from scratch: a damaged checkpoint or result must not block it again
                _clear(d, out)
            elif d.is_symlink() and not d.exists():  # a link to nothing: replaced by the run's own folder
                d.unlink()
            d.mkdir(parents=True, exist_ok=True)
            todo.append((cfgmod.to_dict(cfg), str(d)))
            todo_cfgs.append(cfg)
        counts = {"done": 0, "skipped": skipped, "failed": 0, "failed_earlier": failed_before}
        configs = {d: cfg for (_, d), cfg in zip(todo, todo_cfgs)}
        if on_start is not None:
            on_start(len(todo), skipped)
        parallel = workers if ray_address is None else 64  # a Ray cluster: many small tasks
        batches = [([todo[i][0] for i in b], [todo[i][1] for i in b])
                   for b in plan(todo_cfgs, stack, sweep.device, parallel)]
        if ray_address is not None:
            outcomes = _ray_backend(batches, sweep, ray_address, stack)
        elif workers > 1:
            outcomes = _process_backend(batches, sweep, workers, stack)
        else:
            outcomes = (o for c, d in batches for o in run_recorded_stack(c, d, sweep.device, sweep.data_root, stack))
        for outcome in outcomes:
            counts[outcome["status"]] += 1
            if progress is not None:
                progress({**outcome, "config": configs.get(outcome["dir"])})
    return counts


def _clear(d: Path, out: Path) -> None:
    """Delete failed run folder ``d`` of sweep folder ``out``, never through a link: a linked run folder
    loses the link only (what it points to is left as it is), and a folder reached through a linked
    parent outside ``out`` is refused."""
    if d.is_symlink():
        d.unlink()
        return
    check(d.resolve().is_relative_to(out.resolve()),
          f"run folder {d} lies outside {out} (through a link: {d.resolve()}); --retry-failed deletes failed run "
          f"folders, so it does not follow links out of the sweep folder: delete {d.resolve()} yourself or remove "
          "the link")
    shutil.rmtree(d)


def check_runs(sweep: Sweep) -> None:
    """Check every run of ``sweep`` against its model and data before any run starts: the model takes
    the data's inputs (``experiment.build_model`` runs it on a zero batch) and the density keeps at
    least one weight, in every layer for per-layer scopes. A one-line error names the run. Data
    that cannot be loaded here is left to the runs (a Ray cluster may hold files this machine lacks)."""
    import json
    import warnings

    from sketchprune.budgets import budgets
    from sketchprune.experiment import build_model, load_data
    from sketchprune.pruning import prunable_parameters
    from sketchprune.selection import budget

    loaded: dict[str, Any] = {}
    sizes: dict[str, dict[str, Any] | Exception] = {}
    for cfg in sweep.runs:
        key = json.dumps([cfg.dataset, cfg.data_options], sort_keys=True, default=str)
        if key not in loaded:
            try:
                loaded[key] = load_data(cfg, sweep.data_root)
            except SketchpruneError:
                loaded[key] = None
        data = loaded[key]
        if data is None:
            continue
        where = f"run {cfgmod.config_hash(cfg)} ({cfg.model} on {cfg.dataset}, {cfg.method} at density {cfg.density:g})"
        mkey = json.dumps([key, cfg.model, cfg.model_options, cfg.include_bias, cfg.include_norm, cfg.exclude,
                           cfg.include], sort_keys=True, default=str)
        if mkey not in sizes:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # the run itself warns about unpruned layers
                    model = build_model(cfg, data)
                    sizes[mkey] = prunable_parameters(model, include_bias=cfg.include_bias,
                                                      include_norm=cfg.include_norm, exclude=cfg.exclude,
                                                      include=cfg.include)
            except SketchpruneError as e:
                sizes[mkey] = e
        params = sizes[mkey]
        if isinstance(params, Exception):
            raise SketchpruneError(f"{where}: {params}") from None
        if cfg.structure != "weights" or cfg.density >= 1:
            continue
        total = sum(p.numel() for p in params.values())
        check(total >= 1 and budget(cfg.density, total) >= 1,
              f"{where}: density {cfg.density:g} keeps fewer than one of the model's {total} prunable weights; "
              f"use a density >= {1 / max(total, 1):.3g}")
        try:
            budgets(params, cfg.density, cfg.scope)
        except SketchpruneError as e:
            raise SketchpruneError(f"{where}: {e}") from None


def _lock(out: Path) -> contextlib.AbstractContextManager[None]:
    """Hold ``out/.sweep.lock`` for the sweep: a second sweep in the same folder is an error."""
    return hold_lock(out / ".sweep.lock", f"another sweep (pid {{pid}}) is running in {out}; wait for it to end or use "
                                          "another --out")


def _process_backend(batches, sweep: Sweep, workers: int, stack: int | str):
    import concurrent.futures as cf
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    with cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_worker_init,
                                initargs=(os.getpid(),)) as pool:
        futures = [pool.submit(run_recorded_stack, c, d, sweep.device, sweep.data_root, stack) for c, d in batches]
        for f in cf.as_completed(futures):
            yield from f.result()


def _worker_init(parent: int) -> None:
    import torch

    torch.set_num_threads(1)  # one core per worker: the workers share the machine
    one_line_warnings()
    _die_with(parent)


def _die_with(parent: int) -> None:
    """End this worker when the sweep process ``parent`` dies (SIGKILL included): the kernel's
    parent-death signal on Linux, and a watchdog thread everywhere."""
    import signal
    import threading
    import time

    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # it died before the signal was armed
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _ray_backend(batches, sweep: Sweep, address: str, stack: int | str):
    try:
        import ray
    except ImportError:
        raise SketchpruneError(
            "the Ray backend needs ray: pip install 'sketchprune[ray]' (or run without --ray-address)"
        ) from None
    if not ray.is_initialized():
        ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
    # a task is a stack of runs; gpus_per_task < 1 lets Ray place several tasks on one GPU
    gpus = (sweep.gpus_per_task or 1) if (sweep.device or "").startswith("cuda") else 0
    remote = ray.remote(num_gpus=gpus, num_cpus=1, max_retries=3, retry_exceptions=False)(run_recorded_stack)
    dirs = {}
    for c, d in batches:
        dirs[remote.remote(c, d, sweep.device, sweep.data_root, stack)] = d
    pending = list(dirs)
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        for ref in ready:
            try:
                yield from ray.get(ref)
            except Exception as e:  # the task died more often than its retries allow: each of its runs failed
                for d in dirs[ref]:
                    yield {"status": "failed", "dir": d, "error": f"{type(e).__name__}: {e}"}

