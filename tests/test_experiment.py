"""One run (experiment.py): RunConfig checked once, what it asks reaches prune and train, one config a folder."""

import json

import pytest
import torch

from sketchprune import SketchpruneError
from sketchprune.cli import main
from sketchprune.experiment import RunConfig, make_config, run
from sketchprune.train import TrainConfig


def test_prune_command_projects_onto_the_nm_pattern(tmp_path):
    out = tmp_path / "p"
    args = ["prune", "--model", "mlp", "--dataset", "digits", "--method", "magnitude", "--density", "0.4"]
    assert main([*args, "--nm", "2:4", "--out", str(out), "--json"]) == 0
    from sketchprune import Masks

    masks = Masks.load(out / "masks.safetensors")
    assert masks.meta["nm"] == "2:4"
    for name, m in masks.items():  # at most 2 kept of every 4 consecutive inputs
        assert int(m.reshape(m.shape[0], -1, 4).sum(-1).max()) <= 2, name


def test_units_take_no_nm_and_too_many_prune_batches_are_refused(tmp_path, capsys):
    with pytest.raises(SketchpruneError, match="structure=units takes no .*nm"):
        make_config({"method": "l1", "structure": "units", "nm": "2:4"})
    assert main(["prune", "--model", "mlp", "--dataset", "digits", "--method", "snip", "--prune-batches", "10",
                 "--out", str(tmp_path / "x")]) == 2
    assert "leaves empty batches: digits has" in capsys.readouterr().err


def test_iterations_default_is_none_everywhere():
    cfg = make_config({"method": "synflow"})
    assert cfg.iterations is None and cfg.method_settings() == cfg.method_settings()
    assert make_config({"method": "synflow", "iterations": 3}).iterations == 3
    for bad in (0, 10**18, 1e18):  # 1e18 once let a sweep file allocate a density per round until killed
        with pytest.raises(SketchpruneError, match=r"iterations must be an integer in \[1, 10000\]"):
            make_config({"method": "synflow", "iterations": bad})


def test_train_refuses_a_folder_of_another_config_and_resumes_its_own(tmp_path, capsys, cli_error):
    base = ["train", "--model", "mlp", "--dataset", "digits", "--epochs", "1", "--json", "--out", str(tmp_path)]
    assert main(base + ["--density", "0.5"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert main(base + ["--density", "0.2"]) == 2
    err = cli_error()
    assert "holds another run" in err and "--out" in err
    assert json.loads((tmp_path / "result.json").read_text())["density_actual"] == first["density_actual"]
    assert main(base + ["--density", "0.5"]) == 0  # the same config: its finished result
    assert json.loads(capsys.readouterr().out)["hash"] == first["hash"]


def test_a_killed_run_is_not_finished_with_other_settings(tmp_path, capsys, cli_error):
    base = ["train", "--model", "mlp", "--dataset", "digits", "--epochs", "1", "--out", str(tmp_path)]
    assert main(base + ["--density", "0.5"]) == 0
    capsys.readouterr()
    (tmp_path / "result.json").unlink()  # as if killed after pruning: masks and checkpoint stay
    assert main(base + ["--density", "0.2", "--method", "random"]) == 2
    assert "holds another run" in cli_error()


def test_run_folder(tmp_path, digits):
    cfg = RunConfig(model="mlp", dataset="digits", method="synflow", density=0.2, iterations=5,
                    train=TrainConfig(epochs=2, optimizer="adam", lr=3e-3, weight_decay=0))
    res = run(cfg, tmp_path, dataset=digits)
    for f in ("config.json", "masks.safetensors", "metrics.jsonl", "result.json"):
        assert (tmp_path / f).exists()
    assert res.kept == round(0.2 * res.total)
    assert run(cfg, tmp_path).to_dict() == json.loads((tmp_path / "result.json").read_text())  # finished: not rerun


def test_sanity_checks_in_a_run(tmp_path, digits):
    base = dict(model="mlp", dataset="digits", method="magnitude", density=0.3, model_options={"width": 16},
                train=TrainConfig(epochs=1, optimizer="adam", lr=3e-3, weight_decay=0))
    plain = run(RunConfig(**base), tmp_path / "plain", dataset=digits)
    shuffled = run(RunConfig(**base, shuffle=True), tmp_path / "shuffle", dataset=digits)
    assert shuffled.layer_density == plain.layer_density  # same per-layer counts, other positions
    from sketchprune import Masks

    a, b = Masks.load(tmp_path / "plain" / "masks.safetensors"), Masks.load(tmp_path / "shuffle" / "masks.safetensors")
    assert any(not torch.equal(a[n], b[n]) for n in a)
    reinit = run(RunConfig(**base, reinit=True), tmp_path / "reinit", dataset=digits)
    assert reinit.kept == plain.kept and reinit.hash != plain.hash


def _cfg(**kw):
    return make_config({"model": "mlp", "dataset": "digits", "model_options": {"width": 16}, "train.epochs": 2,
                        "method": "magnitude", **kw})


def test_a_checkpoint_of_another_run_is_not_resumed(tmp_path):
    from sketchprune import experiment

    a, b = tmp_path / "a", tmp_path / "b"
    experiment.run(_cfg(density=0.5), a)
    cfg = _cfg(density=0.1)
    experiment.claim(b, cfg)
    import shutil

    shutil.copy(a / "checkpoint.pt", b / "checkpoint.pt")  # the same training settings and seed, another density
    with pytest.raises(SketchpruneError, match="checkpoint .* is from another"):
        experiment.run(cfg, b)


def test_a_masks_file_naming_some_layers_is_refused(tmp_path):
    from sketchprune import Masks, experiment

    cfg = _cfg(density=0.5)
    out = tmp_path / "r"
    experiment.claim(out, cfg)
    data = experiment.load_data(cfg)
    masks = experiment.prune_model(cfg, experiment.build_model(cfg, data), data)
    Masks({n: m for i, (n, m) in enumerate(masks.items()) if i > 0}).save(out / "masks.safetensors")
    with pytest.raises(SketchpruneError, match="lacks 1 of the .* prunable tensors.*delete it"):
        experiment.run(cfg, out)


def test_of_two_claims_at_once_one_wins(tmp_path):
    from sketchprune.atomic import create_json

    assert create_json(tmp_path / "c.json", {"hash": "a"}) and not create_json(tmp_path / "c.json", {"hash": "b"})
    assert json.loads((tmp_path / "c.json").read_text()) == {"hash": "a"}
    assert [p.name for p in tmp_path.iterdir()] == ["c.json"]  # no temporary file left


def test_a_run_held_by_another_process_is_refused(tmp_path):
    from sketchprune import experiment
    from sketchprune.atomic import hold_lock

    cfg = _cfg()
    experiment.claim(tmp_path, cfg)
    with hold_lock(tmp_path / ".run.lock", "busy"):  # flock locks are per open file: a second open is refused
        with pytest.raises(SketchpruneError, match="is running this run"):
            experiment.run(cfg, tmp_path)
