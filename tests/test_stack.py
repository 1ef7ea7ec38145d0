"""Stacked training (sketchprune.stack): a network trained in a stack of any size gets, bit for
bit, what train() gives it alone; masks stay exactly zero; a killed stack resumes with nothing
lost or repeated; sweeps group compatible runs and stack them by default."""

import copy
import json

import pytest
import torch
import yaml
from torch import nn

from sketchprune import SketchpruneError, data, models, prune, stack, sweep
from sketchprune.config import config_hash
from sketchprune.experiment import make_config
from sketchprune.stack import Job, plan, stack_models, stack_problem, train_stacked
from sketchprune.train import TrainConfig, train


def images(n_train: int, n_test: int, side: int, seed: int = 0) -> data.Dataset:
    """Seeded 1 x side x side images whose label is a fixed linear rule of the pixels (learnable)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_train + n_test, 1, side, side, generator=g)
    rule = torch.randn(side * side, 10, generator=g)
    y = (x.flatten(1) @ rule).argmax(1)
    return data.Dataset("images", x[:n_train], y[:n_train], x[n_train:], y[n_train:], 10, image=True)


def vectors(n_train: int, n_test: int, dim: int, seed: int = 0) -> data.Dataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_train + n_test, dim, generator=g)
    y = (x @ torch.randn(dim, 10, generator=g)).argmax(1)
    return data.Dataset("vectors", x[:n_train], y[:n_train], x[n_train:], y[n_train:], 10)


def networks(name: str, ds: data.Dataset, k: int, **options):
    """``k`` seeded networks and masks: magnitude at 0.2, none (dense), SNIP at 0.35, ... in turn."""
    nets, masks = [], []
    for s in range(k):
        torch.manual_seed(100 + s)
        net = models.create(name, num_classes=10, input_shape=ds.input_shape, **options)
        nets.append(net)
        kind = s % 3
        masks.append(None if kind == 1 else
                     prune(copy.deepcopy(net), "magnitude" if kind == 0 else "snip", 0.2 if kind == 0 else 0.35,
                           data=[(ds.train_x[:32], ds.train_y[:32])]))
    return nets, masks


def alone(nets, masks, ds, cfg, folder=None, **kw):
    """Each network trained by train() on its own (seed = its index); models and results."""
    out = []
    for s, (net, m) in enumerate(zip(nets, masks)):
        net = copy.deepcopy(net)
        res = train(net, ds, cfg, masks=m, seed=s, out=folder / f"a{s}" if folder else None, **kw)
        out.append((net, res))
    return out


def stacked(nets, masks, ds, cfg, folder=None, seeds=None, **kw):
    jobs = [Job(copy.deepcopy(n), m, s, folder / f"b{s}" if folder else None)
            for n, m, s in zip(nets, masks, seeds or range(len(nets)))]
    return jobs, train_stacked(jobs, ds, cfg, **kw)


def same_state(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return list(sa) == list(sb) and all(torch.equal(sa[n], sb[n]) for n in sa)


CASES = [  # model, options, data, training
    ("mlp", {"width": 24, "depth": 2}, lambda: images(203, 61, 8),
     TrainConfig(epochs=2, batch_size=32, optimizer="adam", lr=3e-3, weight_decay=0.0)),
    ("deep-linear", {"width": 13}, lambda: vectors(150, 40, 17),
     TrainConfig(epochs=2, batch_size=32, optimizer="sgd", lr=0.05, weight_decay=1e-3, lr_schedule="step",
                 lr_drops=(1,))),
    ("conv", {"width": 4}, lambda: images(203, 61, 8),
     TrainConfig(epochs=2, batch_size=32, optimizer="adamw", lr=3e-3, weight_decay=1e-2, augment=True)),
    ("conv1d", {"width": 5}, lambda: vectors(203, 61, 40),
     TrainConfig(epochs=2, batch_size=32, optimizer="adam", lr=3e-3, weight_decay=0.0)),
    ("lenet5", {}, lambda: images(150, 40, 16),
     TrainConfig(epochs=2, batch_size=32, optimizer="sgd", lr=0.02, lr_schedule="constant")),
    ("resnet20", {"width": 4}, lambda: images(90, 30, 8),
     TrainConfig(epochs=1, batch_size=32, optimizer="sgd", lr=0.05, augment=True)),
    ("vgg11_bn", {"width": 0.0625}, lambda: images(90, 30, 16),
     TrainConfig(epochs=1, batch_size=32, optimizer="adam", lr=1e-3, weight_decay=0.0)),
]


@pytest.mark.parametrize("name,options,make,cfg", CASES, ids=[c[0] for c in CASES])
def test_a_stacked_network_trains_exactly_as_it_does_alone(name, options, make, cfg, tmp_path):
    """Weights, buffers, metrics and checkpoint contents equal train()'s bit for bit, for every
    layer kind (Linear with and without bias, Conv1d/2d, BatchNorm, pooling, residual sums), odd
    last batches (slices off the allocator's alignment), augmentation, SGD / Adam / AdamW, masks."""
    ds = make()
    nets, masks = networks(name, ds, 3, **options)
    ref = alone(nets, masks, ds, cfg, tmp_path)
    jobs, results = stacked(nets, masks, ds, cfg, tmp_path)
    for s, ((net, r), job, res) in enumerate(zip(ref, jobs, results)):
        assert same_state(net, job.model), f"network {s}"
        assert res["history"] == r["history"] and res["final_test_acc"] == r["final_test_acc"]
        a = torch.load(tmp_path / f"a{s}" / "checkpoint.pt", weights_only=True)
        b = torch.load(tmp_path / f"b{s}" / "checkpoint.pt", weights_only=True)
        assert sorted(a) == sorted(b) and a["epoch"] == b["epoch"] and a["history"] == b["history"]
        assert torch.equal(a["generator"], b["generator"])
        assert all(torch.equal(a["model"][n], b["model"][n]) for n in a["model"])
        assert a["optimizer"]["param_groups"] == b["optimizer"]["param_groups"]
        for i, st in a["optimizer"]["state"].items():
            assert all(torch.equal(v, b["optimizer"]["state"][i][key]) for key, v in st.items())
        assert (tmp_path / f"a{s}" / "metrics.jsonl").read_text() == (tmp_path / f"b{s}" / "metrics.jsonl").read_text()


def test_a_runs_result_does_not_depend_on_its_stack():
    """The same network (seed 7's weights, mask and batch order) alone, first of 2, last of 16."""
    ds = images(203, 61, 8)
    cfg = TrainConfig(epochs=2, batch_size=32, optimizer="adam", lr=3e-3, weight_decay=0.0)
    nets, masks = networks("mlp", ds, 16, width=24, depth=2)
    target = (nets[7], masks[7])
    (ref, _), = alone([target[0]], [target[1]], ds, cfg)  # seed 0 in alone(): use the stacks' seed 0 too
    for companions in ([], [0], list(range(15))):
        order = [target] + [(nets[c], masks[c]) for c in companions if c != 7]
        if len(order) == 16:
            order = order[1:] + order[:1]  # the network last of the stack
        seeds = [0 if n is target[0] else 100 + i for i, (n, _) in enumerate(order)]
        jobs, _ = stacked([n for n, _ in order], [m for _, m in order], ds, cfg, seeds=seeds)
        mine = next(j for j in jobs if j.seed == 0)
        assert same_state(ref, mine.model), f"in a stack of {len(order)}"


def test_masks_stay_exactly_zero_in_every_stacked_network():
    ds = images(203, 61, 8)
    nets, masks = networks("conv", ds, 4, width=4)
    jobs, _ = stacked(nets, masks, ds, TrainConfig(epochs=2, batch_size=32, optimizer="adam", lr=1e-2,
                                                   weight_decay=1e-3))
    for job, m in zip(jobs, masks):
        params = dict(job.model.named_parameters())
        if m is None:
            assert all((p != 0).float().mean() > 0.9 for p in params.values())  # the dense one trained freely
            continue
        for n, keep in m.items():
            assert torch.all(params[n][~keep] == 0)
            assert (params[n][keep] != 0).all()
    assert not torch.equal(masks[0]["0.weight"], masks[2]["0.weight"])  # each network its own mask


def test_a_killed_stack_resumes_with_nothing_lost(tmp_path):
    """Killed after one epoch, network 0 resumes alone (train()) and the others in a new stack; a run
    trained alone for one epoch resumes inside a stack; networks at different epochs resume together."""
    ds = images(203, 61, 8)
    cfg = TrainConfig(epochs=3, batch_size=32, optimizer="adam", lr=3e-3, weight_decay=0.0)
    nets, masks = networks("mlp", ds, 4, width=24, depth=2)
    ref = alone(nets, masks, ds, cfg)
    jobs, first = stacked(nets[:3], masks[:3], ds, cfg, tmp_path, stop_after=1)
    assert [r["epochs_done"] for r in first] == [1, 1, 1]
    resumed0 = train(jobs[0].model, ds, cfg, masks=masks[0], seed=0, out=tmp_path / "b0")
    train(nets_3 := copy.deepcopy(nets[3]), ds, cfg, masks=masks[3], seed=3, out=tmp_path / "b3", stop_after=2)
    later = [Job(jobs[1].model, masks[1], 1, tmp_path / "b1"), Job(jobs[2].model, masks[2], 2, tmp_path / "b2"),
             Job(nets_3, masks[3], 3, tmp_path / "b3")]  # epochs 1, 1 and 2 done
    results = train_stacked(later, ds, cfg)
    assert same_state(ref[0][0], jobs[0].model) and resumed0["history"] == ref[0][1]["history"]
    for job, res in zip(later, results):
        assert same_state(ref[job.seed][0], job.model) and res["history"] == ref[job.seed][1]["history"]


def test_a_network_whose_loss_diverges_fails_alone():
    ds = images(203, 61, 8)
    cfg = TrainConfig(epochs=2, batch_size=32, optimizer="sgd", lr=0.05)
    nets, masks = networks("mlp", ds, 3, width=24, depth=2)
    ref = alone(nets, masks, ds, cfg)
    with torch.no_grad():
        bad = copy.deepcopy(nets[1])
        bad[1].weight.mul_(1e30)  # the first step's loss overflows
    jobs, results = stacked([nets[0], bad, nets[2]], masks, ds, cfg)
    assert isinstance(results[1], SketchpruneError) and "lower --lr" in str(results[1])
    assert same_state(ref[0][0], jobs[0].model) and same_state(ref[2][0], jobs[2].model)


def test_what_cannot_stack_says_why():
    assert stack_problem(models.create("resnet20")) is None
    assert "Dropout" in stack_problem(nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.1)))
    with pytest.raises(SketchpruneError, match="same architecture"):
        stack_models([models.create("mlp", width=8), models.create("mlp", width=9)])


