"""Benchmark: how much the library slows down when other processes keep the cores busy, by thread setting.

Each job runs as a fresh process, once on the machine as it is ("quiet") and once beside a fixed
synthetic load (``--load`` busy-looping processes, started and stopped here), for each thread
setting of ``sketchprune --threads`` (``torch``: torch's default, one thread per core; ``1``;
``auto``: the default, the free cores):

* ``prune``: ``sketchprune prune --model resnet20 --dataset cifar10 --method synflow --compression 100``
  (SynFlow's 100 rounds on ResNet-20 at CIFAR shape, data-free; a tiny fake CIFAR-10 folder made
  here gives the input shape, so nothing is downloaded);
* ``theory``: ``sketchprune theory sketch`` on a small case (float64 Monte Carlo sketches);
* ``plain-synflow``: the baseline, the same SynFlow computation written simply with plain torch
  (100 rounds of ``|w * dR/dw|`` on the network made absolute, a global threshold per round, the
  exponential schedule; float32, as Synaptic-Flow's reference computes it), with torch's default
  threads as such code runs, and with one thread.

Every time is the wall time of the whole process (start-up included), each command bounded by
``--timeout``. The ratio loaded / quiet is the slowdown; with ``--json FILE`` the rows are
written there too. The machine this runs on may be shared: "quiet" is then only quieter.

Run: ``python benchmarks/bench_load.py [--load 2] [--timeout 240] [--json FILE]``.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SKETCHPRUNE = [sys.executable, "-m", "sketchprune.cli"]

PLAIN_SYNFLOW = r"""
import sys, time
import torch
threads = sys.argv[1]
if threads != "torch":
    torch.set_num_threads(int(threads))
from sketchprune import models

torch.manual_seed(0)
model = models.create("resnet20", num_classes=10, input_shape=(3, 32, 32)).eval()
with torch.no_grad():  # SynFlow's linearization: every weight and statistic made absolute
    for v in model.state_dict().values():
        if v.is_floating_point():
            v.abs_()
params = {n: p for n, p in model.named_parameters() if p.dim() > 1}
for p in model.parameters():
    p.requires_grad_(False)
for p in params.values():
    p.requires_grad_(True)
original = {n: p.detach().clone() for n, p in params.items()}
masks = {n: torch.ones_like(p, dtype=torch.bool) for n, p in params.items()}
ones = torch.ones(1, 3, 32, 32)
density, rounds = 0.01, 100
for r in range(rounds):
    with torch.no_grad():
        for n, p in params.items():
            p.copy_(original[n] * masks[n])
    R = model(ones).sum()
    grads = torch.autograd.grad(R, list(params.values()))
    scores = {n: (g * p).abs() for (n, p), g in zip(params.items(), grads)}
    flat = torch.cat([s.flatten() for s in scores.values()])
    drop = int((1 - density ** ((r + 1) / rounds)) * flat.numel())
    threshold = flat.kthvalue(drop).values if drop >= 1 else flat.min() - 1
    masks = {n: s > threshold for n, s in scores.items()}
kept = sum(int(m.sum()) for m in masks.values())
print(kept)
"""


def fake_cifar(root: Path) -> Path:
    """A CIFAR-10 folder of 20 random images per batch: enough for the input shape and classes."""
    import numpy as np

    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (20, 3072), dtype=np.uint8), b"labels": list(range(10)) * 2}
        with open(base / name, "wb") as f:
            pickle.dump(batch, f, protocol=2)
    return root


def jobs(data_root: Path, out: Path) -> dict[str, list[str]]:
    return {
        "prune": ["prune", "--model", "resnet20", "--dataset", "cifar10", "--data-root", str(data_root),
                  "--method", "synflow", "--compression", "100", "--out", str(out / "prune"), "--json"],
        "theory": ["theory", "sketch", "--trials", "100", "--n", "200", "--budgets", "10,50", "--out",
                   str(out / "theory"), "--json"],
    }


def timed(cmd: list[str], env: dict[str, str], timeout: float) -> float | None:
    """Wall seconds of ``cmd``, or None past ``timeout`` or on failure."""
    t0 = time.perf_counter()
    try:
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None
    if r.returncode != 0:
        print(f"  failed: {' '.join(cmd[:6])} ...: {r.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
        return None
    return time.perf_counter() - t0


class Load:
    """``count`` busy-looping processes for the duration of a ``with`` block (bounded: each ends by
    itself after ``limit`` seconds even if this process dies)."""

    def __init__(self, count: int, limit: float) -> None:
        self.count, self.limit, self.procs = count, limit, []

    def __enter__(self) -> Load:
        loop = f"import time\nend = time.time() + {self.limit}\nwhile time.time() < end:\n    pass\n"
        self.procs = [subprocess.Popen([sys.executable, "-c", loop]) for _ in range(self.count)]
        time.sleep(1.0)  # let them take the cores
        return self

    def __exit__(self, *exc: object) -> None:
        for p in self.procs:
            p.kill()
        for p in self.procs:
            p.wait()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--load", type=int, default=2, help="busy-looping processes of the loaded runs")
    ap.add_argument("--timeout", type=float, default=240.0, help="seconds one command may take")
    ap.add_argument("--settings", default="torch,1,auto", help="thread settings of ours to compare")
    ap.add_argument("--jobs", default="prune,theory,plain-synflow")
    ap.add_argument("--json", help="write the rows to this JSON file as well")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-load-"))
    try:
        data_root = fake_cifar(work / "data")
        env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS",
                                                                 "SKETCHPRUNE_THREADS")}
        env["SKETCHPRUNE_DATA"] = str(work / "data")
        ours = jobs(data_root, work / "out")
        cases = []  # (job, setting, command)
        for job in args.jobs.split(","):
            if job == "plain-synflow":
                cases += [(job, t, [sys.executable, "-c", PLAIN_SYNFLOW, t]) for t in ("torch", "1")]
            else:
                cases += [(job, t, SKETCHPRUNE + ["--threads", t] + ours[job]) for t in args.settings.split(",")]
        print(f"cores {len(os.sched_getaffinity(0))}, load average at start {os.getloadavg()[0]:.2f}; "
              f"loaded runs beside {args.load} busy loops", flush=True)
        rows = []
        print(f"{'job':>14} {'threads':>8} {'quiet s':>8} {'loaded s':>9} {'slowdown':>9}", flush=True)
        for job, setting, cmd in cases:
            shutil.rmtree(work / "out", ignore_errors=True)
            quiet = timed(cmd, env, args.timeout)
            shutil.rmtree(work / "out", ignore_errors=True)
            with Load(args.load, args.timeout + 30):
                loaded = timed(cmd, env, args.timeout)
            ratio = loaded / quiet if loaded and quiet else None
            rows.append({"job": job, "threads": setting, "quiet_seconds": quiet, "loaded_seconds": loaded,
                         "slowdown": ratio, "load_processes": args.load})

            def f(v: float | None, fmt: str) -> str:
                return format(v, fmt) if v is not None else f">{args.timeout:.0f}"

            print(f"{job:>14} {setting:>8} {f(quiet, '8.1f')} {f(loaded, '9.1f')} "
                  f"{format(ratio, '9.2f') if ratio else '-':>9}", flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps({"cores": len(os.sched_getaffinity(0)), "rows": rows}, indent=2)
                                       + "\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
