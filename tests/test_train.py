"""Training (train.py): real learning on digits, exact zeros, bit-identical resume, events and callbacks (masks
swapped mid-epoch, callback state across a kill)."""

import json

import pytest
import torch

from sketchprune import Masks, SketchpruneError, models, prune, select
from sketchprune.train import Callback, TrainConfig, augment, train


def test_training_beats_chance_on_digits(digits):
    torch.manual_seed(0)
    model = models.create("mlp", input_shape=digits.input_shape, width=64)
    res = train(model, digits, TrainConfig(epochs=8, optimizer="adam", lr=3e-3, weight_decay=0, batch_size=64))
    losses = [h["train_loss"] for h in res["history"]]
    assert losses[-1] < 0.5 * losses[0]
    assert res["final_test_acc"] > 0.85  # chance is 0.1


@pytest.mark.parametrize("cfg", [TrainConfig(epochs=5, optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=5e-3),
                                 TrainConfig(epochs=5, optimizer="adamw", lr=1e-2, weight_decay=0.1)],
                         ids=["sgd-momentum-wd", "adamw"])
def test_pruned_weights_exactly_zero_after_training(digits, cfg):
    torch.manual_seed(1)
    model = models.create("conv", input_shape=digits.input_shape, width=8)
    masks = prune(model, "snip", 0.2, data=[(digits.train_x[:64], digits.train_y[:64])])
    res = train(model, digits, cfg, masks=masks)
    params = dict(model.named_parameters())
    for n, m in masks.items():
        assert bool((params[n][~m] == 0).all())
    assert res["final_test_acc"] > 0.15  # learns although pruned (chance 0.1)


def test_resume_gives_identical_weights(digits, tmp_path):
    cfg = TrainConfig(epochs=4, optimizer="sgd", lr=0.05, batch_size=128)

    def fresh():
        torch.manual_seed(5)
        return models.create("mlp", input_shape=digits.input_shape, width=32)

    full = fresh()
    train(full, digits, cfg, out=tmp_path / "full", seed=3)
    part = fresh()
    first = train(part, digits, cfg, out=tmp_path / "part", stop_after=2, seed=3)
    assert first["epochs_done"] == 2
    resumed = fresh()  # a new process would rebuild the model from scratch, then resume
    res = train(resumed, digits, cfg, out=tmp_path / "part", seed=3)
    assert res["epochs_done"] == 4
    for (n, a), (_, b) in zip(full.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), n
    lines = (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2, 3, 4]


def test_checkpoint_from_another_config_is_an_error(digits, tmp_path):
    model = models.create("mlp", input_shape=digits.input_shape, width=16)
    train(model, digits, TrainConfig(epochs=1, lr=0.01), out=tmp_path)
    with pytest.raises(SketchpruneError, match="another training config"):
        train(model, digits, TrainConfig(epochs=2, lr=0.02), out=tmp_path)


def test_augment_crops_a_window_of_the_padded_image_and_may_flip_it():
    pad, n = 2, 200
    x = torch.arange(1, n * 3 * 6 * 5 + 1, dtype=torch.float32).view(n, 3, 6, 5)  # distinct, nonzero values
    y = augment(x, torch.Generator().manual_seed(0), pad=pad)
    assert y.shape == x.shape
    seen = set()
    for i in range(n):
        padded = torch.zeros(3, 6 + 2 * pad, 5 + 2 * pad)
        padded[:, pad:pad + 6, pad:pad + 5] = x[i]
        windows = {(dy, dx): padded[:, dy:dy + 6, dx:dx + 5] for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)}
        found = [(dy, dx, flip) for (dy, dx), w in windows.items() for flip in (False, True)
                 if torch.equal(y[i], w.flip(2) if flip else w)]
        assert len(found) == 1, i  # exactly one window of the padded image, flipped or not
        seen.add(found[0])
    assert {dy for dy, _, _ in seen} == {dx for _, dx, _ in seen} == set(range(2 * pad + 1))  # every shift drawn
    assert {flip for _, _, flip in seen} == {False, True}


def test_a_checkpoint_without_callbacks_keeps_its_keys(digits, tmp_path):
    model = models.create("mlp", input_shape=digits.input_shape, width=16)
    train(model, digits, TrainConfig(epochs=1, lr=0.01), out=tmp_path)
    saved = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert set(saved) == {"config_hash", "epoch", "model", "optimizer", "generator", "history"}  # resumable as before


def sample_masks(model, density, generator):
    scores = {n: torch.rand(p.shape, generator=generator) for n, p in model.named_parameters() if n.endswith("weight")}
    return Masks(select(scores, density))


class Recorder(Callback):
    """Records the events it sees (on_step_start is left to the base class: never dispatched)."""

    def __init__(self):
        self.events = []

    def on_start(self, state):
        self.events.append(("start", state.epoch, state.step))

    def on_step_end(self, state):
        self.events.append(("step", state.epoch, state.step))

    def on_epoch_end(self, state):
        self.events.append(("epoch", state.epoch, len(state.history)))

    def on_end(self, state):
        self.events.append(("end", state.epoch, state.step))