def test_parse_stack():
    assert stack.parse_stack("auto") == "auto" and stack.parse_stack("4") == 4 and stack.parse_stack(16) == 16
    for bad in (0, -2, "x", True, 1.5, "0", None):
        with pytest.raises(SketchpruneError, match="whole number >= 1 or auto"):
            stack.parse_stack(bad)


def test_plan_groups_runs_that_share_model_data_and_training():
    base = {"model": "mlp", "dataset": "digits", "train": {"epochs": 2}}
    cfgs = [make_config({**base, "method": m, "seed": s}) for m in ("random", "snip") for s in (0, 1, 2)]
    cfgs.append(make_config({**base, "method": "random", "train": {"epochs": 3}}))  # other training
    cfgs.append(make_config({**base, "method": "random", "structure": "units"}))  # its own shapes
    cfgs.append(make_config({**base, "method": "imp", "seed": 5}))  # prunes in its own loop, trains stacked
    assert plan(cfgs, 4) == [[0, 1, 2, 3], [4, 5, 8], [6], [7]]
    assert plan(cfgs, 1) == [[i] for i in range(9)]
    assert plan(cfgs, "auto") == [[0, 1, 2, 3, 4, 5, 8], [6], [7]]  # auto sizes the stacks in run_many


def test_auto_size_keeps_the_widest_activation_in_the_cache():
    mlp = models.create("mlp", input_shape=(40,), width=100, depth=5)
    assert stack.auto_size(mlp, 128, "cpu") == stack.STACK_MAX
    lenet = models.create("lenet5")  # 6 x 24 x 24 = 3,456 numbers a sample
    assert stack.auto_size(lenet, 128, "cpu") == stack.CACHE_BYTES // (3456 * 128 * 4) == 2
    assert stack.auto_size(models.create("resnet20", input_shape=(1, 28, 28)), 128, "cpu") == 1


