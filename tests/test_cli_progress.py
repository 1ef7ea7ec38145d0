"""What the command line says while it works (cli.py): where a sweep stands, what Ctrl-C kept and how
to go on, a train folder that was already finished, the flags prune lists, and which run a layer
collapse belongs to."""

import json
import re

from sketchprune.cli import main


def test_a_sweep_says_how_many_runs_and_where_each_stands(tmp_path, write_sweep, capsys):
    cfg = write_sweep(tmp_path, epochs=1)
    assert main(["sweep", str(cfg), "--out", str(tmp_path / "s")]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err[0] == f"8 run(s) to do, in {tmp_path / 's'}"
    lines = [line for line in err if line.startswith("[")]
    assert len(lines) == 8 and lines[-1].startswith("[8/8] ")
    pattern = re.compile(r"^\[\d/8\] (magnitude|synflow) (topk|sample) (2x|10x) seed 0: \d\.\d{3} \(\d+\.\d s\)$")
    assert all(pattern.match(line) for line in lines), lines
    results = {(r["config"]["method"], r["config"]["mode"], round(1 / r["config"]["density"])): r["final_test_acc"]
               for r in map(json.loads, (p.read_text() for p in (tmp_path / "s").rglob("result.json")))}
    for line in lines:  # each line shows its own run's accuracy
        method, mode, comp = line.split()[1:4]
        assert f"{results[(method, mode, int(comp[:-1]))]:.3f}" in line
    assert main(["sweep", str(cfg), "--out", str(tmp_path / "s")]) == 0
    assert capsys.readouterr().err.splitlines()[0] == f"0 run(s) to do, 8 finished earlier (kept), in {tmp_path / 's'}"


def test_progress_names_what_sets_runs_apart(tmp_path, capsys):
    sweep = tmp_path / "g.yaml"
    sweep.write_text("fixed: {model: mlp, dataset: digits, model_options: {width: 16}, method: grasp, density: 0.1,\n"
                     "        train: {epochs: 1}}\ngrid: {grasp_temperature: [100, 200]}\n")
    assert main(["sweep", str(sweep), "--out", str(tmp_path / "g")]) == 0
    lines = sorted(line for line in capsys.readouterr().err.splitlines() if line.startswith("["))
    assert [line.split(":")[0][6:] for line in lines] == ["grasp grasp_temperature=100 topk 10x seed 0",
                                                           "grasp grasp_temperature=200 topk 10x seed 0"]


def test_ctrl_c_says_what_was_kept_and_how_to_resume(tmp_path, write_sweep, capsys, monkeypatch):
    from sketchprune import sweep as sw

    cfg = write_sweep(tmp_path, epochs=1)
    real, calls = sw.run_recorded_stack, []

    def interrupted_after_one(*args, **kwargs):
        if calls:
            raise KeyboardInterrupt
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(sw, "run_recorded_stack", interrupted_after_one)
    out = tmp_path / "s"
    argv = ["sweep", str(cfg), "--out", str(out), "--stack", "4"]
    assert main(argv) == 130
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last == (f"interrupted: 4 of 8 run(s) finished and are kept in {out}/runs (a result.json each); a run in "
                    "progress keeps its last finished epoch (checkpoint.pt); resume with: sketchprune sweep "
                    f"{cfg} --out {out} --stack 4")
    assert len(list(out.rglob("result.json"))) == 4
    monkeypatch.setattr(sw, "run_recorded_stack", real)
    assert main(argv) == 0 and len(list(out.rglob("result.json"))) == 8  # the line's command goes on
    monkeypatch.setattr("sketchprune.experiment.run", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    assert main(["train", "--model", "mlp", "--dataset", "digits", "--out", str(tmp_path / "t")]) == 130
    assert capsys.readouterr().err.strip().endswith(
        f"interrupted: {tmp_path / 't'} keeps the run's last finished epoch (checkpoint.pt) and its masks; resume "
        f"with: sketchprune train --model mlp --dataset digits --out {tmp_path / 't'}")
    monkeypatch.setattr("sketchprune.experiment.prune_model", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    assert main(["prune", "--model", "mlp", "--dataset", "digits", "--out", str(tmp_path / "p")]) == 130
    assert capsys.readouterr().err.strip() == ("interrupted: nothing was written (a command writes its files when it "
                                               "ends); run it again with: sketchprune prune --model mlp --dataset "
                                               f"digits --out {tmp_path / 'p'}")


def test_a_finished_train_folder_says_its_result_was_there(tmp_path, capsys):
    argv = ["train", "--dataset", "digits", "--model", "mlp", "--epochs", "1", "--out", str(tmp_path / "t")]
    assert main(argv) == 0
    first = capsys.readouterr()
    assert "already held" not in first.err
    assert main(argv) == 0
    again = capsys.readouterr()
    assert f"note: {tmp_path / 't'} already held this run's result (it finished earlier)" in again.err
    assert again.out == first.out  # the same result shown


def test_prune_help_lists_only_what_prune_uses(capsys):
    main(["prune", "--help"])
    text = capsys.readouterr().out
    for flag in ("--epochs", "--lr ", "--reinit", "--dst", "--dst-interval", "--deepr-l1", "--dns-margin"):
        assert flag not in text, flag
    for flag in ("--method", "--density", "--compression", "--mode", "--prune-batches", "--grasp-temperature"):
        assert flag in text, flag
    main(["train", "--help"])
    assert "--dst-interval" in capsys.readouterr().out
    assert main(["prune", "--dst", "rigl"]) == 2


def test_the_collapse_warning_names_every_layer_and_its_run(tmp_path, capsys):
    # the first layer's weights (fan-in 64) are larger than the others' (fan-in 512): magnitude keeps only them
    rc = main(["train", "--model", "mlp", "--model-options", "depth=4,width=512", "--dataset", "digits", "--method",
               "magnitude", "--density", "0.02", "--epochs", "1", "--out", str(tmp_path / "t"), "--json"])
    assert rc == 0
    result = json.loads((tmp_path / "t" / "result.json").read_text())
    collapsed = result["collapsed"]
    assert len(collapsed) >= 4  # more than the three the warning used to name
    (line,) = [x for x in capsys.readouterr().err.splitlines() if "layer collapse" in x]
    assert line.startswith(f"warning: run magnitude-topk-d0.02-s0-{result['hash']}: layer collapse: ")
    assert line.endswith(f"({', '.join(collapsed)})")
