"""Masks (masks.py): reports, exact zeros through optimizer steps (hooks only on the optimizers of masked
parameters), handles that own what they added, optimizer state at pruned entries, files, torch.nn.utils.prune export."""

import gc

import pytest
import torch
from torch import nn
from torch.optim import optimizer as torch_optimizer

from sketchprune import Masks, SketchpruneError, prune, select
from sketchprune import masks as masks_module
from sketchprune.masks import zero_pruned_state
from sketchprune.train import TrainConfig, train


def random_masks(model, density=0.3, seed=0):
    scores = {n: p.detach().abs() for n, p in model.named_parameters() if n.endswith("weight")}
    return Masks(select(scores, density, mode="sample", generator=torch.Generator().manual_seed(seed)))


def test_density_reports():
    m = Masks({"a": torch.tensor([True, False, False, False]), "b": torch.zeros(2, 3, dtype=torch.bool)})
    assert m.density() == pytest.approx(1 / 10)
    assert m.layer_density() == {"a": 0.25, "b": 0.0}
    assert m.collapsed() == ["b"]
    rep = m.report()
    assert rep["kept"] == 1 and rep["total"] == 10 and rep["layers"][1]["shape"] == [2, 3]
    assert "COLLAPSED" in m.table()


@pytest.mark.parametrize(
    "make_opt",
    [
        lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=5e-4),
        lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3),
        lambda p: torch.optim.Adam(p, lr=1e-2, weight_decay=1e-3),
        lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.1),
        lambda p: torch.optim.RMSprop(p, lr=1e-2, momentum=0.5),
    ],
    ids=["sgd-momentum-wd", "sgd-nesterov", "adam", "adamw", "rmsprop"],
)
def test_pruned_weights_stay_exactly_zero(make_opt, small_net):
    model = small_net()
    masks = random_masks(model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    handle = masks.apply(model)
    opt = make_opt(model.parameters())
    gen = torch.Generator().manual_seed(0)
    for _ in range(50):
        x = torch.randn(32, 10, generator=gen)
        y = torch.randint(0, 3, (32,), generator=gen)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    params = dict(model.named_parameters())
    for n, m in masks.items():
        assert bool((params[n][~m] == 0).all()), n
        assert not torch.equal(params[n][m], before[n][m])  # kept weights trained
    handle.remove()


def test_the_fused_rezero_follows_masks_and_dtypes_that_change_after_steps(small_net):
    # rezero caches each optimizer's masked tensors: a mask added or removed, or a model cast to
    # another dtype after the optimizer has stepped, must still be what the next step enforces
    model = small_net()
    a, b = random_masks(model, seed=1), random_masks(model, seed=2)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)

    def step():
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.01)  # a change the gradient hook cannot see: only rezero puts zeros back
        opt.zero_grad()
        model(torch.randn(8, 10, dtype=model[0].weight.dtype)).sum().backward()
        opt.step()

    ha = a.apply(model)
    step()
    hb = b.apply(model)
    step()
    params = dict(model.named_parameters())
    assert all(bool((params[n][~(a[n] & b[n])] == 0).all()) for n in a)
    ha.remove()
    step()
    assert all(bool((params[n][~b[n]] == 0).all()) and bool((params[n][b[n] & ~a[n]] != 0).any()) for n in b)
    model.double()
    step()
    assert all(params[n].dtype == torch.float64 and bool((params[n][~b[n]] == 0).all()) for n in b)
    hb.remove()
    step()
    assert all(bool((params[n] != 0).all()) for n in b)


