"""Sweeps: pinned run hashes, skip/resume (SIGKILL included), failures recorded, reports."""

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
from sketchprune.config import config_hash, non_default
from sketchprune.experiment import RunConfig
from sketchprune.experiment import make_config
from sketchprune.results import collect
from sketchprune.sweep import load
from sketchprune.train import TrainConfig

TINY = """
fixed:
  model: mlp
  dataset: digits
  model_options: {{width: 16}}
  train: {{epochs: {epochs}, optimizer: adam, lr: 0.003, weight_decay: 0.0, batch_size: 64}}
grid:
  method: {methods}
  mode: [topk, sample]
  compression: [2, 10]
"""


def write(tmp_path, epochs=2, methods="[magnitude, synflow]", name="s.yaml"):
    p = tmp_path / name
    p.write_text(TINY.format(epochs=epochs, methods=methods))
    return p


def test_pinned_hashes():
    # run folders are named by these: changing them orphans every existing result
    assert config_hash(RunConfig()) == "a49c17bef0e9"
    assert config_hash(RunConfig(method="synflow", density=0.01, mode="sample")) == "ebd8308c6cf5"
    assert config_hash(RunConfig(train=TrainConfig(epochs=3))) == "ed1787f5bb43"
    assert config_hash(RunConfig(model="vgg16_bn", dataset="cifar10", seed=2)) == "eb9a012f239c"


def test_only_non_default_settings_enter_the_hash():
    cfg = RunConfig(train=TrainConfig(epochs=3))
    assert non_default(cfg) == {"train": {"epochs": 3}}  # nested settings compared field by field
    assert make_config({"compression": 10, "train.epochs": 3}).density == pytest.approx(0.1)


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


def test_sweep_skips_finished_and_records_failures(tmp_path, capsys):
    cfg = tmp_path / "s.yaml"  # the cifar10 runs fail when they look for their data files
    cfg.write_text(TINY.format(epochs=2, methods="[magnitude]").replace("  dataset: digits\n", "")
                   + "  dataset: [digits, cifar10]\n")
    out = tmp_path / "out"
    assert main(["sweep", str(cfg), "--out", str(out), "--json"]) == 1  # runs failed: non-zero exit
    first = json.loads(capsys.readouterr().out)
    assert (first["done"], first["failed"], first["skipped"]) == (4, 4, 0)
    errors = list(out.rglob("error.json"))
    assert len(errors) == 4 and "cifar" in json.loads(errors[0].read_text())["error"]
    assert main(["sweep", str(cfg), "--out", str(out), "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert (again["done"], again["skipped"], again["failed_earlier"]) == (0, 8, 4)
    assert main(["sweep", str(cfg), "--out", str(out), "--json", "--retry-failed"]) == 1
    retried = json.loads(capsys.readouterr().out)
    assert (retried["failed"], retried["skipped"]) == (4, 4)
    assert main(["sweep", str(cfg), "--out", str(out), "--dry-run", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)["runs"]
    assert len(listed) == 8 and {r["status"] for r in listed} == {"done", "failed"}


def test_workers_give_the_same_results_as_sequential(tmp_path):
    cfg = write(tmp_path)
    assert main(["sweep", str(cfg), "--out", str(tmp_path / "seq")]) == 0
    assert main(["sweep", str(cfg), "--out", str(tmp_path / "par"), "--workers", "2"]) == 0
    seq = {r.hash: r.final_test_acc for r in collect(tmp_path / "seq")}
    par = {r.hash: r.final_test_acc for r in collect(tmp_path / "par")}
    assert seq == par and len(seq) == 8


def test_sigkill_then_resume_loses_nothing_and_runs_nothing_twice(tmp_path):
    cfg = write(tmp_path, epochs=12)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "sketchprune.cli", "sweep", str(cfg), "--out", str(out)]
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


def test_report_tables_equal_results_and_files_are_valid(tmp_path, capsys):
    cfg = write(tmp_path)
    out = tmp_path / "out"
    assert main(["sweep", str(cfg), "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["report", str(out), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    results = {r.hash: r for r in collect(out)}
    import csv

    with open(rep["files"]["results_csv"]) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 8
    for row in rows:
        assert float(row["final_test_acc"]) == pytest.approx(results[row["hash"]].final_test_acc)
        assert int(row["kept"]) == results[row["hash"]].kept
    for key in ("accuracy_png", "differences_png", "collapse_png"):
        assert Path(rep["files"][key]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = Path(rep["files"]["html"]).read_text()
    assert page.count("data:image/png;base64,") == 3 and "http://" not in page and "https://" not in page
    md = Path(rep["files"]["pivot_md"]).read_text()
    assert md.count("### ") == 2 and md.count("| magnitude |") == 2  # a table per mode, a row per method
    assert len(Path(rep["files"]["summary_csv"]).read_text().splitlines()) == 1 + 8  # 2 x 2 modes x 2 densities


def test_report_on_empty_folder_is_an_error(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "no finished runs" in capsys.readouterr().err
