"""One run = prune at initialization, then train: ``RunConfig`` -> run folder -> ``result.json``.

A run folder holds ``config.json``, ``masks.safetensors``, ``metrics.jsonl``, ``checkpoint.pt``
and, last and atomically, ``result.json``: a folder with ``result.json`` is a finished run.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sketchprune import data as datasets
from sketchprune import models, seeding
from sketchprune.config import config_hash, to_dict
from sketchprune.errors import check, check_density
from sketchprune.pruning import prune, reinitialize
from sketchprune.results import read_json, write_json
from sketchprune.train import TrainConfig, train


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines a run; a run folder is named by the hash of its non-default fields."""

    model: str = "conv1d"
    dataset: str = "mnist1d"
    method: str = "magnitude"
    density: float = 0.1
    mode: str = "topk"
    scheme: str = "exact"
    power: float = 1.0
    scope: str = "global"
    iterations: int = 0  # 0 = the method's default (synflow 100, iterative_snip 10, others 1)
    schedule: str = "exponential"
    prune_batches: int = 1  # batches of training data given to data-dependent scorers
    prune_batch_size: int = 256
    width: int = 0  # 0 = the model's default width
    shuffle: bool = False  # sanity check: move kept positions at random within each layer
    invert: bool = False  # sanity check: keep the lowest-scoring weights
    reinit: bool = False  # sanity check: re-initialize the model after pruning (same mask, new weights)
    train: TrainConfig = TrainConfig()
    seed: int = 0

    def validate(self) -> None:
        check_density(self.density)
        self.train.validate()


def density_from(density: float | None, compression: float | None, default: float = 0.1) -> float:
    """The density given either directly or as a compression ratio ``C`` (density ``1 / C``)."""
    if compression is None:
        return default if density is None else density
    check(density is None, "give density or compression, not both")
    check(isinstance(compression, (int, float)) and compression >= 1,
          f"compression must be a number >= 1 (it is 1/density), got {compression!r}")
    return 1.0 / compression


def run_name(cfg: RunConfig) -> str:
    return f"{cfg.method}-{cfg.mode}-d{cfg.density:.4g}-s{cfg.seed}-{config_hash(cfg)}"


def prune_batches(data: datasets.Dataset, cfg: RunConfig) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The first ``prune_batches`` batches of a seeded permutation of the training set."""
    perm = torch.randperm(len(data.train_y), generator=seeding.generator(cfg.seed, "prune-data"))
    size = cfg.prune_batch_size
    return [(data.train_x[perm[i * size:(i + 1) * size]], data.train_y[perm[i * size:(i + 1) * size]])
            for i in range(cfg.prune_batches)]


def execute(cfg: RunConfig, out: str | Path, *, device: str | None = None, data_root: str | None = None,
            download: bool = False, progress: bool = False, dataset: datasets.Dataset | None = None) -> dict[str, Any]:
    """Run ``cfg`` in folder ``out`` (resuming a checkpoint there) and return its result."""
    cfg.validate()
    out = Path(out)
    done = out / "result.json"
    if done.exists():
        return read_json(done)
    t0 = time.perf_counter()
    write_json(out / "config.json", {"hash": config_hash(cfg), **to_dict(cfg)})
    data = dataset if dataset is not None else datasets.load(cfg.dataset, root=data_root, download=download)
    options: dict[str, Any] = {"input_shape": data.input_shape}
    if cfg.width:
        options["width"] = cfg.width
    torch.manual_seed(cfg.seed)
    model = models.create(cfg.model, num_classes=data.num_classes, **options)
    extra: dict[str, Any] = {"input_shape": data.input_shape}
    if cfg.mode == "sample":
        extra.update(scheme=cfg.scheme, power=cfg.power)
    masks_path = out / "masks.safetensors"
    if masks_path.exists():
        from sketchprune.masks import Masks

        masks = Masks.load(masks_path)
    else:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            masks = prune(model, cfg.method, cfg.density, mode=cfg.mode, scope=cfg.scope,
                          iterations=cfg.iterations or None, schedule=cfg.schedule,
                          data=prune_batches(data, cfg), seed=cfg.seed, shuffle=cfg.shuffle, invert=cfg.invert,
                          **extra)
        masks.save(masks_path)
    if cfg.reinit:
        reinitialize(model, seed=cfg.seed + 1)
    prune_seconds = time.perf_counter() - t0
    trained = train(model, data, dataclasses.replace(cfg.train, seed=cfg.seed), masks=masks, out=out,
                    device=device, progress=progress)
    rep = masks.report()
    result = {
        "config": to_dict(cfg), "hash": config_hash(cfg), "compression": 1 / cfg.density,
        "final_test_acc": trained["final_test_acc"], "best_test_acc": trained["best_test_acc"],
        "final_train_loss": trained["final_train_loss"], "kept": rep["kept"], "total": rep["total"],
        "density_actual": rep["density"], "collapsed": rep["collapsed"],
        "layer_density": {r["name"]: r["density"] for r in rep["layers"]},
        "prune_seconds": prune_seconds, "wall_seconds": time.perf_counter() - t0,
    }
    write_json(done, result)
    return result
