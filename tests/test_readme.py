"""The README's Python examples run as written (paths and iteration counts shrunk)."""

import re
from pathlib import Path

import torch

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", README, re.S)


def test_api_tour_runs(tmp_path):
    code = BLOCKS[0].replace('"masks.safetensors"', repr(str(tmp_path / "m.safetensors")))
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    masks = scope["masks"]
    assert sum(k for k, _ in masks.counts().values()) == round(0.05 * (300 * 784 + 10 * 300))  # exact-k count
    assert bool((scope["model"][0].weight[~scope["masks"]["0.weight"]] == 0).all())


def test_pruning_tour_runs():
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    scope = {"x": x, "y": y}
    exec(compile(BLOCKS[1].replace("iterations=100", "iterations=2"), "README.md", "exec"), scope)
    assert abs(scope["masks"].density() - 0.05) < 1e-3
