"""Dynamic sparse training (dst.py): the drop-and-grow rule against jaxpruner's SET and RigL and on
hand-made tensors, the schedule, the updaters in training (counts, exact zeros, signs, budgets, the
dense gradient of RigL), resume, determinism, and the one-line errors of bad settings."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sketchprune import SketchpruneError, dst, models, prune
from sketchprune.masks import Masks
from sketchprune.train import Callback, TrainConfig, train


# ---- jaxpruner's update, written plainly from sparse_trainers.py / mask_calculator.py (commit 14f97626) ----

def jax_topk(scores: np.ndarray, sparsity: np.float32) -> np.ndarray:
    """mask_calculator.topk_mask_calculator: keep round(size * (1 - sparsity)) (at least 1) of the
    highest scores; ties at the threshold keep the lower flat indices (a stable descending sort)."""
    if sparsity == 0:
        return np.ones(scores.shape, dtype=bool)
    flat = scores.reshape(-1)
    num_ones = max(1, int(np.round(np.float32(flat.size) * (np.float32(1) - sparsity))))
    topk_index = np.argsort(-flat, kind="stable")[num_ones - 1]
    threshold = flat[topk_index]
    by_value = scores >= threshold
    by_index = ((np.arange(flat.size) <= topk_index) | (flat != threshold)).reshape(scores.shape)
    return by_value & by_index


def jax_update(mask: np.ndarray, drop_score: np.ndarray, grow_score: np.ndarray, fraction: float,
               eps: float = 1e-5) -> np.ndarray:
    """SET._update_masks (RigL inherits it), in float32 as jax computes it."""
    density = np.float32(mask.sum()) / np.float32(mask.size)
    sparsity = np.float32(1) - density
    inter_sparsity = np.float32(1) - density * (np.float32(1) - np.float32(fraction))
    lowest = drop_score.min() - np.float32(eps)
    dropped = jax_topk(np.where(mask == 0, lowest, drop_score).astype(np.float32), inter_sparsity)
    highest = grow_score.max() + np.float32(eps)
    return jax_topk(np.where(dropped, highest, grow_score).astype(np.float32), sparsity)


def layers(seed: int):
    """Weights (zero where pruned, as in training), masks and a gradient of four layers."""
    g = torch.Generator().manual_seed(seed)
    shapes = {"a": (17, 23), "b": (40, 9), "c": (8, 3, 3, 3), "d": (101,)}
    weights, masks, grads = {}, {}, {}
    for i, (n, shape) in enumerate(shapes.items()):
        density = (0.05, 0.3, 0.6, 0.9)[i]
        m = torch.rand(shape, generator=g) < density
        weights[n] = torch.randn(shape, generator=g) * m
        masks[n] = m
        grads[n] = torch.randn(shape, generator=g)
    return weights, masks, grads


def _ours_round_equals_jaxpruners(kept: int, fraction: float) -> bool:
    return round(fraction * kept) == kept - round(kept * (1 - fraction))


@pytest.mark.parametrize("fraction", [0.1, 0.3, 0.55])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_drop_grow_is_jaxprunerss_rigl_and_set(fraction, seed):
    weights, masks, grads = layers(seed)
    assert all(_ours_round_equals_jaxpruners(int(m.sum()), fraction) for m in masks.values())
    rigl = dst.drop_grow(weights, Masks(masks), {n: g.abs() for n, g in grads.items()}, fraction)
    set_scores = {n: torch.rand(m.shape, generator=torch.Generator().manual_seed(seed + 9)) for n, m in masks.items()}
    set_ = dst.drop_grow(weights, Masks(masks), set_scores, fraction)
    for n, m in masks.items():
        w = weights[n].abs().numpy()
        want_rigl = jax_update(m.numpy(), w, grads[n].abs().numpy(), fraction)
        want_set = jax_update(m.numpy(), w, set_scores[n].numpy(), fraction)
        assert np.array_equal(rigl[n].numpy(), want_rigl), n
        assert np.array_equal(set_[n].numpy(), want_set), n
        assert int(rigl[n].sum()) == int(m.sum()) == int(set_[n].sum())
    moved = sum(int((rigl[n] & ~masks[n]).sum()) for n in masks)
    assert moved > 0  # the comparison is not between unchanged masks


def test_drop_grow_on_ties_is_jaxprunerss_too():
    # quantized weights and scores: many exact ties at both thresholds
    g = torch.Generator().manual_seed(3)
    m = torch.rand(30, 20, generator=g) < 0.4
    w = torch.randint(-3, 4, (30, 20), generator=g).float() * m
    s = torch.randint(0, 3, (30, 20), generator=g).float()
    got = dst.drop_grow({"w": w}, Masks({"w": m}), {"w": s}, 0.3)["w"]
    assert _ours_round_equals_jaxpruners(int(m.sum()), 0.3)
    assert np.array_equal(got.numpy(), jax_update(m.numpy(), w.abs().numpy(), s.numpy(), 0.3))


def test_the_rule_by_hand_every_case():
    w = torch.tensor([0.5, -0.1, 0.0, 0.1, 2.0, 0.0, 0.0, 0.0])
    m = torch.tensor([1, 1, 0, 1, 1, 0, 0, 0], dtype=torch.bool)
    s = torch.tensor([0.0, 9.0, 1.0, 5.0, 0.0, 1.0, 3.0, 1.0])

    def update(fraction, mask=m, scores=s):
        return dst.drop_grow({"w": w}, Masks({"w": mask}), {"w": scores}, fraction)["w"].int().tolist()

    # 4 kept, |w| = .5 .1 .1 2 at indices 0 1 3 4. Fraction 0.5 drops 2: the two 0.1s (indices 1, 3);
    # the largest scores among {1, 2, 3, 5, 6, 7} are 9 and 5, at 1 and 3: both just dropped, both grown back
    assert update(0.5) == [1, 1, 0, 1, 1, 0, 0, 0]
    # 0.25 drops 1: of the tie at 0.1 the lower index (1) survives, index 3 is dropped; grown: the largest
    # score among {2, 3, 5, 6, 7} is 5 at index 3 (just dropped, grown back)
    assert update(0.25) == [1, 1, 0, 1, 1, 0, 0, 0]
    no_regrow = s.clone()
    no_regrow[3] = 0.0
    # ... unless its score is low: then the largest among {2, 5, 6, 7} is 3 at index 6
    assert update(0.25, scores=no_regrow) == [1, 1, 0, 0, 1, 0, 1, 0]
    # ties among the grow candidates: scores 1 at indices 2, 5, 7 -> the lower index (2) grows
    flat = torch.tensor([0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 1.0])
    assert update(0.25, scores=flat) == [1, 1, 1, 0, 1, 0, 0, 0]
    # fraction 0: nothing moves (fraction 1: the next test)
    assert update(0.0) == m.int().tolist()
    # a layer with nothing to drop: one kept weight, round(0.3 * 1) = 0
    one = torch.tensor([0, 0, 0, 0, 1, 0, 0, 0], dtype=torch.bool)
    assert update(0.3, mask=one) == one.int().tolist()


def test_fraction_one_grows_the_best_of_all():
    w = torch.tensor([0.5, -0.1, 0.0, 0.1, 2.0, 0.0, 0.0, 0.0])
    m = torch.tensor([1, 1, 0, 1, 1, 0, 0, 0], dtype=torch.bool)
    s = torch.tensor([0.0, 9.0, 1.0, 5.0, 0.0, 1.0, 3.0, 1.0])
    got = dst.drop_grow({"w": w}, Masks({"w": m}), {"w": s}, 1.0)["w"]
    assert got.int().tolist() == [0, 1, 1, 1, 0, 0, 1, 0]  # 9, 5, 3 and of the 1s the lowest index (2)


def test_drop_grow_leaves_its_inputs_and_keeps_counts():
    weights, masks, grads = layers(5)
    before = [copy.deepcopy(x) for x in (weights, masks, grads)]
    out = dst.drop_grow(weights, Masks(masks), grads, 0.4)
    for x, y in zip((weights, masks, grads), before):
        assert all(torch.equal(x[n], y[n]) for n in x)
    assert out.counts() == Masks(masks).counts() and isinstance(out, Masks)
    for bad in (-0.1, 1.5, float("nan"), True):
        with pytest.raises(SketchpruneError, match="fraction must be a number in"):
            dst.drop_grow(weights, Masks(masks), grads, bad)
    with pytest.raises(SketchpruneError, match="grow scores"):
        dst.drop_grow(weights, Masks(masks), {"a": grads["a"]}, 0.3)
    with pytest.raises(SketchpruneError, match="NaN"):
        dst.drop_grow(weights, Masks(masks), {**grads, "b": grads["b"] * float("nan")}, 0.3)


# ---- the schedule ---------------------------------------------------------------------------------

def test_schedule_update_steps_and_cosine_decay():
    s = dst.Schedule(1000, interval=100, start=0.0, end=0.75, fraction=0.3, decay="cosine")
    assert list(s.steps()) == [100, 200, 300, 400, 500, 600, 700]
    assert [t for t in range(1001) if s.is_update(t)] == list(s.steps())
    assert s.fraction_at(100) == pytest.approx(0.15 * (1 + math.cos(math.pi * 100 / 750)))
    assert s.fraction_at(750) == pytest.approx(0.0, abs=1e-12)
    late = dst.Schedule(1000, interval=100, start=0.25, end=0.5, fraction=0.2, decay="constant")
    assert list(late.steps()) == [300, 400, 500] and late.fraction_at(400) == 0.2
    with pytest.raises(SketchpruneError, match="longer than the updates' window"):
        dst.Schedule(100, interval=200)
    with pytest.raises(SketchpruneError, match="longer than the updates' window"):
        dst.Schedule(1000, interval=100, start=0.51, end=0.59)  # no multiple of 100 in [510, 590]
    for kw, msg in [({"interval": 0}, "dst_interval must be an integer"), ({"fraction": 1.2}, "dst_fraction"),
                    ({"fraction": -0.1}, "dst_fraction"), ({"start": 0.8}, "dst_start and dst_end"),
                    ({"decay": "linear"}, "unknown dst_schedule")]:
        with pytest.raises(SketchpruneError, match=msg):
            dst.Schedule(1000, **kw)


# ---- the updaters in training ---------------------------------------------------------------------------

TRAIN = TrainConfig(epochs=2, optimizer="adam", lr=3e-3, weight_decay=0.0, batch_size=64)


def start(digits, density=0.1, seed=0, method="magnitude"):
    torch.manual_seed(seed)
    net = models.create("mlp", input_shape=digits.input_shape, width=48, depth=2)
    return net, prune(net, method, density)


class Watch(Callback):
    """Checks at every step end (after the updater): pruned weights exactly zero; records counts and signs."""

    def __init__(self) -> None:
        self.counts: list[dict[str, int]] = []
        self.sign_flips = 0
        self.signs: dict[str, torch.Tensor] = {}

    def on_step_end(self, state) -> None:
        params = dict(state.model.named_parameters())
        counts = {}
        for n, m in state.masks.items():
            p = params[n].detach()
            assert bool((p[~m.to(p.device)] == 0).all()), f"a pruned weight of {n} is not exactly zero"
            counts[n] = int(m.sum())
            s = torch.sign(p)
            held = self.signs.setdefault(n, torch.zeros_like(s))
            self.sign_flips += int(((held * s) < 0).sum())
            self.signs[n] = torch.where(s != 0, s, held)
        self.counts.append(counts)


def trained(digits, name, *, interval=5, seed=0, cfg=TRAIN, out=None, stop_after=None, density=0.1, **kw):
    net, masks = start(digits, density)
    up = dst.updater(name, interval=interval, seed=seed, **kw)
    watch = Watch()
    result = train(net, digits, cfg, masks=masks, callbacks=[up, watch], out=out, stop_after=stop_after, seed=seed)
    return up, watch, result, masks


@pytest.mark.parametrize("name", ["set", "rigl", "dns"])
def test_set_rigl_dns_keep_each_layers_count_and_exact_zeros(digits, name):
    up, watch, _, masks = trained(digits, name)
    want = {n: k for n, (k, _) in masks.counts().items()}
    assert all(c == want for c in watch.counts)
    s = up.summary()
    assert s["updates"] == len(list(up.schedule.steps())) > 3 and s["kept_final"] == sum(want.values())
    if name != "dns":  # dns moves only what its thresholds move (with Adam's small steps: maybe nothing)
        assert s["grown"] > 0 and any(v > 0 for v in s["changed"].values())
        assert 0 < s["grown_then_dropped"] <= s["grown"]


def test_dsr_conserves_the_global_count_while_moving_weights_between_layers(digits):
    up, watch, _, masks = trained(digits, "dsr")
    total = sum(k for k, _ in masks.counts().values())
    assert all(sum(c.values()) == total for c in watch.counts)
    assert any(c != watch.counts[0] for c in watch.counts)  # the layers' shares moved
    start_density = masks.layer_density()
    assert any(abs(up.summary()["layer_density_final"][n] - d) > 1e-3 for n, d in start_density.items())


def test_deepr_never_flips_a_sign_and_keeps_the_global_count(digits):
    cfg = TrainConfig(epochs=2, optimizer="sgd", lr=0.2, momentum=0.9, weight_decay=0.0, batch_size=64)
    up, watch, _, masks = trained(digits, "deepr", interval=3, cfg=cfg, density=0.3, deepr_l1=0.05,
                                  deepr_temperature=1e-6)
    total = sum(k for k, _ in masks.counts().values())
    assert all(sum(c.values()) == total for c in watch.counts)
    assert up.summary()["grown"] > 0  # connections crossed zero, went dormant and others woke up
    assert watch.sign_flips == 0


def test_dns_splices_weights_back_with_their_shadow_values(digits):
    cfg = TrainConfig(epochs=2, optimizer="sgd", lr=0.2, momentum=0.9, weight_decay=0.0, batch_size=64)
    seen = {}

    class Spy(Callback):
        def on_step_end(self, state):
            if up.schedule.is_update(state.step) and "m" in seen:
                params = dict(state.model.named_parameters())
                for n, m in state.masks.items():
                    back = m & ~seen["m"][n]
                    if bool(back.any()):  # spliced: its value is the shadow value, not zero
                        assert bool((params[n].detach()[back] != 0).all())
                        seen["spliced"] = True
            seen["m"] = {n: m.clone() for n, m in state.masks.items()}

    net, masks = start(digits, 0.1)
    up = dst.updater("dns", interval=5, dns_margin=1.0)
    train(net, digits, cfg, masks=masks, callbacks=[up, Spy(), Watch()])
    assert seen.get("spliced") and up.summary()["grown"] > 0
    assert Masks(up.final_masks).counts() == masks.counts()  # the budget held, layer by layer


def test_rigl_grows_by_the_dense_gradient_of_the_update_step(digits):
    """At an update step: the grown weights are drop_grow's with |dL/dw| of the step's batch at the
    weights before the step (computed here by hand on a copy), the weights after the step dropped by |w|."""
    net, masks = start(digits, 0.1)
    up = dst.updater("rigl", interval=7, fraction=0.3, schedule="constant")
    checked = []

    class Reference(Callback):
        def on_step_start(self, state):
            if up.schedule.is_update(state.step + 1):
                work = copy.deepcopy(state.model)  # masked as the original is (pruned weights zero)
                x, y = state.batch
                loss = F.cross_entropy(work(x), y)
                names = list(state.masks)
                params = dict(work.named_parameters())
                grads = torch.autograd.grad(loss, [params[n] for n in names])
                self.grads = {n: g.abs() for n, g in zip(names, grads)}
                self.before = {n: m.clone() for n, m in state.masks.items()}

        def on_step_end(self, state):
            if up.schedule.is_update(state.step):
                assert hasattr(self, "grads")
                w = {n: p.detach() for n, p in state.model.named_parameters() if n in self.before}
                want = dst.drop_grow(w, Masks(self.before), self.grads, 0.3)
                assert all(torch.equal(want[n], state.masks[n]) for n in want)
                checked.append(state.step)
                assert up._hooks == []  # the gradient hooks lived for that step only

    train(net, digits, TRAIN, masks=masks, callbacks=[up, Reference()])  # the reference sees the updater's masks
    assert checked == list(up.schedule.steps())


@pytest.mark.parametrize("name", ["set", "rigl", "dsr", "deepr", "dns"])
def test_a_killed_run_resumes_to_the_same_final_mask_and_accuracy(digits, tmp_path, name):
    cfg = TrainConfig(epochs=2, optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=0.0, batch_size=64)
    whole, _, full, _ = trained(digits, name, cfg=cfg, out=tmp_path / "whole")
    killed, _, first, _ = trained(digits, name, cfg=cfg, out=tmp_path / "killed", stop_after=1)
    assert first["epochs_done"] == 1 and killed.updates < whole.updates
    resumed, _, rest, _ = trained(digits, name, cfg=cfg, out=tmp_path / "killed")  # a new process would do this
    assert rest["epochs_done"] == 2 and rest["final_test_acc"] == full["final_test_acc"]
    assert all(torch.equal(whole.final_masks[n], resumed.final_masks[n]) for n in whole.final_masks)
    assert resumed.summary() == whole.summary()


def test_same_seed_same_final_mask_another_seed_another(digits):
    a, b, c = (trained(digits, "set", seed=s)[0] for s in (4, 4, 5))
    assert all(torch.equal(a.final_masks[n], b.final_masks[n]) for n in a.final_masks)
    assert any(not torch.equal(a.final_masks[n], c.final_masks[n]) for n in a.final_masks)


def test_a_grown_weight_starts_at_zero_and_a_regrown_one_keeps_its_value(digits):
    """One update by hand: weight i is dropped, j (pruned) grown, k dropped and grown back."""
    net, masks = start(digits, 0.2)
    name = next(iter(masks))
    flat = masks[name].reshape(-1)
    kept, free = torch.nonzero(flat).squeeze(1), torch.nonzero(~flat).squeeze(1)
    i, k, j = int(kept[0]), int(kept[1]), int(free[0])

    class ByHand(dst.Updater):
        method = "byhand"

        def propose(self, state, fraction):
            new = self.current(state)
            m = new[name].reshape(-1).clone()
            m[i], m[j] = False, True  # k: kept in both (a drop and a regrowth of the same weight)
            return {**new, name: m.view(new[name].shape)}

    seen = {}

    class Before(Callback):
        def on_step_end(self, state):
            if state.step == 4:
                p = dict(state.model.named_parameters())[name]
                seen["k"] = float(p.detach().reshape(-1)[k])

    class After(Callback):
        def on_step_end(self, state):
            if state.step == 5:
                p = dict(state.model.named_parameters())[name]
                st = state.optimizer.state[p]
                seen.update(i=float(p.detach().reshape(-1)[i]), j=float(p.detach().reshape(-1)[j]),
                            k_after=float(p.detach().reshape(-1)[k]),
                            moments=[float(st[s].reshape(-1)[j]) for s in ("exp_avg", "exp_avg_sq")])

    up = ByHand(dst.UpdaterSettings(interval=5, end=0.1))
    train(net, digits, TrainConfig(epochs=1, optimizer="adam", lr=1e-2, weight_decay=0.0, batch_size=16),
          masks=masks, callbacks=[Before(), up, After()])
    assert seen["i"] == 0.0 and seen["j"] == 0.0 and seen["moments"] == [0.0, 0.0]
    assert seen["k_after"] != 0.0  # k kept its trained value through the update (step 5's own step changed it)
    assert up.summary()["grown"] == 1


# ---- runs, settings, sweeps ------------------------------------------------------------------------

RUN = {"model": "mlp", "dataset": "digits", "model_options": {"width": 32, "depth": 2}, "density": 0.1,
       "train.epochs": 2, "train.optimizer": "adam", "train.lr": 3e-3, "train.weight_decay": 0.0,
       "train.batch_size": 64}


def test_a_run_keeps_the_start_and_final_masks_and_records_the_updates(digits, tmp_path):
    from sketchprune.experiment import make_config, run
    from sketchprune.results import load_result

    r = run(make_config({**RUN, "method": "snip", "dst": "rigl", "dst_interval": 10}), tmp_path / "rigl",
            dataset=digits)
    folder = tmp_path / "rigl"
    start, final = Masks.load(folder / "masks.safetensors"), Masks.load(folder / "masks-final.safetensors")
    assert start.counts() == final.counts() and any(not torch.equal(start[n], final[n]) for n in start)
    assert r.dst["method"] == "rigl" and r.dst["updates"] == 3 and r.dst["kept_final"] == r.kept  # steps 10, 20, 30
    assert r.dst["changed"] == {n: pytest.approx(1 - int((start[n] & final[n]).sum()) / int(start[n].sum()))
                                for n in start}
    assert load_result(folder / "result.json").dst == r.dst
    static = run(make_config({**RUN, "method": "snip"}), tmp_path / "static", dataset=digits)
    assert static.dst is None and not (tmp_path / "static" / "masks-final.safetensors").exists()
    assert "dst" not in json.loads((tmp_path / "static" / "result.json").read_text())  # as before dst existed


def test_dst_settings_hash_only_when_not_the_default():
    from sketchprune.config import config_hash
    from sketchprune.experiment import RunConfig, make_config

    assert config_hash(make_config({"dst": "static"})) == config_hash(RunConfig())
    rigl = make_config({"dst": "rigl"})
    assert config_hash(rigl) != config_hash(RunConfig())
    assert config_hash(make_config({"dst": "rigl", "dst_interval": 100, "dst_fraction": 0.3})) == config_hash(rigl)
    deepr = make_config({"dst": "deepr", "deepr_l1": 1e-5, "dst_options": {"deepr_temperature": 1e-9}})
    assert deepr.dst_options == {} and config_hash(deepr) == config_hash(make_config({"dst": "deepr"}))
    assert make_config({"dst": "deepr", "deepr_l1": 0.01}).dst_options == {"deepr_l1": 0.01}


@pytest.mark.parametrize("values, message", [
    ({"dst": "rigl", "density": 1.0}, "a dense run"),
    ({"dst": "set", "dst_fraction": 1.5}, r"dst_fraction must be in \[0, 1\]"),
    ({"dst": "set", "dst_fraction": -0.1}, r"dst_fraction must be in \[0, 1\]"),
    ({"dst": "rigl", "dst_interval": 0}, "dst_interval must be an integer >= 1"),
    ({"dst": "rigl", "dst_start": 0.8, "dst_end": 0.5}, "dst_start and dst_end"),
    ({"dst_interval": 50}, "dst_interval applies to a mask that moves"),
    ({"dst": "dns", "dst_fraction": 0.2}, "does not apply to dst=dns"),
    ({"dst": "rigl", "deepr_l1": 0.1}, "applies to dst=deepr, not dst=rigl"),
    ({"dst": "rigl", "dst_options": {"colour": 1}}, "unknown dst option 'colour'"),
    ({"dst": "rigl", "structure": "units", "method": "l1"}, "structure=units has none"),
    ({"method": "rigl"}, "dynamic sparse training method.*dst='rigl'"),
    ({"dst": "best"}, "unknown dst 'best'"),
])
def test_bad_settings_are_one_line_errors_when_the_config_is_made(values, message):
    from sketchprune.experiment import make_config

    with pytest.raises(SketchpruneError, match=message) as e:
        make_config(values)
    assert "\n" not in str(e.value)


def test_an_interval_longer_than_training_fails_before_pruning(digits, tmp_path):
    from sketchprune.experiment import make_config, run

    with pytest.raises(SketchpruneError, match="dst_interval=500 is longer than the updates' window: training has 42"):
        run(make_config({**RUN, "dst": "set", "dst_interval": 500}), tmp_path / "r", dataset=digits)
    assert not (tmp_path / "r" / "masks.safetensors").exists()


def test_prune_refuses_an_updater_with_the_way_to_use_it(tiny_mlp):
    with pytest.raises(SketchpruneError, match=r"use dst='set' with a starting mask"):
        prune(tiny_mlp(), "set", 0.5)
    with pytest.raises(SketchpruneError, match="unknown dst"):
        dst.updater("snip")
    assert dst.updater("static") is None and dst.names() == ["static", "set", "rigl", "dsr", "deepr", "dns"]


def test_the_fraction_applies_to_the_updaters_that_move_by_it():
    """uses_fraction reads each updater's class: set / rigl / dsr move dst_fraction of the mask,
    deepr and dns by their own rule, so a sweep leaves the fraction and its decay out of their runs."""
    assert {n: dst.uses_fraction(n) for n in dst.names()} == {
        "static": True, "set": True, "rigl": True, "dsr": True, "deepr": False, "dns": False}
    assert dst.unused_settings("deepr") == ("dst_fraction", "dst_schedule") and dst.unused_settings("rigl") == ()
    assert len(dst.unused_settings("static")) == 5


def test_dst_is_a_sweep_axis_and_its_settings_go_to_the_runs_that_take_them():
    from sketchprune.sweep import from_spec

    sweep = from_spec({"fixed": {**RUN, "dst_interval": 10, "deepr_l1": 0.001},
                       "grid": {"dst": ["static", "set", "rigl", "deepr"], "method": ["snip", "magnitude"]}})
    by = {(c.method, c.dst): c for c in sweep.runs}
    assert len(by) == 8 and by[("snip", "static")].dst_interval == 100  # a static run takes no schedule
    assert by[("snip", "set")].dst_interval == 10 and by[("snip", "set")].dst_options == {}
    assert by[("snip", "deepr")].dst_options == {"deepr_l1": 0.001}
    with pytest.raises(SketchpruneError, match="no run of this sweep uses"):
        from_spec({"fixed": {**RUN, "deepr_l1": 0.001}, "grid": {"dst": ["static", "rigl"]}})


def test_train_command_takes_dst(tmp_path, capsys):
    from sketchprune.cli import main

    code = main(["train", "--model", "mlp", "--model-options", "width=32,depth=2", "--dataset", "digits",
                 "--method", "snip", "--density", "0.1", "--dst", "rigl", "--dst-interval", "4", "--epochs", "1",
                 "--optimizer", "adam", "--lr", "0.003", "--weight-decay", "0", "--out", str(tmp_path / "t"),
                 "--json"])
    assert code == 0
    assert (tmp_path / "t" / "masks-final.safetensors").exists()


def test_the_report_pairs_a_moving_mask_with_the_same_mask_kept_static():
    from sketchprune.report import paired_differences, run_labels, summarize
    from sketchprune.results import Result

    results = []
    for i, (dst_, mode, seed) in enumerate((d, m, s) for d in ("static", "set", "rigl") for m in ("topk", "sample")
                                           for s in (0, 1, 2)):
        acc = 0.5 + {"static": 0.0, "set": 0.01, "rigl": 0.05}[dst_] + 0.001 * seed + (0.02 if mode == "sample" else 0)
        config = {"model": "mlp", "dataset": "digits", "method": "snip", "mode": mode, "density": 0.1, "seed": seed}
        if dst_ != "static":
            config.update(dst=dst_, dst_interval=50)
        results.append(Result(config=config, hash=f"h{i:02d}", compression=10.0, final_test_acc=acc,
                              best_test_acc=acc, final_train_loss=1.0, kept=10, total=100, density_actual=0.1,
                              collapsed=[], layer_density={"0.weight": 0.1}, prune_seconds=0.1, wall_seconds=1.0))
    labels = run_labels(results)
    assert {labels[r.hash] for r in results} == {"snip", "snip +set", "snip +rigl"}
    rows = {(r["method"], r["versus"]): r for r in paired_differences(results)}
    assert rows[("snip +rigl", "rigl - static (topk)")]["diff"] == pytest.approx(0.05)
    assert rows[("snip +set", "set - static (sample)")]["diff"] == pytest.approx(0.01)
    assert rows[("snip +rigl", "sample - topk")]["diff"] == pytest.approx(0.02)  # modes compared within rigl too
    assert rows[("snip +rigl", "rigl - static (topk)")]["verdict"] == 1 and rows[("snip", "sample - topk")]["pairs"] == 3
    assert len(summarize(results)) == 6


def test_allocate_splits_in_proportion_capped_and_exact():
    assert dst.allocate(10, [1, 1, 2], [10, 10, 10]) == [3, 2, 5]  # 2.5, 2.5, 5: the tie to the earlier entry
    assert dst.allocate(10, [1, 1, 8], [10, 10, 2]) == [4, 4, 2]  # the capped share's excess goes to the others
    assert dst.allocate(7, [0, 0], [5, 5]) == [4, 3]  # no weights: evenly
    assert dst.allocate(20, [1, 1], [3, 4]) == [3, 4]  # more than all caps: every cap filled
    for total in range(0, 30):
        got = dst.allocate(total, [5, 0, 3, 9], [4, 6, 8, 5])
        assert sum(got) == min(total, 23) and all(0 <= g <= c for g, c in zip(got, [4, 6, 8, 5]))
