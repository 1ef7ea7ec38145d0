"""Benchmark: prune() time and peak RSS on CPU (2 threads) against a baseline written the common way.

The baseline follows the SynFlow code base's style: float32 scores, a full-size global
``kthvalue`` every round, and float masks multiplied in forward (``torch.nn.utils.prune``).
Each case runs in a fresh child process (for its peak RSS); ratios are baseline / ours. SynFlow
also reports ``floor-f64`` / ``floor-f32``: the plain autograd forward and backward alone, every
round, with no scoring or selection (ours beats floor-f64 where ``sketchprune.matmul_conv`` applies).
Run: ``python benchmarks/bench_prune.py [--rounds 100] [--repeats 3] [--cases synflow-vgg16_bn,...]``.
"""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import sys
import time

import torch
import torch.nn.functional as F
from torch.nn.utils import prune as torch_prune


def baseline(model, method, density, rounds, x, y):
    """Common-implementation pruner: masked forward, float32 scores, global kthvalue per round."""
    model = copy.deepcopy(model)
    model.eval()
    layers = [(m, "weight") for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    for m, a in layers:
        torch_prune.identity(m, a)
    if method == "synflow":
        with torch.no_grad():
            signs = {k: torch.sign(v) for k, v in model.state_dict().items()}
            for v in model.state_dict().values():
                if v.is_floating_point():
                    v.abs_()
    for r in range(1, rounds + 1):
        for p in model.parameters():
            p.grad = None
        if method == "synflow":
            model(torch.ones(1, *x.shape[1:])).sum().backward()
            scores = [(m.weight_orig.grad * m.weight_orig).abs() for m, _ in layers]
        elif method == "snip":
            F.cross_entropy(model(x), y).backward()
            scores = [(m.weight_orig.grad * m.weight_orig).abs() for m, _ in layers]
        elif method == "grasp":
            ws = [m.weight_orig for m, _ in layers]
            g = torch.autograd.grad(F.cross_entropy(model(x) / 200, y), ws)
            gg = torch.autograd.grad(F.cross_entropy(model(x) / 200, y), ws, create_graph=True)
            sum((a * b).sum() for a, b in zip(g, gg)).backward()
            scores = [w.detach() * w.grad for w in ws]
        else:
            scores = [m.weight_orig.detach().abs() for m, _ in layers]
        flat = torch.cat([s.reshape(-1) for s in scores])
        k = int((1 - density ** (r / rounds)) * flat.numel())
        thr = flat.kthvalue(max(k, 1)).values
        for (m, _), s in zip(layers, scores):
            m.weight_mask.copy_((s > thr).float() * m.weight_mask)
    return model


def floor(model, dtype, rounds, shape):
    """What a plain autograd SynFlow pays per round before it ranks anything: the absolute
    model's batch-1 forward and backward (all weight gradients) in ``dtype``; no scores, no selection."""
    model = copy.deepcopy(model).to(dtype).eval()
    with torch.no_grad():
        for t in list(model.parameters()) + [b for b in model.buffers() if b.is_floating_point()]:
            t.abs_()
    ones = torch.ones(1, *shape, dtype=dtype)
    for _ in range(rounds):
        for p in model.parameters():
            p.grad = None
        model(ones).sum().backward()


def case(name: str, rounds: int):
    from sketchprune import models

    method, arch = name.split("-")
    torch.manual_seed(0)
    model = models.create(arch)
    x, y = torch.randn(128, 3, 32, 32), torch.randint(0, 10, (128,))
    r = rounds if method == "synflow" else 1
    return model, method, r, x, y


def child(impl: str, name: str, rounds: int) -> None:
    torch.set_num_threads(2)
    import warnings

    from sketchprune import prune

    warnings.simplefilter("ignore")
    model, method, r, x, y = case(name, rounds)
    t0 = time.perf_counter()
    if impl == "baseline":
        baseline(model, method, 0.01, r, x, y)
    elif impl.startswith("floor-"):
        floor(model, torch.float64 if impl == "floor-f64" else torch.float32, r, x.shape[1:])
    else:
        extra = ({"synflow_dtype": "float32"} if impl == "ours-f32"
                 else {"grasp_chunk": int(impl[len("ours-chunk"):])} if impl.startswith("ours-chunk") else {})
        prune(model, method, 0.01, iterations=r, data=[(x, y)], input_shape=(3, 32, 32), **extra)
    secs = time.perf_counter() - t0
    with open("/proc/self/status") as f:
        peak = next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024
    print(json.dumps({"seconds": secs, "peak_mb": peak}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=1, help="runs per variant, interleaved; the best time counts")
    ap.add_argument("--cases", default="synflow-vgg16_bn,synflow-resnet20,grasp-vgg16_bn,snip-vgg16_bn,magnitude-vgg16_bn")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child[0], args.child[1], int(args.child[2]))
        return
    print(f"{'case':>20} {'variant':>12} {'ours s':>8} {'base s':>8} {'speed-up':>8} {'ours MB':>8} {'base MB':>8}"
          f" {'mem ratio':>9}")
    # floor-*: the plain autograd batch-1 forward + backward alone (no scoring, no selection)
    variants = {"synflow": ("ours", "ours-f32", "floor-f64", "floor-f32"), "grasp": ("ours", "ours-chunk32")}
    for name in args.cases.split(","):
        res: dict[str, dict] = {}
        for _ in range(args.repeats):  # interleaved, best time of the repeats: the machine is noisy
            for impl in ("baseline", *variants.get(name.split("-")[0], ("ours",))):
                out = subprocess.run([sys.executable, __file__, "--child", impl, name, str(args.rounds)],
                                     capture_output=True, text=True)
                o = json.loads(out.stdout) if out.returncode == 0 else {"seconds": float("nan"), "peak_mb": float("nan")}
                best = res.setdefault(impl, o)
                best["seconds"], best["peak_mb"] = min(best["seconds"], o["seconds"]), max(best["peak_mb"], o["peak_mb"])
        b = res.pop("baseline")
        for impl, o in res.items():
            print(f"{name:>20} {impl:>12} {o['seconds']:>8.2f} {b['seconds']:>8.2f} {b['seconds'] / o['seconds']:>8.2f} "
                  f"{o['peak_mb']:>8.0f} {b['peak_mb']:>8.0f} {o['peak_mb'] / b['peak_mb']:>9.2f}", flush=True)


if __name__ == "__main__":
    main()
