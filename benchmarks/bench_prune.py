"""Benchmark: every pruning method's time and peak memory on VGG-16-BN and ResNet-20 (CPU, 2 threads),
beside the authors' reference code where it runs here.

Each case runs in a fresh child process (for its peak RSS): ``prune(model, method, 0.01)`` with
the method's default rounds, on 100 CIFAR-shaped inputs with random labels for the methods that
use data. With ``--refs DIR`` (a folder holding checkouts of the reference repositories, named as
on GitHub: ``Synaptic-Flow``, ``NTK-SAP``, ``px-ntk-pruning``, ``prospr``, ``force``, ``PHEW``), the
reference implementation of each method is timed the same way and the ratio reference / ours is
reported (above 1: ours is faster). The references run on their own models where they need their
own masked layers (Synaptic-Flow, NTK-SAP, PX: their ``lottery`` VGG-16-BN / ResNet-20) and on ours
otherwise (ProsPr, FORCE). PHEW's code does not run under NumPy 2, and ``imp`` trains, so neither
reference is timed here.

Run: ``python benchmarks/bench_prune.py [--refs DIR] [--repeats 1] [--cases synflow-resnet20,...]
[--json benchmarks/results/prune.json] [--timeout 900]``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

def methods_to_time() -> list[str]:
    """Every registered method with a weight form that prunes without training (from the registry)."""
    from sketchprune import methods

    return [n for n in methods.names("weights") if not methods.get(n).runner.needs_trainer]


MODELS = ["vgg16_bn", "resnet20"]
REFERENCE = {  # method -> (repository, how its code is called)
    "random": "Synaptic-Flow", "magnitude": "Synaptic-Flow", "snip": "Synaptic-Flow", "grasp": "Synaptic-Flow",
    "synflow": "Synaptic-Flow", "ntk_sap": "NTK-SAP", "px": "px-ntk-pruning", "prospr": "prospr",
    "force": "force", "iterative_snip": "force",
}
NOT_RUNNABLE = {"phew": "PHEW's phew_utils calls int() on 1-element arrays, an error under NumPy 2 (pinned here)"}
DENSITY = 0.01


def batch():
    import torch

    g = torch.Generator().manual_seed(0)
    return torch.randn(100, 3, 32, 32, generator=g), torch.randint(0, 10, (100,), generator=g)


def ours(method: str, arch: str):
    """The timed call (after imports and model construction, which are not timed)."""
    import warnings

    import torch

    from sketchprune import methods, models, prune

    warnings.simplefilter("ignore")
    methods.names()  # the one-time scan for plugins belongs to start-up, as the reference's imports do
    torch.manual_seed(0)
    model = models.create(arch)
    x, y = batch()
    return lambda: prune(model, method, DENSITY, data=[(x, y)])


def reference(method: str, arch: str, refs: Path):
    """The reference's timed call, set up the same way."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    x, y = batch()
    repo = refs / REFERENCE[method]
    if REFERENCE[method] in ("Synaptic-Flow", "NTK-SAP"):
        sys.path[:0] = [str(repo)]
        from Models import lottery_resnet, lottery_vgg
        from Pruners import pruners
        from prune import prune_loop
        from Utils import generator

        model = (lottery_vgg.vgg16_bn if arch == "vgg16_bn" else lottery_resnet.resnet20)((3, 32, 32), 10)
        name = {"random": "Rand", "magnitude": "Mag", "snip": "SNIP", "grasp": "GraSP", "synflow": "SynFlow",
                "ntk_sap": "NTKSAP"}[method]
        kwargs = {"ntksap_epsilon": 0.01, "ntksap_R": 5} if method == "ntk_sap" else {}
        pruner = getattr(pruners, name)(generator.masked_parameters(model, False, False, False), **kwargs)
        from sketchprune import methods

        epochs = methods.get(method).rounds  # the reference loops our default rounds
        return lambda: prune_loop(model, nn.CrossEntropyLoss(), pruner, [(x, y)], "cpu", DENSITY, "exponential",
                                  "global", epochs, train_mode=method == "ntk_sap")
    elif method == "px":
        sys.path[:0] = [str(repo)]
        from globals import CONFIG
        from lib.generator import masked_parameters
        from lib.models import lottery_resnet, lottery_vgg
        from lib.pruners import PX

        CONFIG.dataset = "ImageNet"  # a named set without the balanced-subset step: PX scores the batches given
        model = (lottery_vgg.vgg16_bn if arch == "vgg16_bn" else lottery_resnet.resnet20)(10)
        pruner = PX(masked_parameters(model))
        model.eval()

        def run() -> None:
            for r in range(100):
                pruner.score(model, nn.CrossEntropyLoss(), [(x, y)], "cpu")
                pruner.mask(DENSITY ** ((r + 1) / 100), "global")

        return run
    elif method == "prospr":
        sys.path[:0] = [str(repo)]
        import prospr
        from prospr.utils import pruning_filter_factory

        from sketchprune import models

        model = models.create(arch)
        return lambda: prospr.prune(model, 1 - DENSITY, [(x, y)], pruning_filter_factory(10, False), 3, 0.1, 0.0,
                                    "full", False, False)
    elif method in ("force", "iterative_snip"):
        sys.path[:0] = [str(repo)]
        from pruning.pruning_algos import iterative_pruning

        from sketchprune import models

        model = models.create(arch)
        return lambda: iterative_pruning(model, [(x, y)], "cpu", DENSITY, prune_method=3 if method == "force" else 1,
                                         num_steps=10, mode="exp", num_batches=1)
    else:
        raise SystemExit(f"no reference for {method}")


