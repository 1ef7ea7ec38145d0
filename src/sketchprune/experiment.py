"""One run = prune at initialization, then train: ``RunConfig`` -> run folder -> ``result.json``.

Every command builds its runs the same way: flat settings (CLI flags, sweep keys or keywords)
-> :func:`make_config` -> :class:`RunConfig` (checked whole before any work) -> :func:`run`.

A run folder holds ``config.json``, ``masks.safetensors``, ``metrics.jsonl``, ``checkpoint.pt``
and, last and atomically, ``result.json`` (a :class:`~sketchprune.results.Result`): a folder with
``result.json`` is a finished run. :mod:`sketchprune.results` is the layout and the record.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sketchprune import config as cfgmod
from sketchprune import data as datasets
from sketchprune import dst as dynamic_sparse
from sketchprune import methods, models, seeding
from sketchprune.atomic import (create_json, hold_lock, read_json, read_safetensors, remove_stale_temps, write_json,
                                write_safetensors)
from sketchprune.config import config_hash, setting, to_dict
from sketchprune.costs import cost_fractions, costs
from sketchprune.diagnostics import mask_diagnostics
from sketchprune.nm import project_nm
from sketchprune.errors import SketchpruneError, check, check_density
from sketchprune.masks import Masks
from sketchprune.pruning import (KEEP_BY, PruneOptions, method_settings, prunable_parameters, prune_units, prune_with,
                                 reinitialize)
from sketchprune.results import (CONFIG_FILE, MASKS_FILE, MASKS_FINAL_FILE, RESULT_FILE, START_FILE, UNITS_FILE,
                                 Result, load_result, run_name)
from sketchprune.train import Callback, TrainConfig, train


@dataclass(frozen=True)
class RunConfig(PruneOptions):
    """Everything that defines a run; a run folder is named by the hash of its non-default fields.

    The prune options come from :class:`~sketchprune.pruning.PruneOptions`; the method's own
    options are in ``method_options`` (only those that differ from the method's defaults); the
    DST updater's (``dst``, :mod:`sketchprune.dst`) in ``dst_options``.
    """

    model: str = setting("conv1d", "Model name.", choices=models.names)
    model_options: dict[str, Any] = setting({}, "Keywords of the model, e.g. depth=6,width=100 (num_classes and "
                                                "input_shape come from the data).")
    dataset: str = setting("mnist1d", "Data set.", choices=datasets.names)
    data_options: dict[str, Any] = setting({}, "Keywords of the data set, e.g. samples=10000.")
    method: str = setting("magnitude", "Pruning method (with structure=units: its unit form).", choices=methods.names)
    structure: str = setting("weights", "What is pruned: weights (a sparse mask) or units (whole units and channels "
                                        "removed: a smaller dense network, sketchprune.prune_units).",
                             choices=("weights", "units"))
    keep_by: str = setting("units", "With structure=units, density is the kept fraction of each layer's units, "
                                    "of the parameters or of the MACs.", choices=KEEP_BY)
    rescale: bool = setting(False, "With structure=units and mode=sample: scale each kept unit's outgoing weights "
                                   "by 1/pi_i, the unbiased sketch of the next layer's input at initialization.")
    nm: str = setting("", "Project the mask onto an N:M pattern, e.g. 2:4 (at most N kept of every M consecutive "
                          "input weights, the pattern GPUs accelerate); empty: no projection.")
    method_options: dict[str, Any] = setting({}, "The method's own options (each is also a flag and a sweep key).")
    density: float = setting(0.1, "Fraction of prunable weights kept (compression = 1 / density).")
    prune_batches: int = setting(1, "Batches of training data given to methods that use data.")
    prune_batch_size: int = setting(256, "Size of those batches.")
    reinit: bool = setting(False, "Sanity check: re-initialize the model after pruning (same mask, new weights).")
    dst: str = setting("static", "Dynamic sparse training: how the mask moves while the network trains, from the "
                                 "method's mask (static: it never does; sketchprune.dst).", choices=dynamic_sparse.names)
    dst_interval: int = setting(dynamic_sparse.DEFAULTS["interval"], "With dst: optimizer steps between mask updates.")
    dst_start: float = setting(dynamic_sparse.DEFAULTS["start"], "With dst: the fraction of training before the first "
                                                                 "update.")
    dst_end: float = setting(dynamic_sparse.DEFAULTS["end"], "With dst: the fraction of training after which the mask "
                                                             "stays (RigL's 0.75).")
    dst_fraction: float = setting(dynamic_sparse.DEFAULTS["fraction"], "With dst set, rigl or dsr: the fraction of "
                                  "each layer's kept weights moved at the first update.")
    dst_schedule: str = setting(dynamic_sparse.DEFAULTS["schedule"], "With dst: how dst_fraction decays over the "
                                "updates (cosine: to 0 at dst_end, as RigL).", choices=dynamic_sparse.SCHEDULES)
    dst_options: dict[str, Any] = setting({}, "The DST updater's own options (each is also a flag and a sweep key).")
    train: TrainConfig = TrainConfig()
    seed: int = setting(0, "Seed of the model's initialization, the pruning draws and the batch order.")

    def __post_init__(self) -> None:
        # keep the option mappings canonical (typed, defaults dropped) so that equal runs hash equally
        if self.structure == "weights" and methods.get(self.method).fn is not None:
            object.__setattr__(self, "method_options", methods.get(self.method).non_default(self.method_options))
        object.__setattr__(self, "model_options", models.options(self.model, self.model_options))
        object.__setattr__(self, "data_options", datasets.options(self.dataset, self.data_options))
        object.__setattr__(self, "nm", canonical_nm(self.nm))  # "２:４" and " 2:04" are the run of "2:4"
        if self.dst in dynamic_sparse.names():
            object.__setattr__(self, "dst_options", dynamic_sparse.canonical_options(self.dst, self.dst_options))
        super().__post_init__()

    def validate(self) -> None:
        super().validate()
        check_density(self.density)
        check(not self.train.augment or self.dataset in datasets.IMAGE_SETS,
              f"augment (crop and flip) applies to image data sets ({', '.join(datasets.IMAGE_SETS)}); "
              f"{self.dataset} has none: drop augment")
        check(self.prune_batches >= 1 and self.prune_batch_size >= 1, "prune_batches and prune_batch_size must be >= 1")
        dynamic_sparse.check_run(self.dst_settings(), density=self.density, structure=self.structure)
        spec = methods.get(self.method)
        if self.structure == "units":
            spec.check_form("units")
            check(self.mode in ("topk", "sample"), "structure=units takes mode topk or sample")
            check(not self.method_options and self.iterations is None and not self.invert and not self.shuffle
                  and not self.nm, "structure=units takes no method options, iterations, invert, shuffle or nm")
            check(not self.rescale or self.mode == "sample", "rescale applies to sampled units (mode=sample)")
            return
        check(self.keep_by == "units" and not self.rescale,
              "keep_by and rescale apply to structure=units; drop them or set structure=units")
        if self.nm:
            n, _, m = self.nm.partition(":")
            check(n.isdecimal() and m.isdecimal() and 1 <= int(n) <= int(m),
                  f"nm must look like 2:4 (N <= M), got {self.nm!r}")
        # the one check of the method's options (with this config as its PruneOptions); prune_model reuses it
        object.__setattr__(self, "_method_settings", method_settings(spec, self, self.method_options))

    def method_settings(self) -> Any:
        """The method's checked options object (built once, when the config was made)."""
        return self._method_settings  # type: ignore[attr-defined]

    def dst_settings(self) -> dynamic_sparse.RunSettings:
        """The run's DST settings (:mod:`sketchprune.dst`)."""
        return dynamic_sparse.RunSettings(self.dst, self.dst_interval, self.dst_start, self.dst_end, self.dst_fraction,
                                          self.dst_schedule, self.dst_options)


methods.registry.reserve([f.name for f in dataclasses.fields(RunConfig)] + [f"train.{f.name}" for f in
                          dataclasses.fields(TrainConfig)] + ["compression"], "a run")


OPTION_GROUPS = ("train", "model_options", "data_options", "method_options", "dst_options")


def make_config(values: Mapping[str, Any]) -> RunConfig:
    """A checked RunConfig from flat settings: its fields, ``train`` (a mapping) or ``train.FIELD``,
    ``model_options`` / ``data_options`` (mappings) or ``model_options.KEY`` / ``data_options.KEY``,
    the method's options and the DST updater's by their own names, and ``compression`` (1 / density)
    for ``density``."""
    values = dict(values)
    groups: dict[str, dict[str, Any]] = {}
    for group in OPTION_GROUPS:
        given = values.pop(group, None)
        groups[group] = cfgmod.parse_mapping(given, group) if given is not None else {}
        for key in [k for k in values if k.startswith(group + ".")]:
            name = key.split(".", 1)[1]
            check(name not in groups[group], f"{group}.{name} is given twice (as {key} and inside {group}: "
                                             "{...}); give it once")
            groups[group][name] = values.pop(key)
    if "compression" in values:
        values["density"] = density_from(values.get("density"), values.pop("compression"))
    for key in [k for k in values if methods.registry.option_owner(k) is not None]:
        owner = methods.get(methods.registry.option_owner(key))  # type: ignore[arg-type]
        group = "dst_options" if owner.kind == dynamic_sparse.UPDATES.kind else "method_options"
        groups[group][key] = values.pop(key)  # a method's (or DST updater's) option, given by its own name
    types = cfgmod.field_types(RunConfig)
    unknown = [k for k in values if k not in types]
    if unknown:
        known = [k for k in types if k not in OPTION_GROUPS] + ["train.FIELD", "model_options.KEY",
                                                                "data_options.KEY", "a method's options"]
        raise SketchpruneError(f"unknown setting {unknown[0]!r}; known settings: {', '.join(known)}")
    parsed = {k: cfgmod.parse_value(types[k], v, k) for k, v in values.items()}
    return RunConfig(**parsed, train=cfgmod.build(TrainConfig, groups.pop("train")), **groups)


def density_from(density: float | None, compression: float | None, default: float = 0.1) -> float:
    """The density given either directly or as a compression ratio ``C`` (density ``1 / C``)."""
    if compression is None:
        return default if density is None else density
    check(density is None, "give density or compression, not both")
    check(isinstance(compression, (int, float)) and not isinstance(compression, bool) and 1 <= compression < float("inf"),
          f"compression must be a finite number >= 1 (it is 1/density), got {compression!r}")
    return 1.0 / compression


def prune_batches(data: datasets.Dataset, cfg: RunConfig) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The first ``prune_batches`` batches of a seeded permutation of the training set."""
    size, n = cfg.prune_batch_size, len(data.train_y)
    check((cfg.prune_batches - 1) * size < n, f"prune_batches x prune_batch_size = {cfg.prune_batches} x {size} leaves "
                                              f"empty batches: {data.name} has {n} training samples; lower "
                                              "--prune-batches or --prune-batch-size")
    perm = torch.randperm(n, generator=seeding.generator(cfg.seed, "prune-data"))
    return [(data.train_x[perm[i * size:(i + 1) * size]], data.train_y[perm[i * size:(i + 1) * size]])
            for i in range(cfg.prune_batches)]


def load_data(cfg: RunConfig, data_root: str | None = None, download: bool = False) -> datasets.Dataset:
    """The run's data set."""
    return datasets.load(cfg.dataset, root=data_root, download=download, **cfg.data_options)


def build_model(cfg: RunConfig, data: datasets.Dataset, check: bool = True) -> nn.Module:
    """The run's model at initialization (seeded with the run's seed), checked to take the data's
    inputs (:func:`check_fits`) before any pruning or training; without ``check`` only built (``prune``
    with a method that never runs the model on the data)."""
    torch.manual_seed(cfg.seed)
    model = models.create(cfg.model, num_classes=data.num_classes, input_shape=data.input_shape, **cfg.model_options)
    if check:
        check_fits(model, data, cfg.model)
    return model


def check_fits(model: nn.Module, data: datasets.Dataset, name: str = "the model") -> None:
    """One forward of a zero batch of ``data``'s input shape (eval mode, no gradients; the model's
    modes and buffers are left as they were): a model that does not take those inputs, or does not
    give one row of ``num_classes`` outputs per input, is a one-line error naming the model, the
    data's shape and the fix. Every command's run goes through it (``build_model``)."""
    x = torch.zeros((2, *data.input_shape), dtype=data.train_x.dtype)
    modes = [(m, m.training) for m in model.modules()]
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    fix = ("use a model made for such inputs (mlp takes any shape; conv1d sequences; lenet5, conv, resnet*, vgg* "
           "images) or other model_options")
    where = f"model {name!r} does not fit data set {data.name!r} (inputs of shape {tuple(data.input_shape)})"
    try:
        model.eval()
        with torch.no_grad():
            out = model(x)
    except (RuntimeError, ValueError, IndexError, TypeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise SketchpruneError(f"{where}: {type(e).__name__}: {first}; {fix}") from e
    finally:
        for m, training in modes:
            m.train(training)
        with torch.no_grad():
            for k, v in model.named_buffers():
                if k in buffers and v.shape == buffers[k].shape:
                    v.copy_(buffers[k])
    shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
    check(shape == (2, data.num_classes), f"{where}: its output for a batch of 2 is {shape}, not (2, "
                                          f"{data.num_classes}); {fix}")


def canonical_nm(nm: str) -> str:
    """An N:M pattern written the one way that hashes alike: ASCII digits, no leading zeros or spaces
    ("２:４" and " 2:04" are "2:4"); anything else is left for the config's check to refuse."""
    import unicodedata

    n, sep, m = unicodedata.normalize("NFKC", nm).strip().partition(":")
    n, m = n.strip(), m.strip()
    return f"{int(n)}:{int(m)}" if sep and n.isdecimal() and m.isdecimal() else nm


@dataclass
class Trainer:
    """Our training loop for methods that train while they prune (``imp``): each call trains ``model``
    with ``masks`` from its current weights, checkpointed in ``folder / tag``, so a killed run
    resumes where it stopped (a finished call is replayed from its checkpoint)."""

    data: datasets.Dataset
    config: TrainConfig = TrainConfig()
    folder: Path | None = None
    seed: int = 0
    device: str | None = None
    run_key: str | None = None
    """The run's config hash: a level's checkpoint resumes only this run's training."""

    def __call__(self, model: nn.Module, masks: Masks, tag: str, *, epochs: int | None = None,
                 snapshot_step: int | None = None, callbacks: Sequence[Callback] = ()) -> dict[str, Any]:
        """:func:`~sketchprune.train.train` with this trainer's data, config, seed and device;
        ``callbacks`` receive the loop's events (a method that changes masks while it trains)."""
        cfg = dataclasses.replace(self.config, epochs=epochs) if epochs else self.config
        key = f"{self.run_key}-{tag}-e{cfg.epochs}" if self.run_key is not None else None
        return train(model, self.data, cfg, masks=masks, out=self.folder / tag if self.folder else None,
                     device=self.device, seed=self.seed, snapshot_step=snapshot_step, callbacks=callbacks,
                     run_key=key)


def _data_for_pruning(cfg: RunConfig, model: nn.Module, data: datasets.Dataset | None, folder: Path | None,
                      device: str | None) -> dict[str, Any]:
    """What pruning takes from the data set: its batches, a trainer on it and its input shape; with
    no data set (a data-free method, ``sketchprune prune`` on a model that fits none), the model's
    own input shape alone."""
    if data is None:
        return {"input_shape": tuple(model.input_shape)}
    return {"data": prune_batches(data, cfg), "input_shape": data.input_shape,
            "trainer": Trainer(data, cfg.train, folder, cfg.seed, device, run_key=config_hash(cfg))}


def prune_model(cfg: RunConfig, model: nn.Module, data: datasets.Dataset | None, folder: Path | None = None,
                device: str | None = None) -> Masks:
    """The run's masks for ``model``, projected onto its N:M pattern when it has one (warnings such as
    layer collapse are the caller's to show); a method that trains while it prunes keeps its
    checkpoints under ``folder``; ``data`` None: a data-free method on the model's own input shape."""
    masks = prune_with(model, methods.get(cfg.method), cfg, cfg.method_settings(), cfg.density, seed=cfg.seed,
                       **_data_for_pruning(cfg, model, data, folder, device))
    if cfg.nm:
        n, m = (int(v) for v in cfg.nm.split(":"))
        masks = project_nm(masks, model, n, m)
    return masks


def claim(out: Path, cfg: RunConfig) -> None:
    """Make ``out`` the folder of ``cfg``: a folder that holds another config's run is an error
    (so a resume never mixes two configs), one that holds this config's run is resumed."""
    record = out / CONFIG_FILE
    if not record.exists():
        check(not (out / RESULT_FILE).exists() and not (out / MASKS_FILE).exists(),
              f"run folder {out} holds a run without its {CONFIG_FILE}; pass another --out or delete the folder")
        if create_json(record, {"hash": config_hash(cfg), **to_dict(cfg)}):  # of two starts at once, one wins
            return
    try:
        held = read_json(record).get("hash")
    except (OSError, ValueError, AttributeError):
        held = None
    if held != config_hash(cfg):
        raise SketchpruneError(
            f"run folder {out} holds another run (config {held or 'unreadable'}, this one is "
            f"{config_hash(cfg)}); pass another --out, or delete the folder to start over")


def _start_in(out: Path) -> Path:
    """Start (or resume) a run in its folder, whose lock the caller holds: delete the temporary files
    a killed run left there; returns the path of the run's result file."""
    remove_stale_temps(out, recursive=True)
    return out / RESULT_FILE


def _finished(done: Path, cfg: RunConfig) -> Result:
    """The Result of a finished run's ``result.json``: a damaged one, or one of another run, is a
    one-line error that says how to run this one."""
    try:
        result = load_result(done)
    except SketchpruneError as e:
        raise SketchpruneError(f"{e} (sketchprune train: delete {done.parent} to run it again)") from None
    check(result.hash == config_hash(cfg),
          f"{done} is the result of another run (config {result.hash}; this one is {config_hash(cfg)}); delete "
          f"{done.parent} to run this one, or pass another --out")
    return result


def units_model(cfg: RunConfig, model: nn.Module, data: datasets.Dataset | None, folder: Path | None = None,
                device: str | None = None) -> nn.Module:
    """The smaller network of a ``structure=units`` config (deterministic given the seed); a unit
    method that trains (``early_bird``) keeps its checkpoints under ``folder``; ``data`` None: as
    :func:`prune_model`'s."""
    return prune_units(model, cfg.method, cfg.density, mode=cfg.mode, seed=cfg.seed, keep_by=cfg.keep_by,
                       scheme=cfg.scheme, power=cfg.power, rescale=cfg.rescale,
                       **_data_for_pruning(cfg, model, data, folder, device))


def units_report(small: nn.Module, dense_costs: dict[str, float], input_shape: tuple[int, ...]) -> dict[str, Any]:
    """Kept units per layer and the parameter / MAC fractions of a network from :func:`units_model`."""
    return {"layers": {n: {"kept": k, "total": t} for n, (k, t) in small.kept_units.items()},
            **cost_fractions(costs(small, input_shape), dense_costs)}


@dataclass
class Prepared:
    """A run pruned and ready to train: :func:`run` is :func:`prepare`, training with
    :meth:`train_kwargs`, then :func:`finish`; :mod:`sketchprune.stack` trains many prepared runs
    at once between the two."""

    cfg: RunConfig
    out: Path
    data: datasets.Dataset
    model: nn.Module  # at the start of training (structure=units: the smaller network)
    masks: Masks | None  # None for structure=units
    t0: float
    prune_seconds: float
    pruned: Any  # () -> the pruning fields of the Result, after training
    callbacks: list[Callback] = dataclasses.field(default_factory=list)

    def train_kwargs(self) -> dict[str, Any]:
        """The keywords of :func:`~sketchprune.train.train` for this run (besides model, data, config)."""
        return {"masks": self.masks, "out": self.out, "seed": self.cfg.seed, "run_key": config_hash(self.cfg),
                "callbacks": self.callbacks}


def _prepare_units(cfg: RunConfig, model: nn.Module, data: datasets.Dataset, out: Path, device: str | None,
                   t0: float, dense_costs: dict[str, float]) -> Prepared:
    """A structured run up to training: remove units (deterministic, so a resumed run rebuilds the
    same network); the pruning fields of the Result are known before training."""
    small = units_model(cfg, model, data, out, device)
    report = units_report(small, dense_costs, data.input_shape)
    write_json(out / UNITS_FILE, report)
    pruned = {"kept": round(report["params_fraction"] * dense_costs["params"]), "total": int(dense_costs["params"]),
              "density_actual": report["params_fraction"], "collapsed": [],
              "layer_density": {n: k / t for n, (k, t) in small.kept_units.items()},
              "diagnostics": None, "auto": None,
              "params_fraction": report["params_fraction"], "macs_fraction": report["macs_fraction"]}
    return Prepared(cfg, out, data, small, None, t0, time.perf_counter() - t0, lambda: pruned)


def _check_masks_fit(masks: Masks, model: nn.Module, cfg: RunConfig, path: Path) -> None:
    """``masks`` cover exactly the run's prunable tensors, each with its shape (a one-line error naming the file)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the run already warned about unpruned layers when it pruned
        params = prunable_parameters(model, include_bias=cfg.include_bias, include_norm=cfg.include_norm,
                                     exclude=cfg.exclude, include=cfg.include)
    missing, extra = sorted(set(params) - set(masks)), sorted(set(masks) - set(params))
    wrong = [n for n in params if n in masks and tuple(masks[n].shape) != tuple(params[n].shape)]
    problem = (f"lacks {len(missing)} of the {len(params)} prunable tensors ({missing[0]}, ...)" if missing else
               f"names tensors the model lacks ({extra[0]}, ...)" if extra else
               f"has a mask of another shape for {wrong[0]}" if wrong else "")
    check(not problem, f"{path} {problem}: it was made for another model; delete it (or the run folder) to prune again")


def _prepare_weights(cfg: RunConfig, model: nn.Module, data: datasets.Dataset, out: Path, device: str | None,
                     t0: float, dense_costs: dict[str, float]) -> Prepared:
    """A run with a mask up to training: prune (or read the masks a killed run saved)."""
    masks_path, start_path = out / MASKS_FILE, out / START_FILE
    updater = _updater(cfg, data)
    if masks_path.exists():  # a killed run's masks: they must be this model's, every prunable tensor
        masks = Masks.load(masks_path)
        _check_masks_fit(masks, model, cfg, masks_path)
    else:
        with _warnings_of_run(cfg):  # layer collapse warns, as prune does, naming the run
            masks = prune_model(cfg, model, data, out, device)
        if masks.start_state is not None:  # the method rewound the weights (imp): train from those
            write_safetensors(start_path, masks.start_state)
        masks.save(masks_path)
    if start_path.exists():
        model.load_state_dict(read_safetensors(start_path, what="start weights",
                                               fix="delete the run folder to start over")[0])
    diagnostics = mask_diagnostics(model, masks, data.input_shape)  # what theory says before training
    if cfg.reinit:
        reinitialize(model, seed=cfg.seed + 1)

    def pruned() -> dict[str, Any]:
        rep = masks.report()
        return {"kept": rep["kept"], "total": rep["total"], "density_actual": rep["density"],
                "collapsed": rep["collapsed"], "layer_density": {r["name"]: r["density"] for r in rep["layers"]},
                "diagnostics": diagnostics, "auto": masks.meta.get("auto"),
                **cost_fractions(costs(model, data.input_shape, dict(masks)), dense_costs), **_moved(updater, out)}

    return Prepared(cfg, out, data, model, masks, t0, time.perf_counter() - t0, pruned,
                    callbacks=[updater] if updater is not None else [])


@contextlib.contextmanager
def _warnings_of_run(cfg: RunConfig) -> Iterator[None]:
    """The warnings raised inside (layer collapse, unpruned tensors) issued again with the run they
    belong to first (``run snip-topk-d0.01-s0-<hash>: layer collapse: ...``): in a sweep, many runs warn."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for w in caught:
        warnings.warn_explicit(f"run {run_name(cfg)}: {w.message}", w.category, w.filename, w.lineno)


def _updater(cfg: RunConfig, data: datasets.Dataset) -> dynamic_sparse.Updater | None:
    """The run's DST updater (None for dst=static), its schedule checked against the training's
    length before any pruning (an interval longer than the training is a one-line error)."""
    settings = cfg.dst_settings()
    dynamic_sparse.check_steps(settings, cfg.train.epochs * -(-len(data.train_y) // cfg.train.batch_size))
    return dynamic_sparse.for_run(settings, cfg.seed)


def _moved(updater: dynamic_sparse.Updater | None, out: Path) -> dict[str, Any]:
    """After training with a moving mask: ``masks-final.safetensors`` and the Result's ``dst`` record."""
    if updater is None:
        return {}
    check(updater.final_masks is not None, "the DST updater saw no training; train the run with its callbacks")
    Masks(updater.final_masks).save(out / MASKS_FINAL_FILE)
    return {"dst": updater.summary()}


def prepare(cfg: RunConfig, out: Path, *, device: str | None = None, data_root: str | None = None,
            download: bool = False, dataset: datasets.Dataset | None = None) -> Prepared:
    """Everything of a run before its training (its folder claimed and locked by the caller)."""
    t0 = time.perf_counter()
    data = dataset if dataset is not None else load_data(cfg, data_root, download)
    model = build_model(cfg, data)
    dense_costs = costs(model, data.input_shape)
    if cfg.structure == "units":
        return _prepare_units(cfg, model, data, out, device, t0, dense_costs)
    return _prepare_weights(cfg, model, data, out, device, t0, dense_costs)


def finish(ready: Prepared, trained: Mapping[str, Any], wall_seconds: float | None = None) -> Result:
    """Write and return the Result of a prepared run that ``trained`` (what ``train`` returned);
    ``wall_seconds`` defaults to the time since :func:`prepare` began."""
    cfg = ready.cfg
    wall = time.perf_counter() - ready.t0 if wall_seconds is None else wall_seconds
    result = Result(config=to_dict(cfg), hash=config_hash(cfg), compression=1 / cfg.density,
                    final_test_acc=trained["final_test_acc"], best_test_acc=trained["best_test_acc"],
                    final_train_loss=trained["final_train_loss"], **ready.pruned(),
                    prune_seconds=ready.prune_seconds, wall_seconds=wall)
    write_json(ready.out / RESULT_FILE, result.to_dict())
    return result


def run_lock(out: Path) -> Any:
    """The lock a run holds on its folder while it runs (a second process on it is an error)."""
    return hold_lock(out / ".run.lock", f"another process (pid {{pid}}) is running this run in {out}; wait for it "
                                        "to end")


def run(cfg: RunConfig, out: str | Path, *, device: str | None = None, data_root: str | None = None,
        download: bool = False, progress: bool = False, dataset: datasets.Dataset | None = None) -> Result:
    """Run ``cfg`` in folder ``out`` (resuming a checkpoint there) and return its result (a finished
    run's is read back from its ``result.json``)."""
    out = Path(out)
    claim(out, cfg)
    with run_lock(out):
        done = _start_in(out)
        if done.exists():
            return _finished(done, cfg)
        ready = prepare(cfg, out, device=device, data_root=data_root, download=download, dataset=dataset)
        trained = train(ready.model, ready.data, cfg.train, device=device, progress=progress, **ready.train_kwargs())
        return finish(ready, trained)
