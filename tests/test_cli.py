"""The command line (cli.py, cli_flags.py): help, JSON equal to the table, settings checked first, one-line errors."""

import json
import subprocess
import sys

import pytest
import torch

from sketchprune.cli import main


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "sketchprune.cli", *args], capture_output=True, text=True)


def test_version_and_help():
    r = run_cli("--version")
    assert r.returncode == 0 and r.stdout.startswith("sketchprune ")
    r = run_cli("--help")
    for cmd in ("run", "theory"):
        assert cmd in r.stdout


def test_theory_sketch_json_matches_files(tmp_path, capsys):
    rc = main(["theory", "sketch", "--json", "--out", str(tmp_path), "--trials", "40", "--budgets", "5,20",
               "--n", "50", "--cases", "heavy"])
    assert rc == 0
    result = json.loads(capsys.readouterr().out)
    assert json.loads((tmp_path / "sketch.json").read_text())["rows"] == result["rows"]
    assert (tmp_path / "sketch.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert {r["budget"] for r in result["rows"]} == {5, 20}
    for r in result["rows"]:
        if r["exact"] is not None:
            assert r["within_ci"] == (abs(r["mc_mean"] - r["exact"]) <= r["ci99"])
            assert abs(r["mc_mean"] - r["exact"]) <= 4 / 2.576 * r["ci99"]  # 4 standard errors


def test_bad_flag_value_is_one_line_error():
    r = run_cli("theory", "sketch", "--budgets", "10,x")
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "budgets" in r.stderr


def test_prune_and_train_commands_take_structure_units(tmp_path, capsys):
    args = ["--model", "mlp", "--dataset", "digits", "--structure", "units", "--method", "sketch",
            "--density", "0.25", "--keep-by", "macs", "--json"]
    assert main(["prune", *args, "--out", str(tmp_path / "p")]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert 0.2 <= rep["macs_fraction"] <= 0.25 and all(v["kept"] < v["total"] for v in rep["layers"].values())
    assert json.loads((tmp_path / "p" / "units.json").read_text())["layers"] == rep["layers"]
    assert main(["train", *args, "--epochs", "1", "--out", str(tmp_path / "t")]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["macs_fraction"] == pytest.approx(rep["macs_fraction"]) and result["final_test_acc"] > 0.1
    assert main(["train", "--structure", "units", "--method", "magnitude", "--out", str(tmp_path / "x")]) == 2
    assert "has no unit form (structure=units)" in capsys.readouterr().err


def test_train_without_out_gets_one_folder_per_config(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    base = ["train", "--model", "mlp", "--dataset", "digits", "--epochs", "1", "--json"]
    assert main(base + ["--density", "0.5"]) == 0 and main(base + ["--density", "0.2"]) == 0
    runs = sorted((tmp_path / "runs" / "train").iterdir())
    densities = sorted(json.loads((r / "result.json").read_text())["density_actual"] for r in runs)
    assert densities == [pytest.approx(0.2, abs=1e-3), pytest.approx(0.5, abs=1e-3)]


@pytest.mark.parametrize("bad", [["--method", "bogus"], ["--model", "vgg7"], ["--dataset", "imagenet"],
                                 ["--augment"], ["--compression", "inf"], ["--methd", "snip"]])
def test_train_checks_settings_before_any_work(bad, tmp_path, cli_error):
    out = tmp_path / "run"
    assert main(["train", "--model", "mlp", "--dataset", "digits", "--out", str(out)] + bad) == 2
    cli_error()
    assert not out.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_cuda_on_a_cpu_machine_fails_before_pruning(tmp_path, cli_error):
    out = tmp_path / "run"
    assert main(["train", "--device", "cuda", "--model", "mlp", "--dataset", "digits", "--out", str(out)]) == 2
    assert "no GPU" in cli_error() and not out.exists()


def test_run_with_a_bad_method_trains_nothing(tmp_path, cli_error):
    assert main(["run", "--methods", "magnitude,bogus", "--out", str(tmp_path / "r")]) == 2
    assert "bogus" in cli_error() and not (tmp_path / "r").exists()


@pytest.mark.parametrize("args, msg", [
    (["--methods", "magnitude,"], "empty item"),
    (["--seeds", "0,0"], "twice"),
    (["--epochs", "1", "--epochs", "2"], "given twice"),
])
def test_list_and_repeated_flags(args, msg, tmp_path, cli_error):
    assert main(["run", "--out", str(tmp_path / "r")] + args) == 2
    assert msg in cli_error() and not (tmp_path / "r").exists()


def test_a_list_with_spaces_is_read_as_meant(tmp_path, capsys):
    rc = main(["run", "--methods", "magnitude, random", "--densities", "0.5", "--seeds", "0", "--epochs", "1",
               "--dataset", "digits", "--model", "mlp", "--json", "--out", str(tmp_path)])
    assert rc == 0 and json.loads(capsys.readouterr().out)["done"] == 2 * 3 + 1  # 2 methods x 3 modes, dense


def test_train_warns_about_layer_collapse(tmp_path, capsys):
    rc = main(["train", "--model", "conv1d", "--method", "magnitude", "--density", "0.1", "--epochs", "1",
               "--model-options", "width=64", "--out", str(tmp_path), "--json"])
    assert rc == 0
    err = capsys.readouterr().err
    result = json.loads((tmp_path / "result.json").read_text())
    assert f"warning: run magnitude-topk-d0.1-s0-{result['hash']}: layer collapse" in err and result["collapsed"]


def test_help_shows_no_bool_metavar(capsys):
    for cmd in (["--help"], ["train", "--help"], ["sweep", "--help"]):
        main(cmd)
        assert "<bool>" not in capsys.readouterr().out


def test_missing_data_files_name_flags_that_prune_has(tmp_path, capsys, cli_error):
    assert main(["prune", "--dataset", "cifar10", "--model", "resnet20", "--out", str(tmp_path)]) == 2
    err = cli_error()
    assert "--data-root" in err and "--download" in err
    main(["prune", "--help"])
    helptext = capsys.readouterr().out
    assert "--data-root" in helptext and "--download" in helptext


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


def test_prune_of_a_data_free_method_needs_no_data_set_that_fits(tmp_path, capsys):
    """The README's first example: SynFlow on ResNet-20 with no --dataset prunes it on its own input
    shape (the default MNIST-1D does not fit it) and says so; a data set named on the command line
    that does not fit is an error; a model that fits the default data set is pruned for it, as
    ``train`` with the same flags would train it."""
    rc = main(["prune", "--model", "resnet20", "--method", "synflow", "--compression", "100", "--iterations", "2",
               "--out", str(tmp_path / "r"), "--json"])
    out, err = capsys.readouterr()
    rep = json.loads(out)
    assert rc == 0 and rep["kept"] == round(0.01 * rep["total"]) and rep["layers"][0]["total"] == 16 * 3 * 9
    assert "resnet20 is pruned on its own input shape (3, 32, 32)" in err and "\n" not in err.strip()
    rc = main(["prune", "--model", "resnet20", "--method", "synflow", "--dataset", "synthetic", "--out",
               str(tmp_path / "s")])
    assert rc == 2 and "does not fit data set 'synthetic'" in capsys.readouterr().err
    rc = main(["prune", "--model", "mlp", "--method", "magnitude", "--out", str(tmp_path / "m"), "--json"])
    assert rc == 0 and json.loads(capsys.readouterr().out)["layers"][0]["total"] == 256 * 40  # MNIST-1D's 40 inputs
    rc = main(["prune", "--model", "resnet20", "--method", "snip", "--out", str(tmp_path / "n")])
    assert rc == 2 and "does not fit data set 'mnist1d'" in capsys.readouterr().err  # snip needs the data
