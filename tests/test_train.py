"""Training: real learning on digits, exact zeros, bit-identical resume, the default job, CLI errors."""

import json

import pytest
import torch

from sketchprune import SketchpruneError, data, models, prune
from sketchprune.cli import main
from sketchprune.experiment import RunConfig, run
from sketchprune.train import TrainConfig, augment, train


@pytest.fixture(scope="module")
def digits():
    return data.load("digits")


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


def test_augment_keeps_shape_and_content():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)
    y = augment(x, torch.Generator().manual_seed(0), pad=0)
    for i in range(2):  # with no padding only flips remain
        assert torch.equal(y[i], x[i]) or torch.equal(y[i], x[i].flip(2))


def test_run_folder(tmp_path, digits):
    cfg = RunConfig(model="mlp", dataset="digits", method="synflow", density=0.2, iterations=5,
                    train=TrainConfig(epochs=2, optimizer="adam", lr=3e-3, weight_decay=0))
    res = run(cfg, tmp_path, dataset=digits)
    for f in ("config.json", "masks.safetensors", "metrics.jsonl", "result.json"):
        assert (tmp_path / f).exists()
    assert res["kept"] == round(0.2 * res["total"])
    assert run(cfg, tmp_path) == json.loads((tmp_path / "result.json").read_text())  # finished: not rerun


def test_default_job_one_epoch(tmp_path, capsys):
    rc = main(["run", "--epochs", "1", "--out", str(tmp_path), "--seeds", "0", "--json"])
    assert rc == 0
    result = json.loads(capsys.readouterr().out)
    runs = 5 * 3 * 3 + 1  # methods x modes (topk, sample, auto) x densities, and the dense model
    assert result["done"] == runs and result["failed"] == 0
    for png in ("accuracy", "differences", "collapse"):
        assert (tmp_path / "report" / f"{png}.png").read_bytes()[:4] == b"\x89PNG"
    csv_lines = (tmp_path / "report" / "summary.csv").read_text().splitlines()
    assert len(csv_lines) == 1 + runs and csv_lines[0].startswith("setting,method,mode,density")
    assert any(line.split(",")[1] == "dense" for line in csv_lines)
    assert len(list((tmp_path / "runs").glob("*/result.json"))) == runs  # hash-named run folders
    rc = main(["run", "--epochs", "1", "--out", str(tmp_path), "--seeds", "0", "--json"])  # done: all skipped
    again = json.loads(capsys.readouterr().out)
    assert rc == 0 and (again["done"], again["skipped"]) == (0, runs)


def test_prune_cli_writes_masks_and_table(tmp_path, capsys):
    rc = main(["prune", "--model", "resnet20", "--method", "magnitude", "--compression", "10", "--out", str(tmp_path),
               "--json"])
    assert rc == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["kept"] == round(0.1 * rep["total"])
    from sketchprune import Masks

    assert Masks.load(tmp_path / "masks.safetensors").density() == pytest.approx(rep["density"])


@pytest.mark.parametrize(
    "args, msg",
    [
        (["train", "--dataset", "imagenet"], "unknown dataset"),
        (["train", "--model", "vgg7"], "unknown model"),
        (["prune", "--method", "snip", "--grasp-temperature", "3"], "belongs to method 'grasp'"),
        (["prune", "--scheme", "poisson"], "only apply to mode='sample'"),
        (["train", "--model", "mlp", "--model-options", "depth=two"], "'depth' must be int"),
        (["prune", "--density", "0.5", "--compression", "2"], "not both"),
        (["train", "--density", "1.5"], "density must be"),
    ],
)
def test_cli_errors_are_one_line(args, msg, tmp_path, capsys):
    rc = main(args + ["--out", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and msg in err and "\n" not in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_cuda_without_gpu_is_an_error(tmp_path, capsys):
    rc = main(["train", "--device", "cuda", "--dataset", "digits", "--model", "mlp", "--out", str(tmp_path)])
    assert rc == 2 and "no GPU" in capsys.readouterr().err


def test_sanity_checks_in_a_run(tmp_path, digits):
    base = dict(model="mlp", dataset="digits", method="magnitude", density=0.3, model_options={"width": 16},
                train=TrainConfig(epochs=1, optimizer="adam", lr=3e-3, weight_decay=0))
    plain = run(RunConfig(**base), tmp_path / "plain", dataset=digits)
    shuffled = run(RunConfig(**base, shuffle=True), tmp_path / "shuffle", dataset=digits)
    assert shuffled["layer_density"] == plain["layer_density"]  # same per-layer counts, other positions
    from sketchprune import Masks

    a, b = Masks.load(tmp_path / "plain" / "masks.safetensors"), Masks.load(tmp_path / "shuffle" / "masks.safetensors")
    assert any(not torch.equal(a[n], b[n]) for n in a)
    reinit = run(RunConfig(**base, reinit=True), tmp_path / "reinit", dataset=digits)
    assert reinit["kept"] == plain["kept"] and reinit["hash"] != plain["hash"]
