"""Same seed, same mask, across refactors: a digest of every method's and unit method's output on a
small model, pinned in ``tests/pinned/masks.json`` (computed before the registry and pruning package
were reshaped). A changed digest means a method's behaviour changed: say why, or fix it.

Regenerate (only for a deliberate change of behaviour): ``python tests/test_pinned_masks.py``.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from sketchprune import methods, prune
from sketchprune.experiment import Trainer
from sketchprune.data import Dataset
from sketchprune.train import TrainConfig

PINNED = Path(__file__).parent / "pinned" / "masks.json"
UNIT_METHODS = ("sketch", "l1", "random", "3sp", "synflow")
CASES = [("topk", "global", None, 0.2), ("sample", "global", None, 0.2), ("topk", "layer", 2, 0.2),
         ("auto", "global", None, 0.2), ("auto", "global", None, 0.02)]


def _model() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.Conv2d(6, 8, 3, padding=1),
                        nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 16), nn.ReLU(),
                        nn.Linear(16, 4))
    net.input_shape = (1, 8, 8)
    return net


def _data() -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(7)
    return [(torch.randn(12, 1, 8, 8, generator=g), torch.randint(0, 4, (12,), generator=g)) for _ in range(2)]


def _digest(tensors) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _trainer() -> Trainer:
    (x, y), (tx, ty) = _data()
    data = Dataset("tiny", x, y, tx, ty, 4)
    return Trainer(data, TrainConfig(epochs=1, batch_size=6, lr=0.05))


def weight_digests(method: str) -> dict[str, str]:
    spec = methods.get(method)
    out = {}
    for mode, scope, iterations, density in CASES:
        if not spec.runner.gives_scores and (mode != "topk" or scope != "global" or iterations or density != 0.2):
            continue
        kw = {"trainer": _trainer()} if spec.runner.needs_trainer else {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            m = prune(_model(), method, density, mode=mode, scope=scope, iterations=iterations, data=_data(), seed=3,
                      **kw)
        out[f"{mode}-{scope}-{iterations}-{density}"] = _digest(m[n] for n in sorted(m))
    return out


def unit_digest(method: str, mode: str) -> str:
    from sketchprune import prune_units

    small = prune_units(_model(), method, 0.5, mode=mode, data=_data(), seed=2)
    state = small.state_dict()
    return _digest(state[k] for k in sorted(state))


def compute() -> dict[str, str]:
    out = {}
    for method in ("random", "magnitude", "force", "grasp", "imp", "sketch", "ntk", "ntk_sap", "phew", "prospr",
                   "px", "smart_ratio", "snip", "iterative_snip", "synflow"):
        for case, d in weight_digests(method).items():
            out[f"weights/{method}/{case}"] = d
    for method in UNIT_METHODS:
        for mode in ("topk", "sample"):
            out[f"units/{method}/{mode}"] = unit_digest(method, mode)
    return out


PINNED_VALUES = json.loads(PINNED.read_text()) if PINNED.exists() else {}


@pytest.mark.parametrize("method", sorted({k.split("/")[1] for k in PINNED_VALUES if k.startswith("weights/")}))
def test_weight_masks_are_the_pinned_ones(method):
    got = weight_digests(method)
    want = {k.split("/", 2)[2]: v for k, v in PINNED_VALUES.items() if k.startswith(f"weights/{method}/")}
    assert got == want


@pytest.mark.parametrize("method", UNIT_METHODS)
def test_unit_networks_are_the_pinned_ones(method):
    for mode in ("topk", "sample"):
        assert unit_digest(method, mode) == PINNED_VALUES[f"units/{method}/{mode}"], mode


def test_every_method_of_the_reshaping_is_pinned():
    pinned = {k.split("/")[1] for k in PINNED_VALUES}
    trains = {"early_bird"}  # a unit method that trains: tests/methods/test_early_bird.py
    assert set(UNIT_METHODS) == set(methods.names("units")) - trains and len(pinned) == 17  # 15 weight methods, l1, 3sp


if __name__ == "__main__":
    PINNED.parent.mkdir(exist_ok=True)
    PINNED.write_text(json.dumps(compute(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {PINNED}")
