"""Issue 13: masks nobody else can switch off (what is left here moves into test_masks.py)."""

import pytest
import torch
from torch import nn

from sketchprune import Masks, SketchpruneError, prune
from sketchprune.train import TrainConfig, train


def sgd_steps(model, steps=3):
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for _ in range(steps):
        opt.zero_grad()
        model(torch.randn(8, 12)).tanh().sum().backward()
        opt.step()
    assert all(bool(torch.isfinite(p).all()) for p in model.parameters())


def pruned_are_zero(model, masks) -> bool:
    params = dict(model.named_parameters())
    return all(bool((params[n].detach()[~m] == 0).all()) for n, m in masks.items())


def test_applying_the_same_masks_twice_then_removing_one_keeps_them(net):
    model = net()
    m = prune(model, "magnitude", 0.3)
    h1, h2 = m.apply(model), m.apply(model)
    p = model[0].weight
    assert len(p._post_accumulate_grad_hooks) == 1  # hooks never pile up
    h1.remove()
    sgd_steps(model)
    assert pruned_are_zero(model, m)
    h1.remove()  # removing twice takes nothing more back
    sgd_steps(model)
    assert pruned_are_zero(model, m)
    h2.remove()
    sgd_steps(model)
    assert not pruned_are_zero(model, m) and not p._post_accumulate_grad_hooks


def test_two_masks_enforce_their_intersection_until_one_is_removed(net):
    model = net()
    a = prune(model, "magnitude", 0.5)
    b = prune(model, "random", 0.5, seed=3)
    ha, hb = a.apply(model), b.apply(model)
    sgd_steps(model)
    assert pruned_are_zero(model, a) and pruned_are_zero(model, b)
    ha.remove()
    sgd_steps(model)
    assert pruned_are_zero(model, b)  # B is still enforced
    hb.remove()


def test_train_does_not_remove_the_callers_masks(digits):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    m = prune(model, "magnitude", 0.2)
    m.apply(model)
    train(model, digits, TrainConfig(epochs=1, lr=0.05), masks=m)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        model(digits.train_x[:32]).sum().backward()
        opt.step()
    assert pruned_are_zero(model, m)


def test_mask_files_errors_and_modes(tmp_path, net):
    m = prune(net(), "magnitude", 0.5)
    path = m.save(tmp_path / "masks.safetensors")
    (tmp_path / "other.json").write_text("{}")
    assert path.stat().st_mode & 0o777 == (tmp_path / "other.json").stat().st_mode & 0o777
    path.write_bytes(b"\x00" * 30)
    with pytest.raises(SketchpruneError, match="corrupt"):
        Masks.load_metadata(path)
    with pytest.raises(SketchpruneError, match="does not exist"):
        Masks.load_metadata(tmp_path / "missing.safetensors")