def perturbed_step(model, opt):
    """One step after moving every weight off zero, which only the post-step re-zeroing undoes."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01)
    opt.zero_grad()
    model(torch.randn(8, 10)).sum().backward()
    opt.step()


def pruned_are_zero(model, masks):
    params = dict(model.named_parameters())
    return all(bool((params[n][~m] == 0).all()) for n, m in masks.items())


@pytest.mark.parametrize("make_opt", [lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9),
                                      lambda p: torch.optim.Adam(p, lr=1e-2)], ids=["sgd-momentum", "adam"])
def test_an_optimizer_that_stepped_before_apply_keeps_exact_zeros(make_opt, small_net):
    model = small_net()
    opt = make_opt(model.parameters())
    for _ in range(3):  # dense steps: momentum and moments are nonzero everywhere, then the masks come
        opt.zero_grad()
        model(torch.randn(8, 10)).sum().backward()
        opt.step()
    masks = random_masks(model)
    handle = masks.apply(model)
    for _ in range(3):
        perturbed_step(model, opt)
        assert pruned_are_zero(model, masks)
    handle.remove()


def test_only_optimizers_of_masked_parameters_rezero_and_no_hook_outlives_the_masks(small_net):
    gc.collect()  # masks left applied by earlier tests to models now gone
    post = len(torch_optimizer._global_optimizer_post_hooks)
    masked, plain = small_net(0), small_net(1)
    masks = random_masks(masked)
    handle = masks.apply(masked)
    opt_masked = torch.optim.SGD(masked.parameters(), lr=0.1)
    opt_plain = torch.optim.SGD(plain.parameters(), lr=0.1)
    perturbed_step(masked, opt_masked)
    perturbed_step(plain, opt_plain)
    assert pruned_are_zero(masked, masks)
    assert len(opt_masked._optimizer_step_post_hooks) == 1 and not opt_plain._optimizer_step_post_hooks
    assert len(torch_optimizer._global_optimizer_post_hooks) == post  # nothing every optimizer pays for after a step
    opt_plain.add_param_group({"params": [masked[2].weight]})  # a masked parameter joins the plain optimizer
    perturbed_step(masked, opt_plain)
    assert bool((masked[2].weight[~masks["2.weight"]] == 0).all()) and len(opt_plain._optimizer_step_post_hooks) == 1
    handle.remove()
    assert not opt_masked._optimizer_step_post_hooks and not opt_plain._optimizer_step_post_hooks
    assert masks_module._look_at not in torch_optimizer._global_optimizer_pre_hooks.values()  # none of ours left
    perturbed_step(masked, opt_masked)
    assert bool((masked[0].weight != 0).all())


@pytest.mark.parametrize("make_opt", [lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9),
                                      lambda p: torch.optim.Adam(p, lr=1e-2, amsgrad=True)], ids=["sgd", "amsgrad"])
def test_zero_pruned_state_zeroes_the_state_at_pruned_entries_only(make_opt, small_net):
    model = small_net()
    opt = make_opt(model.parameters())
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(8, 10)).sum().backward()
        opt.step()
    before = {p: {k: v.clone() for k, v in opt.state[p].items()} for p in model.parameters()}
    masks = random_masks(model)
    handle = masks.apply(model)
    zero_pruned_state(opt)
    params = dict(model.named_parameters())
    for n, p in params.items():
        for k, v in opt.state[p].items():
            if n in masks and v.shape == p.shape:
                assert bool((v[~masks[n]] == 0).all()) and bool((before[p][k][~masks[n]] != 0).any()), (n, k)
                assert torch.equal(v[masks[n]], before[p][k][masks[n]]), (n, k)
            else:  # unmasked parameters and scalar state (Adam's step) as they were
                assert torch.equal(v, before[p][k]), (n, k)
    handle.remove()


def test_save_load_round_trip(tmp_path, small_net):
    model = small_net()
    masks = random_masks(model)
    path = masks.save(tmp_path / "m.safetensors", metadata={"method": "magnitude"})
    back = Masks.load(path)
    assert list(back) == list(masks) and all(torch.equal(back[n], masks[n]) for n in masks)
    assert Masks.load_metadata(path) == {"method": "magnitude"}
    assert not list(tmp_path.glob("*.tmp"))


def test_mismatched_model_errors(small_net):
    masks = random_masks(small_net())
    other = nn.Sequential(nn.Linear(10, 21), nn.ReLU(), nn.Linear(21, 3))
    with pytest.raises(SketchpruneError, match="has shape"):
        masks.apply(other)
    renamed = nn.Sequential(nn.Identity(), nn.Linear(10, 20), nn.ReLU(), nn.Linear(20, 3))
    with pytest.raises(SketchpruneError, match="names no parameter"):
        masks.apply(renamed)


def test_corrupt_and_versioned_files(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(SketchpruneError, match="corrupt"):
        Masks.load(bad)
    from safetensors.torch import save_file

    other = tmp_path / "v2.safetensors"
    save_file({"a": torch.ones(2, dtype=torch.bool)}, other,
              metadata={"format": "sketchprune.masks", "format_version": "2", "shapes": '{"a": [2]}'})
    with pytest.raises(SketchpruneError, match="format version 2"):
        Masks.load(other)
    with pytest.raises(SketchpruneError, match="does not exist"):
        Masks.load(tmp_path / "missing.safetensors")


def test_export_to_torch_prune(small_net):
    model = small_net()
    masks = random_masks(model)
    dense = {n: p.detach().clone() for n, p in model.named_parameters()}
    masks.to_torch_prune(model)
    lin = model[0]
    assert torch.equal(lin.weight_mask.bool(), masks["0.weight"])
    assert torch.equal(lin.weight, dense["0.weight"] * masks["0.weight"])


def test_masks_need_bool_tensors():
    with pytest.raises(SketchpruneError, match="bool"):
        Masks({"a": torch.ones(3)})


def sgd_steps(model, steps=3):
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for _ in range(steps):
        opt.zero_grad()
        model(torch.randn(8, 12)).tanh().sum().backward()
        opt.step()
    assert all(bool(torch.isfinite(p).all()) for p in model.parameters())


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


@pytest.mark.parametrize("make", [lambda p: torch.optim.Adam(p, lr=0.01, eps=0.0),
                                  lambda p: torch.optim.AdamW(p, lr=0.01, eps=0.0),
                                  lambda p: torch.optim.RMSprop(p, lr=0.01, eps=0.0),
                                  lambda p: torch.optim.Adagrad(p, lr=0.01, eps=0.0),
                                  lambda p: torch.optim.Adadelta(p, eps=0.0)])
def test_exact_zeros_hold_with_an_eps_of_zero(make):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    masks = prune(model, "magnitude", 0.3)
    handle = masks.apply(model)
    opt = make(model.parameters())
    for _ in range(3):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(torch.randn(5, 6)), torch.randint(0, 3, (5,))).backward()
        opt.step()
    params = dict(model.named_parameters())
    for n, m in masks.items():
        assert bool((params[n][~m] == 0).all()), n  # (kept entries with a zero gradient are 0/0 too: torch's own)
    handle.remove()


def test_apply_zeroes_a_non_finite_pruned_weight():
    model = nn.Sequential(nn.Linear(4, 3))
    with torch.no_grad():
        model[0].weight[0, 0] = float("nan")
        model[0].weight[0, 1] = float("inf")
    keep = torch.ones(3, 4, dtype=torch.bool)
    keep[0, :2] = False
    Masks({"0.weight": keep}).apply(model).remove()
    assert model[0].weight[0, 0] == 0 and model[0].weight[0, 1] == 0