def sweep_file(tmp_path, **extra):
    spec = {"fixed": {"model": "mlp", "model_options": {"width": 16, "depth": 2}, "dataset": "digits",
                      "prune_batch_size": 64,
                      "train": {"epochs": 2, "optimizer": "adam", "lr": 0.01, "weight_decay": 0.0, "batch_size": 128}},
            "grids": [{"method": ["random", "snip"], "mode": ["topk"], "density": [0.3], "seed": [0, 1, 2]},
                      {"method": ["random"], "density": [1.0], "seed": [0]},
                      {"method": ["random"], "structure": ["units"], "density": [0.5], "seed": [0]}],
            **extra}
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


RESULT_KEYS = ("final_test_acc", "best_test_acc", "final_train_loss", "kept", "total", "layer_density",
               "diagnostics", "params_fraction", "macs_fraction", "hash", "config")


def test_a_stacked_sweep_gives_the_one_at_a_time_results(tmp_path, monkeypatch):
    sw = sweep.load(sweep_file(tmp_path))
    assert sw.stack == "auto"
    one = sweep.run(sw, tmp_path / "one", stack=1)
    sizes = []
    real = stack.train_stacked
    monkeypatch.setattr(stack, "train_stacked", lambda jobs, *a, **k: sizes.append(len(jobs)) or real(jobs, *a, **k))
    many = sweep.run(sw, tmp_path / "many", stack=5)
    assert sizes == [5, 2]  # the 7 weight runs in two stacks; the units run trained alone
    assert one["done"] == many["done"] == len(sw.runs) == 8 and one["failed"] == many["failed"] == 0
    for cfg in sw.runs:
        a, b = sweep.folder(tmp_path / "one", cfg), sweep.folder(tmp_path / "many", cfg)
        ra, rb = (json.loads((f / "result.json").read_text()) for f in (a, b))
        assert {k: ra[k] for k in RESULT_KEYS} == {k: rb[k] for k in RESULT_KEYS}, a.name
        assert (a / "metrics.jsonl").read_text() == (b / "metrics.jsonl").read_text()