def child(impl: str, method: str, arch: str, refs: str | None) -> None:
    import contextlib
    import io

    import torch

    torch.set_num_threads(2)
    with contextlib.redirect_stdout(io.StringIO()):  # reference code prints progress
        run = ours(method, arch) if impl == "ours" else reference(method, arch, Path(refs))  # type: ignore[arg-type]
        t0 = time.perf_counter()
        run()
        secs = time.perf_counter() - t0
    with open("/proc/self/status") as f:
        peak = next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024
    print(json.dumps({"seconds": secs, "peak_mb": peak}))


def measure(impl: str, method: str, arch: str, refs: str | None, timeout: float) -> dict:
    cmd = [sys.executable, __file__, "--child", impl, method, arch] + (["--refs", refs] if refs else [])
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"seconds": None, "peak_mb": None, "error": f"over {timeout:.0f} s"}
    if out.returncode != 0:
        lines = out.stderr.strip().splitlines()
        return {"seconds": None, "peak_mb": None, "error": lines[-1][:160] if lines else f"exit {out.returncode}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--refs", help="folder of reference repository checkouts (optional)")
    ap.add_argument("--repeats", type=int, default=1, help="runs per variant, interleaved; the best time counts")
    ap.add_argument("--cases", default=",".join(f"{m}-{a}" for m in methods_to_time() for a in MODELS))
    ap.add_argument("--json", help="write the rows to this JSON file as well")
    ap.add_argument("--timeout", type=float, default=900.0)
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child[0], args.child[1], args.child[2], args.refs)
        return
    rows = []
    print(f"{'method':>15} {'model':>9} {'ours s':>8} {'ref s':>8} {'ref/ours':>8} {'ours MB':>8} {'ref MB':>8}  note")
    for case in args.cases.split(","):
        method, arch = case.rsplit("-", 1)
        impls = ["ours"] + (["ref"] if args.refs and method in REFERENCE else [])
        best: dict[str, dict] = {}
        for _ in range(args.repeats):
            for impl in impls:
                o = measure(impl, method, arch, args.refs, args.timeout)
                b = best.setdefault(impl, o)
                if o["seconds"] is not None and (b["seconds"] is None or o["seconds"] < b["seconds"]):
                    best[impl] = o
        o, r = best["ours"], best.get("ref", {})
        ratio = r["seconds"] / o["seconds"] if r.get("seconds") and o.get("seconds") else None
        row = {"method": method, "model": arch, "ours_seconds": o.get("seconds"), "ours_peak_mb": o.get("peak_mb"),
               "ref_seconds": r.get("seconds"), "ref_peak_mb": r.get("peak_mb"), "ref_over_ours": ratio,
               "reference": REFERENCE.get(method),
               "note": o.get("error") or r.get("error") or NOT_RUNNABLE.get(method, "")}
        rows.append(row)

        def f(v, fmt):
            return format(v, fmt) if v is not None else "-"

        print(f"{method:>15} {arch:>9} {f(row['ours_seconds'], '8.2f')} {f(row['ref_seconds'], '8.2f')} "
              f"{f(ratio, '8.2f')} {f(row['ours_peak_mb'], '8.0f')} {f(row['ref_peak_mb'], '8.0f')}  {row['note']}",
              flush=True)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"density": DENSITY, "threads": 2, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
