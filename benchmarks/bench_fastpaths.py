"""Benchmark: does each fast path earn its place? Each is timed against the simpler path it replaces.

* ``topk``: :func:`sketchprune.topk.largest_k` on network-shaped score sets and single tensors,
  with each path switched off in turn (merge of small pieces, the one-``kthvalue`` finish of
  small sets, the sample bracket; what remains is the radix select), best of ``--repeats``,
  interleaved, as ratios to the default.
* ``conv_as_matmul``: float64 SynFlow rounds on VGG-16-BN and ResNet-20 with and without
  :func:`sketchprune.methods._conv_as_matmul.convs_as_matmuls`, same process, interleaved.
* ``mallopt`` (not in the default parts: minutes and a few GB): top-k over ``--mallopt-sizes``
  float32 scores (above ``topk.CACHE_LIMIT``) with and without the opt-in
  :func:`sketchprune.topk.pin_mmap_threshold`, a fresh process per run, interleaved: seconds and
  extra resident memory (peak, and still held after the call; the bool mask included).

Run: ``python benchmarks/bench_fastpaths.py [--repeats 3] [--parts topk,conv_as_matmul,mallopt]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import time
import warnings

import torch

from sketchprune import topk

VARIANTS = {
    "default": {},
    "no-merge": {"MERGE_LIMIT": 0},
    "no-finish": {"FINISH_LIMIT": 0},
    "no-bracket": {"BRACKET": False},
}


def _shapes(model_name: str) -> list[torch.Size]:
    from sketchprune import models
    from sketchprune.pruning import prunable_parameters

    return [p.shape for p in prunable_parameters(models.create(model_name)).values()]


@contextlib.contextmanager
def _patched(values: dict):
    old = {k: getattr(topk, k) for k in values}
    for k, v in values.items():
        setattr(topk, k, v)
    try:
        yield
    finally:
        for k, v in old.items():
            setattr(topk, k, v)


def bench_topk(repeats: int) -> None:
    g = torch.Generator().manual_seed(0)
    cases = {
        "resnet20 layers f64": [torch.rand(s, generator=g, dtype=torch.float64) for s in _shapes("resnet20")],
        "vgg16 layers f64": [torch.rand(s, generator=g, dtype=torch.float64) for s in _shapes("vgg16")],
        "1 x 2^15 f32": [torch.rand(1 << 15, generator=g)],
        "1 x 1e6 f32": [torch.rand(10**6, generator=g)],
        "1 x 1e7 f32": [torch.rand(10**7, generator=g)],
    }
    print(f"{'case':>22} " + " ".join(f"{v:>11}" for v in VARIANTS) + "   (seconds, then x default)")
    for name, tensors in cases.items():
        flat = [t.reshape(-1) for t in tensors]
        k = round(0.01 * sum(t.numel() for t in flat))
        best = {v: float("inf") for v in VARIANTS}
        ref = None
        for _ in range(repeats):
            for v, values in VARIANTS.items():
                outs = [torch.zeros(t.numel(), dtype=torch.bool) for t in flat]
                with _patched(values):
                    t0 = time.perf_counter()
                    topk.largest_k([t.numel() for t in flat], lambda j: flat[j], k, outs)
                    best[v] = min(best[v], time.perf_counter() - t0)
                got = torch.cat(outs)
                ref = got if ref is None else ref
                assert torch.equal(got, ref), f"{v} changed the mask on {name}"
        print(f"{name:>22} " + " ".join(f"{best[v]:>11.4f}" for v in VARIANTS))
        print(f"{'':>22} " + " ".join(f"{best[v] / best['default']:>10.2f}x" for v in VARIANTS))


def bench_conv_as_matmul(repeats: int, rounds: int = 10) -> None:
    from sketchprune import models, prune
    from sketchprune.methods import _conv_as_matmul as conv_as_matmul
    from sketchprune.methods import synflow as synflow_module

    print(f"\n{'SynFlow float64':>22} {'rounds':>7} {'with':>9} {'without':>9} {'speed-up':>9}")
    for name in ("vgg16_bn", "resnet20"):
        torch.manual_seed(0)
        model = models.create(name)
        best = {"with": float("inf"), "without": float("inf")}
        masks = {}
        for _ in range(repeats):
            for variant in best:
                swap = conv_as_matmul.convs_as_matmuls if variant == "with" else (lambda m: contextlib.nullcontext())
                old, synflow_module.convs_as_matmuls = synflow_module.convs_as_matmuls, swap
                try:
                    t0 = time.perf_counter()
                    masks[variant] = prune(model, "synflow", 0.01, iterations=rounds)
                    best[variant] = min(best[variant], time.perf_counter() - t0)
                finally:
                    synflow_module.convs_as_matmuls = old
        same = all(torch.equal(masks["with"][n], masks["without"][n]) for n in masks["with"])
        print(f"{name:>22} {rounds:>7} {best['with']:>9.2f} {best['without']:>9.2f} "
              f"{best['without'] / best['with']:>8.2f}x  same masks: {same}")


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1]) / 1024
    return 0.0


def mallopt_child(variant: str, n: int) -> None:
    """One top-k selection of ``n`` scores in this fresh process, printed as one JSON line."""
    from sketchprune import select

    torch.set_num_threads(1)
    scores = torch.rand(n, generator=torch.Generator().manual_seed(0))
    select(scores[:1000].clone(), 0.1)  # lazy initialisation outside the measurement
    if variant == "pinned":
        assert topk.pin_mmap_threshold(), "not glibc: nothing to compare"
    before = _status_mb("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:  # reset VmHWM to the current RSS
        f.write("5")
    t0 = time.perf_counter()
    mask = select(scores, 0.1)
    seconds = time.perf_counter() - t0
    row = {"seconds": seconds, "peak_extra_mb": _status_mb("VmHWM") - before,
           "held_extra_mb": _status_mb("VmRSS") - before}
    assert int(torch.count_nonzero(mask)) == round(0.1 * n)
    print(json.dumps(row))


def bench_mallopt(sizes: list[int], repeats: int) -> None:
    print(f"\n{'top-k, density 0.1':>22} {'variant':>9} {'seconds':>8} {'peak MB':>8} {'held MB':>8} {'scores MB':>9}")
    for n in sizes:
        for _ in range(repeats):
            for variant in ("default", "pinned"):
                out = subprocess.run([sys.executable, __file__, "--mallopt-child", variant, str(n)],
                                     capture_output=True, text=True, check=True)
                r = json.loads(out.stdout)
                print(f"{n:>22.0e} {variant:>9} {r['seconds']:>8.2f} {r['peak_extra_mb']:>8.0f} "
                      f"{r['held_extra_mb']:>8.0f} {n * 4 / 2**20:>9.0f}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--parts", default="topk,conv_as_matmul")
    ap.add_argument("--mallopt-sizes", default="2e8,5e8", help="score counts of the mallopt part")
    ap.add_argument("--mallopt-child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.mallopt_child:
        mallopt_child(args.mallopt_child[0], int(float(args.mallopt_child[1])))
        return
    torch.set_num_threads(2)
    warnings.simplefilter("ignore")  # layer collapse at 10 rounds is expected and beside the point
    parts = args.parts.split(",")
    if "topk" in parts:
        bench_topk(args.repeats)
    if "conv_as_matmul" in parts:
        bench_conv_as_matmul(args.repeats)
    if "mallopt" in parts:
        bench_mallopt([int(float(x)) for x in args.mallopt_sizes.split(",")], min(args.repeats, 2))


if __name__ == "__main__":
    main()
