"""Benchmark: time per training step, masked vs dense vs forward-multiply masking (torch prune).

MLP and VGG-11-BN at batch 64, SGD with momentum, density 0.1. All variants run interleaved in
this one process (best of ``--steps`` after warm-up); ratios are to the dense step.
Run: ``python benchmarks/bench_train.py [--device cuda]``.

``--compare OLD_SRC [--against NEW_SRC]`` times two copies of the library side by side: worker
processes import ``sketchprune`` from each ``src`` folder in turn (alternating, ``--rounds``
times, best of all) and measure the masked and dense steps, a dense step while masks are applied
to another model (what an optimizer of unmasked parameters pays for ``Masks.apply``), an
optimizer step alone (that cost without the arithmetic around it), and ``train()`` end to end on the E5 MLP on MNIST-1D (masked at density 0.1, checkpoint and metrics
written: every built-in callback of the loop). It prints each figure for both and the ratio.
Run: ``python benchmarks/bench_train.py --compare /path/to/old/src``.

``--dst`` times dynamic sparse training (:mod:`sketchprune.dst`): ``train()`` of the same masked
model (magnitude, density 0.1) with the mask kept static and moved by ``set`` and ``rigl`` at
``dst_interval=100`` (updates at every 100th step over the whole run, a constant 30 %), on the E5 MLP
(``mlp`` depth 5 width 100, MNIST-1D-shaped inputs of length 40, batch 128, Adam) and VGG-11-BN
(CIFAR-shaped random inputs, batch 32, SGD with momentum): the variants alternate in one process,
best of ``--rounds`` (ten times as many for the MLP); it prints the per-step time of each, the
ratio to static, and the time the updater itself took at its update steps amortized over the
interval (on a shared machine the end-to-end ratio of the small MLP swings by more than the
updater's cost; the amortized figure is the direct one). ``--json FILE`` keeps them.
Run: ``python benchmarks/bench_train.py --dst [--rounds 3] [--threads 1] [--json FILE]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def step_time(model, x, y, steps: int, device) -> float:
    import torch
    import torch.nn.functional as F

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


def table(args: argparse.Namespace) -> None:
    """The in-process table: dense, masked and forward-multiply steps of each model."""
    import copy

    import torch

    from sketchprune import models, prune

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


def worker(args: argparse.Namespace) -> dict[str, float]:
    """One process's figures (seconds) for the library it imported: best of its own repeats."""
    import copy

    import torch

    import sketchprune
    from sketchprune import data, models, prune
    from sketchprune.train import TrainConfig, train

    assert Path(sketchprune.__file__).resolve().is_relative_to(Path(args.src).resolve()), sketchprune.__file__
    dev = torch.device(args.device)
    times = {f"optimizer.step() alone, 6 x Linear(100, 100): {k}": v  # first: before any masks in this process
             for k, v in optimizer_step_alone(args).items()}
    for name in ("mlp", "vgg11_bn"):
        torch.manual_seed(0)
        dense = models.create(name).to(dev)
        masked = copy.deepcopy(dense)
        masks = prune(dense, "magnitude", 0.1)
        x, y = torch.randn(64, 3, 32, 32, device=dev), torch.randint(0, 10, (64,), device=dev)
        steps = args.steps if name == "mlp" else max(3, args.steps // 4)
        times[f"{name} dense step, no masks applied"] = step_time(dense, x, y, steps, dev)
        handle = masks.apply(masked)
        times[f"{name} masked step"] = step_time(masked, x, y, steps, dev)
        times[f"{name} dense step, masks applied to another model"] = step_time(dense, x, y, steps, dev)
        handle.remove()
    ds = data.load("mnist1d", samples=10000, train_split=0.8)
    cfg = TrainConfig(epochs=args.epochs, optimizer="adam", lr=1e-3, weight_decay=0.0, batch_size=128,
                      lr_schedule="constant")
    best = float("inf")
    for _ in range(2):
        torch.manual_seed(0)
        model = models.create("mlp", input_shape=ds.input_shape, num_classes=10, width=100, depth=5)
        masks = prune(model, "magnitude", 0.1)
        with tempfile.TemporaryDirectory() as out:
            t0 = time.perf_counter()
            train(model, ds, cfg, masks=masks, out=out, device=args.device, seed=0)
            best = min(best, time.perf_counter() - t0)
    times[f"E5 MLP, MNIST-1D: train() per epoch ({args.epochs} epochs)"] = best / args.epochs
    return times


def optimizer_step_alone(args: argparse.Namespace) -> dict[str, float]:
    """An SGD step over zero gradients and nothing else, so what ``Masks.apply`` adds to an optimizer
    step shows: on an unmasked model before, beside and after masks on another model, and masked."""
    import torch
    from torch import nn

    from sketchprune import prune

    def net() -> nn.Module:
        torch.manual_seed(0)
        return nn.Sequential(*[nn.Linear(100, 100) for _ in range(6)])

    def cost(model: nn.Module) -> float:
        opt = torch.optim.SGD(model.parameters(), lr=0.0)
        for p in model.parameters():
            p.grad = torch.zeros_like(p)
        best = float("inf")
        for _ in range(30):
            t0 = time.perf_counter()
            for _ in range(100):
                opt.step()
            best = min(best, (time.perf_counter() - t0) / 100)
        return best

    masked, plain = net(), net()
    times = {"unmasked, no masks in the process": cost(plain)}
    handle = prune(masked, "magnitude", 0.1).apply(masked)
    times["unmasked, masks applied to another model"] = cost(plain)
    times["masked"] = cost(masked)
    handle.remove()
    times["unmasked, after the masks were removed"] = cost(plain)
    return times


def compare(args: argparse.Namespace) -> None:
    """Alternate worker processes on the two libraries; print best-of figures and new/old ratios."""
    libs = {"old": str(Path(args.compare).resolve()), "new": str(Path(args.against).resolve())}
    env = {**os.environ, "SKETCHPRUNE_DATA": os.environ.get("SKETCHPRUNE_DATA", tempfile.mkdtemp(prefix="bench-data-"))}
    best: dict[str, dict[str, float]] = {"old": {}, "new": {}}
    for r in range(args.rounds):
        for which in (("old", "new") if r % 2 == 0 else ("new", "old")):  # alternate who goes first
            cmd = [sys.executable, __file__, "--worker", "--src", libs[which], "--device", args.device,
                   "--steps", str(args.steps), "--epochs", str(args.epochs), "--threads", str(args.threads)]
            res = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout)
            for k, v in res.items():
                best[which][k] = min(best[which].get(k, float("inf")), v)
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    print(f"old: {libs['old']}\nnew: {libs['new']}\n(best of {args.rounds} alternating processes, "
          f"{args.threads} thread(s), {args.device})")
    width = max(len(k) for k in best["new"])
    print(f"{'':<{width}}  {'old ms':>9}  {'new ms':>9}  {'new/old':>7}")
    for k in best["new"]:
        o, n = best["old"][k] * 1e3, best["new"][k] * 1e3
        print(f"{k:<{width}}  {o:>9.4f}  {n:>9.4f}  {n / o:>7.3f}")


