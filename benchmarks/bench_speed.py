"""Benchmark: is the pruned network really faster? Structured, sparse (CSR) and 2:4, against dense.

* Structured: ResNet-20 and VGG-16-BN with 50 % and 25 % of the units kept (``prune_units``,
  sketch scores), beside Torch-Pruning's own magnitude pruner at the same fraction: parameters,
  MACs, inference latency at batch 1 and 128, one training step at batch 128 (SGD), each as a
  ratio to the dense model measured in the same run (interleaved, best of ``--repeats``).
* Unstructured export: a 4096 x 4096 Linear layer at densities 1 %, 2 %, 5 % and 10 %, dense
  matmul against ``sketchprune.export.sparse`` (CSR), batch 128.
* 2:4 (CUDA only): ``to_sparse_semi_structured`` against dense on the same layer.

Run: ``python benchmarks/bench_speed.py [--device cuda] [--repeats 20] [--parts structured,csr,nm]``.
"""

from __future__ import annotations

import argparse
import copy
import time
import warnings

import torch
import torch.nn.functional as F


def timed(fn, device, repeats: int) -> float:
    """Best wall time of ``fn()`` over ``repeats`` calls, after one warm-up."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best


def structured(device, repeats: int) -> None:
    import torch_pruning as tp

    from sketchprune import models
    from sketchprune.costs import costs
from sketchprune.pruning import prune_units

    print(f"{'model':>9} {'variant':>16} {'params':>6} {'MACs':>6} {'b1 inf':>7} {'b128 inf':>8} {'b128 step':>9}"
          "   (fractions of dense; times as dense / variant: above 1 is faster)")
    for name in ("resnet20", "vgg16_bn"):
        torch.manual_seed(0)
        dense = models.create(name).to(device)
        shape = dense.input_shape
        variants = {"dense": dense}
        for keep in (0.5, 0.25):
            variants[f"sketch {keep:.0%}"] = prune_units(dense, "sketch", keep).to(device)
            tpm = copy.deepcopy(dense)
            example = torch.randn(1, *shape, device=device)
            pruner = tp.pruner.MagnitudePruner(tpm, example, importance=tp.importance.MagnitudeImportance(p=1),
                                               pruning_ratio=1 - keep, ignored_layers=[tpm.fc if name == "resnet20"
                                                                                        else tpm.classifier])
            pruner.step()
            variants[f"torch-pruning {keep:.0%}"] = tpm
        x1, x128 = torch.randn(1, *shape, device=device), torch.randn(128, *shape, device=device)
        y128 = torch.randint(0, 10, (128,), device=device)
        times: dict[str, dict[str, float]] = {k: {} for k in variants}
        for _ in range(2):  # interleaved rounds: the machine is shared
            for k, m in variants.items():
                m.eval()
                with torch.no_grad():
                    t1 = timed(lambda m=m: m(x1), device, repeats)
                    t128 = timed(lambda m=m: m(x128), device, repeats)
                m.train()
                opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)

                def step(m=m, opt=opt) -> None:
                    opt.zero_grad()
                    F.cross_entropy(m(x128), y128).backward()
                    opt.step()

                ts = timed(step, device, max(2, repeats // 2))
                for key, v in (("b1", t1), ("b128", t128), ("step", ts)):
                    times[k][key] = min(times[k].get(key, float("inf")), v)
        base = costs(dense, shape)
        for k, m in variants.items():
            c = costs(m, shape)
            d = times["dense"]
            print(f"{name:>9} {k:>16} {c['params'] / base['params']:>6.3f} {c['macs'] / base['macs']:>6.3f} "
                  f"{d['b1'] / times[k]['b1']:>7.2f} {d['b128'] / times[k]['b128']:>8.2f} "
                  f"{d['step'] / times[k]['step']:>9.2f}", flush=True)


def csr(device, repeats: int) -> None:
    from torch import nn

    from sketchprune import Masks
    from sketchprune.export import sparse

    print(f"\n{'layer':>16} {'density':>8} {'dense ms':>9} {'CSR ms':>8} {'dense/CSR':>9} {'export keeps':>12}")
    torch.manual_seed(0)
    x = torch.randn(128, 4096, device=device)
    for density in (0.01, 0.02, 0.05, 0.10):
        layer = nn.Sequential(nn.Linear(4096, 4096)).to(device)
        keep = torch.rand(4096, 4096) < density
        masks = Masks({"0.weight": keep})
        masks.apply(layer)
        exported = sparse(layer, masks, example=x, measure=False)
        chosen = sparse(layer, masks, example=x)
        with torch.no_grad():
            td = timed(lambda: layer(x), device, repeats)
            ts = timed(lambda: exported(x), device, repeats)
        kept = "CSR" if type(chosen[0]).__name__ == "SparseLinear" else "dense"
        print(f"{'4096x4096':>16} {density:>8.2f} {td * 1e3:>9.2f} {ts * 1e3:>8.2f} {td / ts:>9.2f} {kept:>12}",
              flush=True)


def nm(device, repeats: int) -> None:
    if device.type != "cuda":
        print("\n2:4: needs CUDA (to_sparse_semi_structured); skipped on", device.type)
        return
    from torch.sparse import to_sparse_semi_structured

    from sketchprune.nm import nm_mask

    torch.manual_seed(0)
    w = torch.randn(4096, 4096, device=device, dtype=torch.float16)
    keep = nm_mask(w.abs(), 2, 4)
    ws = to_sparse_semi_structured(w * keep)
    x = torch.randn(4096, 128, device=device, dtype=torch.float16)
    td = timed(lambda: w @ x, device, repeats)
    ts = timed(lambda: ws @ x, device, repeats)
    print(f"\n2:4 4096x4096 fp16, batch 128: dense {td * 1e3:.3f} ms, 2:4 {ts * 1e3:.3f} ms, {td / ts:.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--parts", default="structured,csr,nm")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    if args.device == "cpu":
        torch.set_num_threads(2)
    device = torch.device(args.device)
    parts = args.parts.split(",")
    if "structured" in parts:
        structured(device, args.repeats)
    if "csr" in parts:
        csr(device, args.repeats)
    if "nm" in parts:
        nm(device, args.repeats)


if __name__ == "__main__":
    main()
