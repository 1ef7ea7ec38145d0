"""Results: the record of a finished run (:class:`Result`, ``result.json``) and the run-folder layout.

A run folder holds, in the order a run writes them:

* ``config.json``: the run's settings and their hash, first: the folder belongs to that config;
* ``masks.safetensors``: the masks (``structure=weights``), and ``start.safetensors``: the weights
  training starts from when the method rewound them (``imp``);
* ``masks-final.safetensors``: the masks at the end of training, when they moved (``dst``, not
  ``static``: :mod:`sketchprune.dst`); ``masks.safetensors`` stays the mask at the start;
* ``units.json``: the kept units and the cost fractions (``structure=units``);
* ``checkpoint.pt`` and ``metrics.jsonl``: written by training after every epoch (resume);
* ``result.json``: the :class:`Result`, last and atomically: a folder with a readable
  ``result.json`` is a finished run;
* ``error.json``: a sweep's record of a run that failed.

A sweep keeps each run in ``ROOT/runs/<config hash>``. Reading results needs none of the
training stack: the report imports this module, not the runner.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sketchprune.atomic import read_json
from sketchprune.config import config_hash
from sketchprune.errors import SketchpruneError

CONFIG_FILE = "config.json"
MASKS_FILE = "masks.safetensors"
START_FILE = "start.safetensors"
MASKS_FINAL_FILE = "masks-final.safetensors"
UNITS_FILE = "units.json"
CHECKPOINT_FILE = "checkpoint.pt"
METRICS_FILE = "metrics.jsonl"
RESULT_FILE = "result.json"
ERROR_FILE = "error.json"


@dataclass(frozen=True, kw_only=True)
class Result:
    """What a finished run records in ``result.json``; :meth:`to_dict` gives the file's keys in this order.

    ``config`` is the run's settings as a plain mapping (``config.to_dict``) and ``hash`` their
    hash. ``kept`` / ``total`` count prunable weights (a structured run: the small network's
    parameters / the dense one's), ``density_actual`` is their ratio, ``layer_density`` the kept
    fraction per layer (a structured run: of each layer's units) and ``collapsed`` the layers
    left with nothing. ``diagnostics`` are the mask's readings at initialization
    (:func:`sketchprune.diagnostics.mask_diagnostics`; None for a structured run), ``auto``
    what ``mode=auto`` chose (else None), and ``params_fraction`` / ``macs_fraction`` the
    pruned network's parameters and MACs over the dense one's. ``dst`` records how a moving mask
    moved (:meth:`sketchprune.dst.Updater.summary`: updates, weights grown, grown weights dropped
    again, per layer the fraction of the starting mask no longer kept and the final density); a
    run whose mask stayed (``dst=static``) has no ``dst`` key, so its record is as before. Times
    are in seconds from the start of the run: ``prune_seconds`` until training began,
    ``wall_seconds`` in all. Results written before diagnostics and costs were recorded lack those
    four keys: they read as None.
    """

    config: dict[str, Any]
    hash: str
    compression: float
    final_test_acc: float
    best_test_acc: float
    final_train_loss: float
    kept: int
    total: int
    density_actual: float
    collapsed: list[str]
    layer_density: dict[str, float]
    diagnostics: dict[str, Any] | None = None
    auto: dict[str, Any] | None = None
    params_fraction: float | None = None
    macs_fraction: float | None = None
    dst: dict[str, Any] | None = None
    prune_seconds: float
    wall_seconds: float

    def to_dict(self) -> dict[str, Any]:
        """The record as ``result.json`` holds it (a deep copy: changing it leaves the Result as it is);
        ``dst`` only when the mask moved."""
        record = dataclasses.asdict(self)
        if record["dst"] is None:
            del record["dst"]
        return record

    @classmethod
    def from_dict(cls, record: Any, source: str = "result") -> Result:
        """The Result of a ``result.json`` record; a record that lacks a key, has an unknown one or
        a value of the wrong kind is a one-line error naming ``source`` (the file)."""
        fix = "rerun it (sketchprune sweep --retry-failed) or delete its run folder"
        if not isinstance(record, dict):
            raise SketchpruneError(f"{source} cannot be read as a result: it holds {type(record).__name__}, "
                                   f"not a JSON object; {fix}")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        missing = [n for n, f in fields.items() if n not in record and f.default is dataclasses.MISSING]
        if missing:
            raise SketchpruneError(f"{source} cannot be read as a result: it lacks {', '.join(missing)}; {fix}")
        unknown = sorted(set(record) - set(fields))
        if unknown:
            raise SketchpruneError(f"{source} cannot be read as a result: unknown key {unknown[0]!r} (written by "
                                   f"another version of sketchprune?); {fix}")
        for name, value in record.items():
            kinds = _KINDS[name] + ((type(None),) if fields[name].default is None else ())
            if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
                raise SketchpruneError(f"{source} cannot be read as a result: {name} is {value!r}; {fix}")
        for name, kinds in _CONFIG_KINDS.items():  # what a report reads of every run's config
            value = record["config"].get(name, _ABSENT)
            if value is _ABSENT and name in _CONFIG_OPTIONAL:
                continue
            if value is _ABSENT or isinstance(value, bool) or not isinstance(value, kinds):
                what = "lacks" if value is _ABSENT else f"has {value!r} for"
                raise SketchpruneError(f"{source} cannot be read as a result: its config {what} {name}; {fix}")
        density = record["config"]["density"]
        if not 0 < density <= 1:
            raise SketchpruneError(f"{source} cannot be read as a result: its config has density {density!r}; {fix}")
        return cls(**record)


_NUMBER = (int, float)
_KINDS: dict[str, tuple[type, ...]] = {
    "config": (dict,), "hash": (str,), "compression": _NUMBER, "final_test_acc": _NUMBER,
    "best_test_acc": _NUMBER, "final_train_loss": _NUMBER, "kept": (int,), "total": (int,),
    "density_actual": _NUMBER, "collapsed": (list,), "layer_density": (dict,), "diagnostics": (dict,),
    "auto": (dict,), "params_fraction": _NUMBER, "macs_fraction": _NUMBER, "dst": (dict,),
    "prune_seconds": _NUMBER, "wall_seconds": _NUMBER,
}
assert set(_KINDS) == {f.name for f in dataclasses.fields(Result)}
_ABSENT = object()
_CONFIG_KINDS: dict[str, tuple[type, ...]] = {
    "model": (str,), "dataset": (str,), "method": (str,), "mode": (str,), "density": _NUMBER, "seed": (int,),
    "model_options": (dict,), "data_options": (dict,), "method_options": (dict,), "train": (dict,),
}
_CONFIG_OPTIONAL = {"model_options", "data_options", "method_options", "train"}


def load_result(path: str | os.PathLike) -> Result:
    """The Result in ``path`` (a ``result.json``); an unreadable or damaged file is a one-line error naming it."""
    path = Path(path)
    try:
        record = read_json(path)
    except (OSError, ValueError) as e:
        raise SketchpruneError(f"{path} cannot be read as a result ({type(e).__name__}); rerun it "
                               "(sketchprune sweep --retry-failed) or delete its run folder") from None
    return Result.from_dict(record, str(path))


def read_result(path: str | os.PathLike) -> Result | None:
    """The Result in ``path``, or None when it is missing or cannot be read as a result."""
    try:
        return load_result(path)
    except SketchpruneError:
        return None


def status(run_dir: str | os.PathLike, expected_hash: str | None = None) -> str:
    """"done", "failed" (``error.json``, a ``result.json`` that cannot be read, or one of another
    run than ``expected_hash``) or "todo"."""
    run_dir = Path(run_dir)
    if (run_dir / RESULT_FILE).exists():
        result = read_result(run_dir / RESULT_FILE)
        return "done" if result is not None and expected_hash in (None, result.hash) else "failed"
    if (run_dir / ERROR_FILE).exists():
        return "failed"
    return "todo"


def run_folder(root: str | os.PathLike, cfg: Any) -> Path:
    """The folder of run ``cfg`` (a ``RunConfig``) in a sweep's output folder ``root``: ``root/runs/<hash>``."""
    return Path(root) / "runs" / config_hash(cfg)


def run_name(cfg: Any) -> str:
    """A readable folder name for run ``cfg`` (a ``RunConfig``), unique by its hash:
    ``<method>-<mode>-d<density>-s<seed>-<hash>``."""
    return f"{cfg.method}-{cfg.mode}-d{cfg.density:.4g}-s{cfg.seed}-{config_hash(cfg)}"


def collect(root: str | os.PathLike) -> list[Result]:
    """Every finished run's Result under ``root`` (recursively), in a stable order; a result file
    that cannot be read is left out with a warning (the sweep reruns it with --retry-failed)."""
    results = []
    for p in sorted(Path(root).rglob(RESULT_FILE)):
        try:
            results.append(load_result(p))
        except SketchpruneError as e:
            warnings.warn(f"{e}; left out of the results", RuntimeWarning, stacklevel=2)
    return results


__all__ = ["Result", "collect", "load_result", "read_result", "run_folder", "run_name", "status"]
