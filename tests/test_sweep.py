"""Sweeps (sweep.py): files checked whole, skip and resume (SIGKILL included), failures recorded and retried."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sketchprune import SketchpruneError
from sketchprune.cli import main
from sketchprune.results import collect
from sketchprune.sweep import _lock, load, status

TINY_SWEEP = """
fixed: {model: mlp, dataset: digits, model_options: {width: 16},
        train: {epochs: 1, optimizer: adam, lr: 0.003, weight_decay: 0.0}}
grid: {method: [magnitude], mode: [topk, sample]}
"""


def test_sweep_file_errors(tmp_path):
    bad = tmp_path / "b.yaml"
    bad.write_text("fixed: {model: mlp}\ngrid: {colour: [1]}\n")
    with pytest.raises(SketchpruneError, match="unknown setting 'colour'"):
        load(bad)
    bad.write_text("fixd: {}\n")
    with pytest.raises(SketchpruneError, match="unknown key 'fixd'"):
        load(bad)
    bad.write_text("grid: {method: magnitude}\n")
    with pytest.raises(SketchpruneError, match="non-empty list"):
        load(bad)
    bad.write_text("grid: {method: [magnitude, no_such_method]}\n")  # checked whole before any run
    with pytest.raises(SketchpruneError, match="unknown method 'no_such_method'"):
        load(bad)


def test_sweep_skips_finished_and_records_failures(tmp_path, capsys, write_sweep):
    cfg = write_sweep(tmp_path, methods="[magnitude]")  # the cifar10 runs fail when they look for their data files
    cfg.write_text(cfg.read_text().replace("  dataset: digits\n", "")
                   + "  dataset: [digits, cifar10]\n")
    out = tmp_path / "out"
    assert main(["sweep", str(cfg), "--out", str(out), "--json"]) == 1  # runs failed: non-zero exit
    first = json.loads(capsys.readouterr().out)
    assert (first["done"], first["failed"], first["skipped"]) == (4, 4, 0)
    errors = list(out.rglob("error.json"))
    assert len(errors) == 4 and "cifar" in json.loads(errors[0].read_text())["error"]
    assert main(["sweep", str(cfg), "--out", str(out), "--json"]) == 1  # failed runs remain: still non-zero
    again = json.loads(capsys.readouterr().out)
    assert (again["done"], again["skipped"], again["failed_earlier"]) == (0, 8, 4)
    assert main(["sweep", str(cfg), "--out", str(out), "--json", "--retry-failed"]) == 1
    retried = json.loads(capsys.readouterr().out)
    assert (retried["failed"], retried["skipped"]) == (4, 4)
    assert main(["sweep", str(cfg), "--out", str(out), "--dry-run", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)["runs"]
    assert len(listed) == 8 and {r["status"] for r in listed} == {"done", "failed"}


def test_workers_give_the_same_results_as_sequential(tmp_path, write_sweep):
    cfg = write_sweep(tmp_path)
    assert main(["sweep", str(cfg), "--out", str(tmp_path / "seq")]) == 0
    assert main(["sweep", str(cfg), "--out", str(tmp_path / "par"), "--workers", "2"]) == 0
    seq = {r.hash: r.final_test_acc for r in collect(tmp_path / "seq")}
    par = {r.hash: r.final_test_acc for r in collect(tmp_path / "par")}
    assert seq == par and len(seq) == 8


def test_sigkill_then_resume_loses_nothing_and_runs_nothing_twice(tmp_path, write_sweep):
    cfg = write_sweep(tmp_path, epochs=12)
    out = tmp_path / "out"
    # two stacks of 4 (stacking is the default): killed while the second trains, after the first finished
    cmd = [sys.executable, "-m", "sketchprune.cli", "sweep", str(cfg), "--out", str(out), "--stack", "4"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    try:
        while time.time() < deadline:  # wait until one run is finished and another is mid-training
            done = list(out.rglob("result.json"))
            started = [p for p in out.rglob("checkpoint.pt") if not (p.parent / "result.json").exists()]
            if done and started:
                break
            time.sleep(0.05)
        else:
            pytest.fail("the sweep made no progress")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    before = {p: (p.stat().st_mtime_ns, p.read_text()) for p in out.rglob("result.json")}
    assert main(["sweep", str(cfg), "--out", str(out)]) == 0
    results = list(out.rglob("result.json"))
    assert len(results) == 8
    for p, (mtime, text) in before.items():  # finished runs were not run again
        assert p.stat().st_mtime_ns == mtime and p.read_text() == text
    for p in results:  # every run trained each epoch exactly once, the interrupted one included
        epochs = [json.loads(line)["epoch"] for line in (p.parent / "metrics.jsonl").read_text().splitlines()]
        assert epochs == list(range(1, 13))


def test_a_damaged_result_counts_as_failed_and_retry_reruns_it(tmp_path, capsys):
    cfg = tmp_path / "s.yaml"
    cfg.write_text(TINY_SWEEP)
    out = tmp_path / "out"
    assert main(["sweep", str(cfg), "--out", str(out), "--json"]) == 0
    victim = sorted(out.rglob("result.json"))[0]
    victim.write_text('{"config": ')  # corrupted by hand
    assert status(victim.parent) == "failed"
    with pytest.warns(RuntimeWarning, match="cannot be read"):
        assert len(collect(out)) == 1
    capsys.readouterr()
    assert main(["report", str(out), "--json"]) == 0  # no crash: the damaged run is left out
    assert json.loads(capsys.readouterr().out)["runs"] == 1
    assert main(["sweep", str(cfg), "--out", str(out), "--json"]) == 1  # a failed run remains
    assert json.loads(capsys.readouterr().out)["failed_earlier"] == 1
    assert main(["sweep", str(cfg), "--out", str(out), "--json", "--retry-failed"]) == 0
    assert json.loads(capsys.readouterr().out)["done"] == 1 and status(victim.parent) == "done"


def test_a_truncated_checkpoint_fails_once_and_retry_starts_over(tmp_path, capsys):
    cfg = tmp_path / "s.yaml"
    cfg.write_text(TINY_SWEEP.replace("epochs: 1", "epochs: 2"))
    out = tmp_path / "out"
    assert main(["sweep", str(cfg), "--out", str(out), "--json"]) == 0
    run_dir = sorted(out.rglob("result.json"))[0].parent
    (run_dir / "result.json").unlink()
    ckpt = run_dir / "checkpoint.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:200])
    assert main(["sweep", str(cfg), "--out", str(out), "--json"]) == 1  # the run failed: non-zero exit
    err = json.loads((run_dir / "error.json").read_text())["error"]
    assert "cannot be read" in err
    capsys.readouterr()
    assert main(["sweep", str(cfg), "--out", str(out), "--json", "--retry-failed"]) == 0
    assert status(run_dir) == "done"
    epochs = [json.loads(x)["epoch"] for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2]


@pytest.mark.parametrize("text, msg", [
    ("", "is empty"),
    ("fixed: {model: mlp}\ngrid: {density: [true]}\n", "must be float"),
    ("fixed: {model: [mlp]}\n", "goes under grid"),
    ("grid: {seed: [0, 1, 0]}\n", "twice"),
    ("grid: {method: [magnitude, bogus]}\n", "unknown method"),
])
def test_sweep_files_are_checked_whole_before_any_run(text, msg, tmp_path, cli_error):
    cfg = tmp_path / "s.yaml"
    cfg.write_text(text)
    out = tmp_path / "out"
    for extra in (["--dry-run"], []):
        assert main(["sweep", str(cfg), "--out", str(out)] + extra) == 2
        assert msg in cli_error()
    assert not out.exists()


def test_a_sweep_whose_runs_fail_exits_non_zero(tmp_path, capsys):
    cfg = tmp_path / "s.yaml"
    cfg.write_text(TINY_SWEEP.replace("dataset: digits", "dataset: cifar10"))  # no CIFAR files here
    assert main(["sweep", str(cfg), "--out", str(tmp_path / "out")]) == 1


def test_one_sweep_per_folder(tmp_path, cli_error):
    cfg = tmp_path / "s.yaml"
    cfg.write_text(TINY_SWEEP)
    out = tmp_path / "out"
    with _lock(out):  # as if another sweep were running there
        assert main(["sweep", str(cfg), "--out", str(out)]) == 2
        assert "another sweep" in cli_error()
    assert main(["sweep", str(cfg), "--out", str(out)]) == 0


def test_workers_end_when_the_sweep_is_killed(tmp_path):
    cfg = tmp_path / "s.yaml"
    cfg.write_text(TINY_SWEEP.replace("epochs: 1", "epochs: 100000").replace("mode: [topk, sample]",
                                                                          "mode: [topk, sample], seed: [0, 1, 2]"))
    proc = subprocess.Popen([sys.executable, "-m", "sketchprune.cli", "sweep", str(cfg), "--out", str(tmp_path / "o"),
                             "--workers", "2"], stdout=subprocess.DEVNULL, stderr=open(tmp_path / "err.txt", "w"))

    def workers() -> list[int]:
        out = subprocess.run(["ps", "-ww", "-o", "pid=,ppid=,args=", "-e"], capture_output=True, text=True).stdout
        return [int(line.split()[0]) for line in out.splitlines()
                if int(line.split()[1]) == proc.pid and "spawn_main" in line]

    try:
        deadline = time.time() + 90
        while len(workers()) < 2 and time.time() < deadline:
            time.sleep(0.2)
        pids = workers()
        assert len(pids) == 2, "the workers did not start: " + (tmp_path / "err.txt").read_text()[-2000:]
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    deadline = time.time() + 15
    alive = pids
    while alive and time.time() < deadline:
        time.sleep(0.2)
        alive = [p for p in pids if _alive(p)]
    for p in alive:  # leave nothing running, whatever the outcome
        os.kill(p, signal.SIGKILL)
    assert not alive, f"orphaned workers {alive}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat").read_text().split()[2] if Path(f"/proc/{pid}/stat").exists() else "X"
    return state not in ("Z", "X")


def test_the_sweep_lock_follows_no_link_and_truncates_no_other_file(tmp_path):
    from sketchprune.sweep import _lock

    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    for make in (lambda p: p.symlink_to(victim), lambda p: os.link(victim, p)):
        out = tmp_path / f"out{len(list(tmp_path.iterdir()))}"
        out.mkdir()
        make(out / ".sweep.lock")
        with pytest.raises(SketchpruneError, match="cannot be opened as a lock|not a plain file of its own"):
            with _lock(out):
                pass
        assert victim.read_text() == "precious"


def test_a_result_of_another_run_in_a_run_folder_is_not_done(tmp_path):
    from sketchprune import config as cfgmod
    from sketchprune.experiment import make_config
    from sketchprune.results import RESULT_FILE, status

    cfg = make_config({"model": "mlp", "dataset": "digits", "method": "magnitude"})
    other = make_config({"model": "mlp", "dataset": "digits", "method": "magnitude", "density": 0.5})
    folder = tmp_path / "runs" / cfgmod.config_hash(cfg)
    folder.mkdir(parents=True)
    record = {"config": cfgmod.to_dict(other), "hash": cfgmod.config_hash(other), "compression": 2.0,
              "final_test_acc": 0.5, "best_test_acc": 0.5, "final_train_loss": 1.0, "kept": 1, "total": 2,
              "density_actual": 0.5, "collapsed": [], "layer_density": {}, "prune_seconds": 0.0, "wall_seconds": 0.0}
    (folder / RESULT_FILE).write_text(json.dumps(record))
    assert status(folder) == "done" and status(folder, cfgmod.config_hash(cfg)) == "failed"
