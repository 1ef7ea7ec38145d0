"""IMP (methods/imp.py): levels by trained magnitude, rewinding, a killed run resumed at its level."""

import copy

import pytest
import torch

from sketchprune import SketchpruneError, models, prune
from sketchprune.experiment import Trainer
from sketchprune.pruning import prunable_parameters
from sketchprune.train import TrainConfig


def imp_trainer(digits, folder=None):
    cfg = TrainConfig(epochs=2, optimizer="adam", lr=3e-3, weight_decay=0.0, batch_size=128)
    return Trainer(digits, cfg, folder, seed=0)


def test_imp_prunes_by_trained_magnitude_and_rewinds(digits, flat):
    torch.manual_seed(0)
    model = models.create("mlp", input_shape=digits.input_shape, width=32)
    init = copy.deepcopy(model.state_dict())
    m = prune(model, "imp", 0.5, trainer=imp_trainer(digits), imp_rewind_steps=3)
    assert m.density() == pytest.approx(0.5, abs=1e-3) and m.meta["method"] == "imp"
    assert all(torch.equal(init[k], v) for k, v in model.state_dict().items())  # the caller's model untouched
    assert not torch.equal(m.start_state["1.weight"], init["1.weight"])  # rewound to step 3, not to init
    # one level by hand: train the dense net, keep the largest trained magnitudes
    one = prune(model, "imp", 0.8, trainer=imp_trainer(digits), imp_fraction=0.2)
    ref = copy.deepcopy(model)
    from sketchprune.masks import Masks

    imp_trainer(digits)(ref, Masks({n: torch.ones_like(p, dtype=torch.bool) for n, p in prunable_parameters(ref).items()}),
                        "x")
    trained = torch.cat([p.detach().abs().reshape(-1) for p in prunable_parameters(ref).values()])
    want = torch.zeros_like(trained, dtype=torch.bool)
    want[torch.topk(trained, round(0.8 * trained.numel())).indices] = True
    assert torch.equal(flat(one), want)
    assert all(torch.equal(one.start_state[k], init[k]) for k in init)  # no rewind steps: initialization


def test_a_killed_imp_run_resumes_at_its_level(digits, tmp_path, flat):
    torch.manual_seed(0)
    model = models.create("mlp", input_shape=digits.input_shape, width=32)
    full = prune(model, "imp", 0.5, trainer=imp_trainer(digits, tmp_path / "full"))

    class Dies(Trainer):
        calls = 0

        def __call__(self, *a, **k):
            Dies.calls += 1
            if Dies.calls == 3:
                raise KeyboardInterrupt  # killed during the third level
            return super().__call__(*a, **k)

    base = imp_trainer(digits, tmp_path / "part")
    with pytest.raises(KeyboardInterrupt):
        prune(model, "imp", 0.5, trainer=Dies(base.data, base.config, base.folder))
    done = (tmp_path / "part" / "imp-level-0" / "checkpoint.pt").stat().st_mtime_ns
    resumed = prune(model, "imp", 0.5, trainer=base)
    assert torch.equal(flat(full), flat(resumed))
    assert (tmp_path / "part" / "imp-level-0" / "checkpoint.pt").stat().st_mtime_ns == done  # not retrained


def test_imp_needs_a_trainer(mlp):
    with pytest.raises(SketchpruneError, match="trains while it prunes"):
        prune(mlp(), "imp", 0.5)


def test_levels_reach_the_density_and_an_absurd_fraction_is_one_line():
    """ceil(log d / log(1 - f)) levels: density 0.8 is one level of 0.2, 0.5 four (each at most 0.2);
    a fraction that would need thousands of trainings (or never prune) is refused before any training."""
    from sketchprune.methods.imp import MAX_LEVELS, imp_levels

    assert [imp_levels(d, 0.2) for d in (0.9, 0.8, 0.5, 0.1, 0.001)] == [1, 1, 4, 11, 31]
    assert imp_levels(0.99, 0.5) == 1
    for fraction in (1e-300, 1e-6):
        with pytest.raises(SketchpruneError, match=f"at most {MAX_LEVELS}.*raise imp_fraction"):
            imp_levels(0.1, fraction)
