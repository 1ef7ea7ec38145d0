"""Early-bird tickets (methods/early_bird.py): L1 on the batch-norm scales, the channel mask each epoch,
the search stops at the first epoch whose mask is within the threshold of the previous one, the
pruned network from prune_units' surgery at initialization, a killed search resumed, a run of it."""

import copy

import pytest
import torch

from sketchprune import SketchpruneError, methods, models, prune_units
from sketchprune.experiment import Trainer, make_config, run
from sketchprune.layers import WEIGHT_LAYERS
from sketchprune.methods import early_bird as eb
from sketchprune.methods.context import UnitContext
from sketchprune.train import TrainConfig

CFG = TrainConfig(epochs=8, optimizer="adam", lr=3e-3, weight_decay=0.0, batch_size=64)


def context(digits, keep=0.5, trainer=None, seed=0):
    import torch_pruning as tp

    torch.manual_seed(seed)
    net = models.create("conv", input_shape=digits.input_shape, width=16)
    example = torch.zeros((1, *digits.input_shape))
    graph = tp.DependencyGraph().build_dependency(net, example_inputs=example)
    last = [m for m in net.modules() if isinstance(m, WEIGHT_LAYERS)][-1]
    groups = list(graph.get_all_groups(ignored_layers=[last], root_module_types=WEIGHT_LAYERS))
    return UnitContext(methods.get("early_bird"), net, groups, None, torch.Generator(), None,
                       tuple(digits.input_shape), keep=keep, trainer=trainer or Trainer(digits, CFG))


def test_the_search_stops_when_the_mask_distance_falls_under_the_threshold(digits):
    ctx = context(digits)
    before = copy.deepcopy(ctx.net.state_dict())
    scores, found = eb.search(ctx, threshold=0.1)
    assert found.found is not None and found.found < CFG.epochs
    # the distances were at or above the threshold until the epoch it stopped, then below it
    assert all(d >= 0.1 for d in found.distances[:-1]) and found.distances[-1] < 0.1
    assert found.found == len(found.distances) + 1  # the first distance exists after epoch 2
    assert all(torch.equal(before[k], v) for k, v in ctx.net.state_dict().items())  # trained a copy
    mask = eb.channel_mask(scores, 0.5)
    assert torch.equal(mask, found.masks[-1])  # the scores are those of the stopping epoch
    never = eb.search(context(digits), threshold=0.0)[1]  # no distance is below 0: all epochs
    assert never.found is None and len(never.distances) == CFG.epochs - 1


def test_l1_shrinks_the_batch_norm_scales(digits):
    small = eb.search(context(digits), threshold=0.0, l1=0.05)[0]
    plain = eb.search(context(digits), threshold=0.0, l1=0.0)[0]
    assert sum(float(s.sum()) for s in small) < 0.8 * sum(float(s.sum()) for s in plain)


def test_a_killed_search_resumes_to_the_same_ticket(digits, tmp_path):
    whole = eb.search(context(digits, trainer=Trainer(digits, CFG, tmp_path / "a")))
    folder = tmp_path / "b"
    first = context(digits, trainer=Trainer(digits, CFG, folder))
    first.trainer = Trainer(digits, CFG, folder)
    import sketchprune.experiment as experiment

    real = experiment.train
    experiment_train = lambda *a, **kw: real(*a, **{**kw, "stop_after": 1})  # noqa: E731
    try:
        experiment.train = experiment_train
        killed = eb.search(first)[1]
    finally:
        experiment.train = real
    assert killed.found is None and len(killed.masks) == 1
    resumed = eb.search(context(digits, trainer=Trainer(digits, CFG, folder)))
    assert resumed[1].found == whole[1].found and resumed[1].distances == whole[1].distances
    assert all(torch.equal(a, b) for a, b in zip(resumed[0], whole[0]))


def test_prune_units_and_a_run(digits, tmp_path):
    torch.manual_seed(0)
    net = models.create("conv", input_shape=digits.input_shape, width=16)
    init = copy.deepcopy(net)
    small = prune_units(net, "early_bird", 0.5, trainer=Trainer(digits, CFG))
    assert {n: k for n, (k, t) in small.kept_units.items()} == {n: t // 2 for n, (k, t) in small.kept_units.items()}
    kept_bn = small.get_submodule("1")  # the pruned network is at initialization (BN scales all 1)
    assert torch.equal(kept_bn.weight, torch.ones_like(kept_bn.weight))
    assert torch.equal(init.state_dict()["0.weight"], net.state_dict()["0.weight"])  # the caller's model untouched
    with pytest.raises(SketchpruneError, match="early_bird trains the dense network"):
        prune_units(net, "early_bird", 0.5)
    mlp = models.create("mlp", input_shape=digits.input_shape, width=16)
    with pytest.raises(SketchpruneError, match="batch-norm scales"):
        prune_units(mlp, "early_bird", 0.5, trainer=Trainer(digits, CFG))
    cfg = make_config({"model": "conv", "model_options": {"width": 16}, "dataset": "digits", "method": "early_bird",
                       "structure": "units", "density": 0.5, "train.epochs": 3, "train.optimizer": "adam",
                       "train.lr": 3e-3, "train.weight_decay": 0.0})
    r = run(cfg, tmp_path / "run", dataset=digits)
    assert (tmp_path / "run" / "early-bird" / "checkpoint.pt").exists() and r.params_fraction < 0.5