def dst_cost(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """Per model, seconds per step of train() with the mask static, moved by set and by rigl (see the
    module docstring), and the updaters' own seconds per update step."""
    import copy

    import torch

    from sketchprune import dst, models, prune
    from sketchprune.data import Dataset
    from sketchprune.train import TrainConfig, train

    out: dict[str, dict[str, float]] = {}
    cases = (("E5 MLP (mlp 5 x 100, input 40)", lambda: models.create("mlp", input_shape=(40,), width=100, depth=5),
              (40,), 400, 128, TrainConfig(epochs=1, optimizer="adam", lr=1e-3, weight_decay=0.0, batch_size=128), 10),
             ("VGG-11-BN (3 x 32 x 32)", lambda: models.create("vgg11_bn"), (3, 32, 32), 100, 32,
              TrainConfig(epochs=1, optimizer="sgd", lr=0.01, batch_size=32), 1))
    for label, make, shape, steps, batch, cfg, more in cases:  # more: the MLP is cheap, more rounds against noise
        g = torch.Generator().manual_seed(0)
        n = steps * batch
        data = Dataset("bench", torch.randn((n, *shape), generator=g), torch.randint(0, 10, (n,), generator=g),
                       torch.randn((10, *shape), generator=g), torch.randint(0, 10, (10,), generator=g), 10)
        torch.manual_seed(0)
        init = make()
        masks = prune(init, "magnitude", 0.1)
        best = {v: float("inf") for v in ("static", "set", "rigl")}
        update = {v: float("inf") for v in ("set", "rigl")}
        for r in range(args.rounds * more):
            order = list(best) if r % 2 == 0 else list(best)[::-1]  # alternate who goes first
            for variant in order:
                model = copy.deepcopy(init)
                up = dst.updater(variant, interval=100, start=0.0, end=1.0, schedule="constant")
                spent = [0.0]
                if up is not None:  # the updater's own time at its update steps
                    inner = up.on_step_end

                    def timed(state, inner=inner, up=up, spent=spent) -> None:
                        t0 = time.perf_counter()
                        inner(state)
                        if up.schedule.is_update(state.step):
                            spent[0] += time.perf_counter() - t0

                    up.on_step_end = timed
                t0 = time.perf_counter()
                train(model, data, cfg, masks=masks, device=args.device, callbacks=[up] if up else [])
                best[variant] = min(best[variant], (time.perf_counter() - t0) / steps)
                if up is not None:
                    update[variant] = min(update[variant], spent[0] / up.updates)
        out[label] = {"static s/step": best["static"], "set s/step": best["set"], "rigl s/step": best["rigl"],
                      "set s/update": update["set"], "rigl s/update": update["rigl"]}
        print(f"{label}: static {best['static'] * 1e3:.3f} ms/step; "
              + "; ".join(f"{v} {best[v] * 1e3:.3f} ms/step ({best[v] / best['static']:.3f} x static), "
                          f"{update[v] * 1e3:.1f} ms per update = {update[v] / 100 / best['static'] * 100:.2f} % "
                          "of a static step amortized over 100" for v in ("set", "rigl")), flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--compare", metavar="OLD_SRC", help="time this library's src folder against --against")
    ap.add_argument("--against", metavar="NEW_SRC", default=str(Path(__file__).resolve().parents[1] / "src"))
    ap.add_argument("--epochs", type=int, default=3, help="epochs of the end-to-end train() timing (--compare)")
    ap.add_argument("--dst", action="store_true", help="time set and rigl against static (dst_interval=100)")
    ap.add_argument("--json", metavar="FILE", help="with --dst: write the figures to FILE")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--src", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.src:
        sys.path.insert(0, args.src)  # before any import of sketchprune
    import torch

    torch.set_num_threads(args.threads)
    if args.worker:
        print(json.dumps(worker(args)))
    elif args.dst:
        figures = dst_cost(args)
        if args.json:
            Path(args.json).write_text(json.dumps({"threads": args.threads, "rounds": args.rounds,
                                                   "device": args.device, "seconds": figures}, indent=1) + "\n")
    elif args.compare:
        compare(args)
    else:
        table(args)


if __name__ == "__main__":
    main()
