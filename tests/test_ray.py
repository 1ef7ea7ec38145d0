"""The Ray backend on a real Ray cluster started on 127.0.0.1 inside the test."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

# keep every Ray address on the loopback interface (Ray otherwise swaps 127.0.0.1 for the host's IP);
# read by Ray when it is imported, so set first
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"

ray = pytest.importorskip("ray", reason="the Ray backend needs the 'ray' extra (installed by make test)")

from sketchprune.cli import main  # noqa: E402
from sketchprune.results import collect  # noqa: E402

CONFIG = """
fixed:
  model: mlp
  dataset: digits
  model_options: {width: 16}
  train: {epochs: 15, optimizer: adam, lr: 0.003, weight_decay: 0.0, batch_size: 64}
grid:
  method: [magnitude, synflow]
  mode: [topk, sample]
  seed: [0, 1]
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    ray_bin = shutil.which("ray", path=os.path.dirname(sys.executable)) or shutil.which("ray")
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([ray_bin, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port),
                    "--num-cpus", "2", "--include-dashboard", "false", "--disable-usage-stats"],
                   check=True, env=env, capture_output=True, timeout=180)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        if ray.is_initialized():
            ray.shutdown()
        subprocess.run([ray_bin, "stop", "--force"], env=env, capture_output=True, timeout=120)


def _kill_one_task_worker(stop: threading.Event, killed: list) -> None:
    """Kill the first Ray worker seen running a sweep task (once)."""
    while not stop.is_set() and not killed:
        out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if "ray::run_recorded" in line:
                pid = int(line.split()[0])
                time.sleep(0.5)  # let it get into training
                try:
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                except ProcessLookupError:
                    pass
                break
        time.sleep(0.05)


def test_ray_sweep_survives_a_killed_worker_and_matches_local(cluster, tmp_path, capsys):
    cfg = tmp_path / "s.yaml"
    cfg.write_text(CONFIG)
    stop, killed = threading.Event(), []
    killer = threading.Thread(target=_kill_one_task_worker, args=(stop, killed), daemon=True)
    killer.start()
    try:
        assert main(["sweep", str(cfg), "--out", str(tmp_path / "ray"), "--ray-address", cluster, "--json"]) == 0
    finally:
        stop.set()
        killer.join(timeout=5)
    counts = json.loads(capsys.readouterr().out)
    assert killed, "no Ray worker was seen running a task"
    assert counts["done"] == 8 and counts["failed"] == 0
    assert main(["sweep", str(cfg), "--out", str(tmp_path / "local"), "--json"]) == 0
    local = {r.hash: (r.final_test_acc, r.kept) for r in collect(tmp_path / "local")}
    remote = {r.hash: (r.final_test_acc, r.kept) for r in collect(tmp_path / "ray")}
    assert remote == local and len(local) == 8
    for p in Path(tmp_path / "ray").rglob("metrics.jsonl"):  # the killed run resumed: each epoch once
        assert [json.loads(x)["epoch"] for x in p.read_text().splitlines()] == list(range(1, 16))
