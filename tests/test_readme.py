"""The README's Python examples run as written (paths and iteration counts shrunk)."""

import re
from pathlib import Path

import torch

from sketchprune.methods import registry

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", README, re.S)


def block(marker: str) -> str:
    (found,) = [b for b in BLOCKS if marker in b]
    return found


def test_api_tour_runs(tmp_path):
    code = block("from sketchprune import select, Masks, sketch").replace(
        '"masks.safetensors"', repr(str(tmp_path / "m.safetensors")))
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    masks = scope["masks"]
    assert sum(k for k, _ in masks.counts().values()) == round(0.05 * (300 * 784 + 10 * 300))  # exact-k count
    assert bool((scope["model"][0].weight[~scope["masks"]["0.weight"]] == 0).all())


def test_pruning_tour_runs():
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    scope = {"x": x, "y": y}
    code = block('models.create("resnet20")').replace("iterations=100", "iterations=2")
    exec(compile(code, "README.md", "exec"), scope)
    assert abs(scope["masks"].density() - 0.01) < 1e-3 and scope["masks"].meta["auto"]  # the last line: auto


def test_adding_a_method_as_shown_works():
    before = dict(registry._METHODS)
    try:
        exec(compile(block('@register("gradnorm"'), "README.md", "exec"), {})
        from sketchprune import prune

        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
        data = [(torch.randn(10, 6), torch.randint(0, 3, (10,)))]
        a = prune(net, "gradnorm", 0.5, data=data, mode="sample", gradnorm_power=2.0)
        b = prune(net, "gradnorm", 0.5, data=data, mode="sample", power=2.0)  # |g|^2 at power 1 = |g| at power 2
        c = prune(net, "gradnorm", 0.5, data=data, mode="sample")
        assert a.density() == round(0.5 * 72) / 72 and all(torch.equal(a[n], b[n]) for n in a)
        assert not all(torch.equal(a[n], c[n]) for n in a)  # so the option reached the scorer
    finally:
        registry._METHODS.clear()
        registry._METHODS.update(before)


def test_structured_tour_runs():
    from sketchprune import models, prune

    torch.manual_seed(0)
    net = models.create("resnet20", width=8)
    mlp = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))
    masks = prune(mlp, "magnitude", 0.05)
    scope = {"net": net, "x": torch.randn(8, 3, 32, 32), "y": torch.randint(0, 10, (8,)), "mlp": mlp,
             "masks": masks, "batch": torch.randn(16, 64)}
    exec(compile(block("from sketchprune import prune_units"), "README.md", "exec"), scope)
    assert scope["small"](scope["x"]).shape == (8, 10)
    import copy

    masked = copy.deepcopy(mlp)
    masks.apply(masked).remove()
    assert torch.allclose(scope["fast"](scope["batch"]), masked(scope["batch"]), atol=1e-5)
    assert scope["nm"].meta["nm"] == "2:4"
