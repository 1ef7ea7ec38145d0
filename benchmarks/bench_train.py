"""Benchmark: time per training step, masked vs dense vs forward-multiply masking (torch prune).

MLP and VGG-11-BN at batch 64, SGD with momentum, density 0.1. All variants run interleaved in
this one process (best of ``--steps`` after warm-up); ratios are to the dense step.
Run: ``python benchmarks/bench_train.py [--device cuda]``.
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
import torch.nn.functional as F

from sketchprune import models, prune


def step_time(model, x, y, steps: int, device) -> float:
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    best = float("inf")  # best step: the machine is shared, the minimum is the least disturbed
    for i in range(steps + 2):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= 2:
            best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(2)
    dev = torch.device(args.device)
    print(f"{'model':>8} {'dense ms':>9} {'masked ms':>9} {'x dense':>8} {'fwd-mult ms':>11} {'x dense':>8}")
    for name in ("mlp", "vgg11_bn"):
        torch.manual_seed(0)
        dense = models.create(name).to(dev)
        masks = prune(dense, "magnitude", 0.1)
        masked = copy.deepcopy(dense)
        handle = masks.apply(masked)
        fwd = copy.deepcopy(dense)
        masks.to_torch_prune(fwd)
        x, y = torch.randn(64, 3, 32, 32, device=dev), torch.randint(0, 10, (64,), device=dev)
        t = {"dense": float("inf"), "masked": float("inf"), "fwd": float("inf")}
        steps = args.steps if name == "mlp" else max(3, args.steps // 4)
        for _ in range(args.rounds):  # interleave to share the machine's noise
            for k, m in (("dense", dense), ("masked", masked), ("fwd", fwd)):
                t[k] = min(t[k], step_time(m, x, y, steps, dev))
        handle.remove()
        print(f"{name:>8} {t['dense'] * 1e3:>9.2f} {t['masked'] * 1e3:>9.2f} {t['masked'] / t['dense']:>8.3f} "
              f"{t['fwd'] * 1e3:>11.2f} {t['fwd'] / t['dense']:>8.3f}", flush=True)


if __name__ == "__main__":
    main()
