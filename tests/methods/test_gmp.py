"""Gradual magnitude pruning (methods/gmp.py): from dense to exactly the budget on Zhu & Gupta's cubic
schedule, masks that only shrink, layers alike or one global ranking, the weights at the end as the
run's start, the same seed the same mask, and a run of it."""

import pytest
import torch

from sketchprune import SketchpruneError, models, prune
from sketchprune.experiment import Trainer, make_config, run
from sketchprune.masks import Masks
from sketchprune.methods.gmp import GradualPruning
from sketchprune.train import Callback, TrainConfig, train

CFG = TrainConfig(epochs=2, optimizer="adam", lr=3e-3, weight_decay=0.0, batch_size=64)


def net(digits, seed=0):
    torch.manual_seed(seed)
    return models.create("mlp", input_shape=digits.input_shape, width=48, depth=2)


def test_gmp_follows_the_cubic_schedule_to_exactly_the_budget(digits):
    model = net(digits)
    names = [n for n, p in model.named_parameters() if n.endswith("weight")]
    sizes = {n: dict(model.named_parameters())[n].numel() for n in names}
    total, final = sum(sizes.values()), 0.1
    budget = round(final * total)
    pruning = GradualPruning(names, budget, lambda p: 1 - (1 - final) * (1 - (1 - p) ** 3), interval=5, start=0.0,
                             end=0.75, scope="layer", what="gmp")
    seen = []

    class Counts(Callback):
        def on_step_end(self, state):
            seen.append((state.step, sum(int(state.masks[n].sum()) for n in names),
                         {n: int(state.masks[n].sum()) for n in names}))
            params = dict(state.model.named_parameters())
            assert all(bool((params[n].detach()[~state.masks[n]] == 0).all()) for n in names)

    dense = Masks({n: torch.ones(sizes[n], dtype=torch.bool).view(dict(model.named_parameters())[n].shape)
                   for n in names})
    train(model, digits, CFG, masks=dense, callbacks=[pruning, Counts()])
    steps = pruning.steps
    assert steps == list(range(5, 31, 5))  # 42 steps: every 5 up to 0.75 * 42 = 31.5
    kept = {t: k for t, k, _ in seen}
    for t in steps[:-1]:  # the cubic schedule at every pruning step, from t0 = 0 to t_end = 30
        want = round((1 - (1 - final) * (1 - (1 - t / 30) ** 3)) * total)
        assert kept[t] == want
    assert kept[steps[-1]] == budget and seen[-1][1] == budget
    counts = [k for _, k, _ in seen]
    assert all(a >= b for a, b in zip(counts, counts[1:]))  # masks only shrink
    layer = seen[-1][2]  # layer scope: every layer at the same density (integers summing to the budget)
    assert all(abs(layer[n] - final * sizes[n]) < 1 for n in names)


def test_gmp_method_scopes_start_state_and_seed(digits, flat):
    model = net(digits)
    init = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = Trainer(digits, CFG)
    m = prune(model, "gmp", 0.1, trainer=trainer, gmp_interval=5)
    assert m.report()["kept"] == round(0.1 * m.report()["total"]) and m.meta["method"] == "gmp"
    assert len({round(d, 2) for d in m.layer_density().values()}) == 1  # the same sparsity in each layer
    assert all(torch.equal(init[k], v) for k, v in model.state_dict().items())  # the caller's model untouched
    start = m.start_state
    assert not torch.equal(start["1.weight"], init["1.weight"])  # the weights at the end of the pruning
    assert bool((start["1.weight"][~m["1.weight"]] == 0).all())
    g = prune(model, "gmp", 0.1, trainer=trainer, gmp_interval=5, gmp_scope="global")
    assert g.report()["kept"] == m.report()["kept"] and len({round(d, 2) for d in g.layer_density().values()}) > 1
    again = prune(model, "gmp", 0.1, trainer=Trainer(digits, CFG), gmp_interval=5)
    assert torch.equal(flat(again), flat(m))


def test_gmp_settings_and_a_run(digits, tmp_path):
    with pytest.raises(SketchpruneError, match="gmp_start and gmp_end"):
        make_config({"method": "gmp", "gmp_start": 0.8, "gmp_end": 0.5})
    with pytest.raises(SketchpruneError, match="leaves no pruning step"):
        prune(net(digits), "gmp", 0.1, trainer=Trainer(digits, CFG))  # 42 steps, an interval of 100
    cfg = make_config({"model": "mlp", "dataset": "digits", "model_options": {"width": 32, "depth": 2},
                       "method": "gmp", "gmp_interval": 5, "density": 0.2, "train.epochs": 1,
                       "train.optimizer": "adam", "train.lr": 3e-3, "train.weight_decay": 0.0})
    r = run(cfg, tmp_path / "gmp", dataset=digits)
    assert r.kept == round(0.2 * r.total) and (tmp_path / "gmp" / "start.safetensors").exists()
    assert (tmp_path / "gmp" / "gmp" / "checkpoint.pt").exists()  # the pruning training, checkpointed