def test_a_killed_stacked_sweep_resumes_with_nothing_lost_or_repeated(tmp_path, monkeypatch):
    sw = sweep.load(sweep_file(tmp_path, stack=4))
    reference = tmp_path / "ref"
    sweep.run(sw, reference, stack=1)
    writes = []
    real_write = stack._write

    def killed_after(limit):
        def write(net, *args):
            if len(writes) == limit:
                raise KeyboardInterrupt  # the kill: not an error of any run
            writes.append(net.job.out)
            return real_write(net, *args)
        return write

    monkeypatch.setattr(stack, "_write", killed_after(7))  # mid-epoch: networks of one stack at epochs 1 and 2
    with pytest.raises(KeyboardInterrupt):
        sweep.run(sw, tmp_path / "out")
    before = list(writes)
    writes.clear()
    monkeypatch.setattr(stack, "_write", killed_after(10**9))
    counts = sweep.run(sw, tmp_path / "out")
    assert counts["done"] == len(sw.runs) and counts["failed"] == 0
    stacked_runs = [c for c in sw.runs if c.structure == "weights"]
    assert len(before) + len(writes) == 2 * len(stacked_runs)  # every network-epoch trained exactly once
    for cfg in sw.runs:
        a = json.loads((sweep.folder(reference, cfg) / "result.json").read_text())
        b = json.loads((sweep.folder(tmp_path / "out", cfg) / "result.json").read_text())
        assert {k: a[k] for k in RESULT_KEYS} == {k: b[k] for k in RESULT_KEYS}, config_hash(cfg)


def test_sweep_file_stack_and_gpus_per_task_are_checked(tmp_path):
    assert sweep.load(sweep_file(tmp_path, stack=8, gpus_per_task=0.25)).gpus_per_task == 0.25
    with pytest.raises(SketchpruneError, match="stack must be a whole number >= 1 or auto"):
        sweep.load(sweep_file(tmp_path, stack=0))
    with pytest.raises(SketchpruneError, match=r"gpus_per_task must be a number in \(0, 1\]"):
        sweep.load(sweep_file(tmp_path, gpus_per_task=2))


def test_the_cli_takes_stack(tmp_path, capsys):
    from sketchprune.cli import main

    path = sweep_file(tmp_path)
    assert main(["sweep", str(path), "--out", str(tmp_path / "o"), "--stack", "3", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["done"] == 8
    assert main(["sweep", str(path), "--out", str(tmp_path / "p"), "--stack", "zero"]) == 2
    assert "error: --stack must be a whole number >= 1 or auto, got 'zero'" in capsys.readouterr().err