def test_events_come_in_order_and_end_is_raised_on_an_error(digits, tmp_path):
    model = models.create("mlp", input_shape=digits.input_shape, width=16)
    spe = -(-len(digits.train_y) // 512)
    rec = Recorder()
    train(model, digits, TrainConfig(epochs=2, lr=0.01, batch_size=512), callbacks=[rec])
    want = [("start", 0, 0)] + [("step", 0, k) for k in range(1, spe + 1)] + [("epoch", 0, 1)]
    want += [("step", 1, k) for k in range(spe + 1, 2 * spe + 1)] + [("epoch", 1, 2), ("end", 1, 2 * spe)]
    assert rec.events == want

    class Dies(Callback):
        def on_step_end(self, state):
            if state.step == 2:
                raise KeyboardInterrupt

    rec = Recorder()
    with pytest.raises(KeyboardInterrupt):
        train(model, digits, TrainConfig(epochs=2, lr=0.01, batch_size=512), callbacks=[rec, Dies()])
    assert rec.events[-1] == ("end", 0, 2)


class SwapMasks(Callback):
    """After step 3 of epoch 1 trains with ``new`` in place of the run's masks, and checks the new
    masks' zeros, in the weights and in the optimizer's state, after every later step."""

    def __init__(self, new):
        self.new, self.checked, self.state_before = new, 0, None

    def pruned(self, state):
        params = dict(state.model.named_parameters())
        return {n: (params[n], ~m) for n, m in self.new.items()}

    def on_step_end(self, state):
        if state.step == state.steps_per_epoch + 3:
            old = state.masks
            self.state_before = {n: {k: v.clone() for k, v in state.optimizer.state[p].items()}
                                 for n, (p, _) in self.pruned(state).items()}
            self.newly_pruned = {n: old[n] & ~m for n, m in self.new.items()}
            self.revived = {n: ~old[n] & m for n, m in self.new.items()}
            state.set_masks(self.new)
            assert state.masks is self.new
            self.got_grad = {n: torch.zeros(m.shape, dtype=torch.bool) for n, m in self.new.items()}
            for n, (p, off) in self.pruned(state).items():
                for k, v in state.optimizer.state[p].items():
                    if v.shape == p.shape:
                        assert bool((v[off] == 0).all()), (n, k)  # zeroed where newly pruned
                        assert torch.equal(v[~off], self.state_before[n][k][~off]), (n, k)  # kept as it was
                assert bool((p[off] == 0).all()), n
        elif state.step > state.steps_per_epoch + 3:
            for n, (p, off) in self.pruned(state).items():
                assert bool((p[off] == 0).all()), (n, state.step)
                self.got_grad[n] |= p.grad != 0
                for k, v in state.optimizer.state[p].items():
                    if v.shape == p.shape:
                        assert bool((v[off] == 0).all()), (n, k, state.step)
            self.checked += 1


@pytest.mark.parametrize("cfg", [TrainConfig(epochs=3, optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=5e-3),
                                 TrainConfig(epochs=3, optimizer="adam", lr=3e-3, weight_decay=1e-3)],
                         ids=["sgd-momentum-wd", "adam"])
def test_a_callback_swaps_the_masks_mid_epoch_and_the_loop_enforces_them(digits, cfg):
    torch.manual_seed(0)
    model = models.create("mlp", input_shape=digits.input_shape, width=32)
    gen = torch.Generator().manual_seed(0)
    first, second = sample_masks(model, 0.3, gen), sample_masks(model, 0.3, gen)
    swap = SwapMasks(second)
    train(model, digits, cfg, masks=first, callbacks=[swap])
    spe = -(-len(digits.train_y) // cfg.batch_size)
    assert swap.checked == 3 * spe - (spe + 3)  # every step after the swap was checked
    moments = ("momentum_buffer",) if cfg.optimizer == "sgd" else ("exp_avg", "exp_avg_sq")
    for n in second:
        assert bool(swap.newly_pruned[n].any()) and bool(swap.revived[n].any())
        for k in moments:  # the state that was reset had history there: the reset is seen
            assert bool((swap.state_before[n][k][swap.newly_pruned[n]] != 0).any()), (n, k)
    params = dict(model.named_parameters())
    for n, m in second.items():
        assert bool((params[n][~m] == 0).all())
        revived, got = swap.revived[n], swap.got_grad[n]  # revived weights were zero at the swap and train again:
        assert torch.equal(params[n][revived] != 0, got[revived]), n  # moved where they had a gradient (dead units
        assert float(got[revived].float().mean()) > 0.5, n  # and blank pixels give some none)
    assert not hasattr(params["1.weight"], "_sketchprune_masks")  # train took its masks back


class RandomMasks(Callback):
    """Every 5 steps trains with fresh random masks drawn from its own generator; counts its steps."""

    name = "random-masks"

    def __init__(self, model):
        self.shapes = {n: p.shape for n, p in model.named_parameters() if n.endswith("weight")}
        self.gen = torch.Generator().manual_seed(7)
        self.count = 0
        self.final = None

    def on_step_end(self, state):
        self.count += 1
        if self.count % 5 == 0:
            scores = {n: torch.rand(s, generator=self.gen) for n, s in self.shapes.items()}
            state.set_masks(select(scores, 0.4))

    def on_end(self, state):
        self.final = state.masks

    def state_dict(self):
        return {"count": self.count, "gen": self.gen.get_state()}

    def load_state_dict(self, state):
        self.count = state["count"]
        self.gen.set_state(state["gen"])


@pytest.mark.parametrize("start", [None, 0.3], ids=["from-dense", "from-masks"])
def test_a_killed_run_resumes_with_its_callbacks_state(digits, tmp_path, start):
    # from masks: a resumed run must keep the trained values of the weights that the callback's
    # masks keep and the starting masks pruned (train applies its masks before it resumes)
    cfg = TrainConfig(epochs=3, optimizer="adam", lr=3e-3, weight_decay=0, batch_size=128)

    def fresh():
        torch.manual_seed(5)
        return models.create("mlp", input_shape=digits.input_shape, width=32)

    def train_(model, out, callback, **kw):
        masks = sample_masks(model, start, torch.Generator().manual_seed(1)) if start else None
        return train(model, digits, cfg, masks=masks, out=tmp_path / out, seed=3, callbacks=[callback], **kw)

    full = fresh()
    cb_full = RandomMasks(full)
    train_(full, "full", cb_full)
    part = fresh()
    train_(part, "part", RandomMasks(part), stop_after=1)
    saved = torch.load(tmp_path / "part" / "checkpoint.pt", weights_only=True)
    assert saved["callbacks"]["random-masks"]["count"] == 11 and set(saved["masks"]) == set(cb_full.shapes)
    resumed = fresh()  # a new process: a new model and a new callback, both restored from the checkpoint
    cb = RandomMasks(resumed)
    res = train_(resumed, "part", cb)
    assert res["epochs_done"] == 3 and cb.count == cb_full.count == 33
    assert torch.equal(cb.gen.get_state(), cb_full.gen.get_state())
    assert all(torch.equal(cb.final[n], cb_full.final[n]) for n in cb_full.final)
    for (n, a), (_, b) in zip(full.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), n

    class Forgets(RandomMasks):  # the same callback without its state restored: another run
        def load_state_dict(self, state):
            pass

    train_(fresh(), "forgets", RandomMasks(part), stop_after=1)
    forgot = fresh()
    train_(forgot, "forgets", Forgets(forgot))
    assert not torch.equal(forgot.state_dict()["1.weight"], full.state_dict()["1.weight"])
    with pytest.raises(SketchpruneError, match="holds the state of callbacks"):
        train(fresh(), digits, cfg, out=tmp_path / "part", seed=3)


class Unmask(Callback):
    def on_step_end(self, state):
        if state.step == 3:
            state.set_masks(None)  # dense from here on


def test_a_run_a_callback_made_dense_resumes_dense(digits, tmp_path):
    cfg = TrainConfig(epochs=2, optimizer="sgd", lr=0.05)

    def fresh():
        torch.manual_seed(2)
        model = models.create("mlp", input_shape=digits.input_shape, width=16)
        return model, sample_masks(model, 0.2, torch.Generator().manual_seed(0))

    full, masks = fresh()
    train(full, digits, cfg, masks=masks, out=tmp_path / "full", callbacks=[Unmask()])
    assert bool((full.state_dict()["1.weight"][~masks["1.weight"]] != 0).any())  # pruned weights came back
    part, masks = fresh()
    train(part, digits, cfg, masks=masks, out=tmp_path / "part", stop_after=1, callbacks=[Unmask()])
    assert torch.load(tmp_path / "part" / "checkpoint.pt", weights_only=True)["masks"] is None
    resumed, masks = fresh()
    train(resumed, digits, cfg, masks=masks, out=tmp_path / "part", callbacks=[Unmask()])
    assert all(torch.equal(a, b) for a, b in zip(full.state_dict().values(), resumed.state_dict().values()))


@pytest.mark.parametrize("bad, message", [
    ({"lr_schedule": "step", "lr_drops": (1,), "lr_gamma": -1.0}, "lr_gamma must be a positive number"),
    ({"lr_gamma": float("nan")}, "lr_gamma must be"),
    ({"lr_schedule": "step", "lr_drops": (5,), "epochs": 5}, "lr_drops must be epochs in 1..4"),
    ({"lr_schedule": "step", "lr_drops": (-1,), "epochs": 5}, "lr_drops must be epochs in 1..4"),
    ({"momentum": -1.0}, "momentum must be in"), ({"momentum": float("nan")}, "momentum must be in"),
    ({"weight_decay": -1.0}, "weight_decay must be"), ({"weight_decay": float("nan")}, "weight_decay must be"),
    ({"lr": float("nan")}, "lr must be a positive number"),
])
def test_training_settings_that_train_wrongly_are_refused_before_any_work(bad, message):
    from sketchprune.config import build

    with pytest.raises(SketchpruneError, match=message):
        build(TrainConfig, bad)
