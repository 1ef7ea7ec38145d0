"""Benchmark: select() on 1e6 / 1e7 / 1e8 float32 scores against torch.topk, time and peak memory.

Times are taken in this one process, interleaving torch.topk and each select() mode (best of
``--repeats``), and reported as ratios to torch.topk because the machine is shared and noisy.
Peak extra memory (VmHWM above the RSS held before the call, scores included in neither) is
measured in a fresh child process per case. ``--huge`` adds the 1e9 case (4 GB of scores; our
modes only). Run: ``python benchmarks/bench_select.py [--sizes 1e6,1e7,1e8] [--huge]``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import torch

DENSITY = 0.1
CASES = {
    "torch.topk": None,
    "topk": {"mode": "topk"},
    "sample-exact": {"mode": "sample", "scheme": "exact"},
    "poisson": {"mode": "sample", "scheme": "poisson"},
    "iid": {"mode": "sample", "scheme": "iid"},
}


def call(case: str, scores: torch.Tensor) -> None:
    from sketchprune import select

    if case == "torch.topk":
        torch.topk(scores, round(DENSITY * scores.numel()), sorted=False)
    else:
        select(scores, DENSITY, generator=torch.Generator().manual_seed(0), **CASES[case])


def _rss_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1])
    return 0


def child(case: str, n: int) -> None:
    """Run one case in this (fresh) process and print its peak extra memory in MB."""
    torch.set_num_threads(2)
    scores = torch.rand(n, generator=torch.Generator().manual_seed(0))
    import sketchprune  # noqa: F401  (imported before the baseline reading)

    call(case, scores[:1000].clone())  # warm up lazy initialisation outside the measurement
    before = _rss_kb("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:  # reset VmHWM to the current RSS
        f.write("5")
    t0 = time.perf_counter()
    call(case, scores)
    secs = time.perf_counter() - t0
    peak = _rss_kb("VmHWM")
    print(json.dumps({"extra_mb": (peak - before) / 1024, "scores_mb": n * 4 / 2**20, "seconds": secs}))


def memory(case: str, n: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", case, str(n)], capture_output=True, text=True)
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr else "failed"}
    return json.loads(out.stdout)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1e6,1e7,1e8")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--huge", action="store_true", help="also the 1e9 case (ours only; needs ~7 GB)")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]))
        return
    torch.set_num_threads(2)
    rows = []
    for n in [int(float(s)) for s in args.sizes.split(",")]:
        scores = torch.rand(n, generator=torch.Generator().manual_seed(0))
        best = {c: float("inf") for c in CASES}
        for _ in range(args.repeats):
            for c in CASES:
                t0 = time.perf_counter()
                call(c, scores)
                best[c] = min(best[c], time.perf_counter() - t0)
        for c in CASES:
            mem = memory(c, n)
            rows.append({"n": n, "case": c, "seconds": best[c], "vs_torch_topk": best[c] / best["torch.topk"],
                         "extra_mb": mem.get("extra_mb"), "extra_vs_scores": mem.get("extra_mb", 0) / (n * 4 / 2**20)})
            print(json.dumps(rows[-1]), flush=True)
        del scores
    if args.huge:
        n = 10**9
        for c in ("topk", "sample-exact"):
            mem = memory(c, n)
            rows.append({"n": n, "case": c, "seconds": mem.get("seconds"), "extra_mb": mem.get("extra_mb"),
                         "extra_vs_scores": (mem.get("extra_mb") or 0) / (n * 4 / 2**20)})
            print(json.dumps(rows[-1]), flush=True)
    print(f"\n{'n':>12} {'case':>14} {'seconds':>9} {'x topk':>7} {'extra MB':>9} {'x scores':>8}")
    for r in rows:
        print(f"{r['n']:>12} {r['case']:>14} {r['seconds']:>9.3f} {r.get('vs_torch_topk', float('nan')):>7.2f} "
              f"{(r['extra_mb'] or float('nan')):>9.1f} {r['extra_vs_scores']:>8.2f}")


if __name__ == "__main__":
    main()
