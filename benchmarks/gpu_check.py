"""The timings of ``gpu_check.sh``: one table, each row a case and its ratio to its baseline.

* SynFlow x100 on VGG-16-BN (float64 and float32);
* one epoch of ResNet-20 on CIFAR-shaped synthetic data (50,000 images), dense and with masks at
  density 0.1 (the masked step's overhead);
* structured ResNet-20 / VGG-16-BN at 50 % of the units against dense (inference, batch 1024),
  and a 4096 -> 4096 fp16 Linear on 8192 tokens at 2:4 against dense.

Then the stacked-training table (issue 22): time per network-step and per network-epoch of the E5
MLP (MNIST-1D), LeNet-5 (Fashion-MNIST) and ResNet-20 (CIFAR-10, and 28x28), one network at a time
(eager, bf16 autocast, channels-last, a CUDA graph) against ``sketchprune.stack`` (K = 16, 64) and
``torch.func`` ``vmap`` (bmm / grouped convolutions; eager, bf16, a CUDA graph), built by
``benchmarks/bench_grid.py``'s ``build``; and whether a stacked network trains bit for bit as it
does alone on this device (``train_stacked`` against ``train``, one epoch), with how far the vmap
engine's weights and accuracy land from one-at-a-time training.

Run: ``python benchmarks/gpu_check.py [--device cuda]`` (``--device cpu --quick`` checks the script;
``--only stack`` runs the stacked table alone).
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch
import torch.nn.functional as F


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def clock(fn, device) -> float:
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--quick", action="store_true", help="small sizes, to check the script on a CPU")
    ap.add_argument("--only", choices=("all", "stack"), default="all", help="stack: the stacked-training table only")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    device = torch.device(args.device)
    if args.only == "stack":
        stacked_table(args, device)
        return
    from sketchprune import data as datasets
    from sketchprune import models, prune
    from sketchprune.pruning import prune_units
    from sketchprune.train import TrainConfig, train

    rows = []
    torch.manual_seed(0)
    vgg = models.create("vgg16_bn", width=0.25 if args.quick else 1.0).to(device)
    rounds = 5 if args.quick else 100
    for dtype in ("float64", "float32"):
        t = clock(lambda: prune(vgg, "synflow", 0.01, iterations=rounds, synflow_dtype=dtype), device)
        rows.append((f"SynFlow x{rounds} VGG-16-BN {dtype}", t, None))
    n = 2000 if args.quick else 50000
    g = torch.Generator().manual_seed(0)
    data = datasets.Dataset("synthetic-cifar", torch.randn(n, 3, 32, 32, generator=g),
                            torch.randint(0, 10, (n,), generator=g), torch.randn(1000, 3, 32, 32, generator=g),
                            torch.randint(0, 10, (1000,), generator=g), 10, image=True)
    cfg = TrainConfig(epochs=1, batch_size=128, lr=0.05)
    net = models.create("resnet20")
    masks = prune(net, "magnitude", 0.1)
    times = {}
    for name, m in (("dense", None), ("masked", masks)):
        torch.manual_seed(0)
        model = models.create("resnet20")
        times[name] = train(model, data, cfg, masks=m, device=args.device)["wall_seconds"]
    rows.append(("ResNet-20 epoch, dense", times["dense"], None))
    rows.append(("ResNet-20 epoch, masked 0.1", times["masked"], times["dense"]))
    batch = 128 if args.quick else 1024
    x = torch.randn(batch, 3, 32, 32, device=device)
    for arch in ("resnet20", "vgg16_bn"):
        torch.manual_seed(0)
        dense = models.create(arch).to(device).eval()
        small = prune_units(dense, "sketch", 0.5).to(device).eval()
        with torch.no_grad():
            for m in (dense, small):
                m(x)
            td = min(clock(lambda: dense(x), device) for _ in range(10))
            ts = min(clock(lambda: small(x), device) for _ in range(10))
        rows.append((f"{arch} inference b{batch}, dense", td, None))
        rows.append((f"{arch} inference b{batch}, 50% units", ts, td))
    if device.type == "cuda":
        from torch.sparse import to_sparse_semi_structured

        from sketchprune.nm import nm_mask

        w = torch.randn(4096, 4096, device=device, dtype=torch.float16)
        ws = to_sparse_semi_structured(w * nm_mask(w.abs(), 2, 4))
        xx = torch.randn(8192, 4096, device=device, dtype=torch.float16)  # tokens x features, as in a Linear
        reps = lambda f: lambda: [f() for _ in range(20)]  # noqa: E731  (20 products per clock)
        dense_mm, sparse_mm = reps(lambda: F.linear(xx, w)), reps(lambda: F.linear(xx, ws))
        for _ in range(3):
            dense_mm(), sparse_mm()
        td = min(clock(dense_mm, device) for _ in range(5)) / 20
        ts = min(clock(sparse_mm, device) for _ in range(5)) / 20
        rows.append(("Linear 4096->4096 fp16 x8192, dense", td, None))
        rows.append(("Linear 4096->4096 fp16 x8192, 2:4", ts, td))
    name = torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu"
    print(f"\ndevice: {name}, torch {torch.__version__}")
    print(f"{'case':<40} {'ms':>10} {'baseline / case':>16}")
    for case, t, base in rows:
        print(f"{case:<40} {1000 * t:>10.3f} {(f'{base / t:.2f}' if base else '-'):>16}")
    if device.type != "cuda":
        print("(2:4 against dense: CUDA only, to_sparse_semi_structured)")
    stacked_table(args, device)


# model, options, input shape, batch, training steps per epoch of its data set
STACK_MODELS = [
    ("E5 MLP, MNIST-1D", "mlp", {"width": 100, "depth": 5}, (40,), 128, 63),
    ("LeNet-5, Fashion-MNIST", "lenet5", {}, (1, 28, 28), 128, 469),
    ("ResNet-20, Fashion-MNIST", "resnet20", {}, (1, 28, 28), 128, 469),
    ("ResNet-20, CIFAR-10", "resnet20", {}, (3, 32, 32), 128, 391),
]


def stacked_table(args, device) -> None:
    """Per network-step and per network-epoch, one at a time and stacked, with each option; then
    the bit-identity check. A variant that fails (memory, capture) is a row saying why."""
    import os
    import sys

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from bench_grid import best_time, build

    cuda = device.type == "cuda"
    variants = [("alone", 1, {}), ("alone", 1, {"bf16": True}), ("alone", 1, {"channels_last": True}),
                ("alone", 1, {"graph": True}), ("alone", 1, {"bf16": True, "channels_last": True, "graph": True})]
    for k in ((4,) if args.quick else (16, 64)):
        variants += [("stack", k, {}), ("stack", k, {"graph": True}), ("vmap", k, {}), ("vmap", k, {"bf16": True}),
                     ("vmap", k, {"graph": True}), ("vmap", k, {"bf16": True, "graph": True})]
    print(f"\nstacked training on {torch.cuda.get_device_name(0) if cuda else 'cpu'}: ms per network-step, "
          "s per network-epoch; x: the eager one-at-a-time step over this one")
    print(f"{'model':<26} {'engine':<6} {'K':>3} {'options':<24} {'ms/net-step':>11} {'s/net-epoch':>11} {'x':>6}")
    for label, model, options, shape, batch, steps in STACK_MODELS:
        if args.quick:
            options = {**options, "width": 4} if model == "resnet20" else options
        base = None
        for kind, k, opts in variants:
            if (opts.get("graph") and not cuda) or (opts.get("channels_last") and len(shape) != 3):
                continue
            name = "+".join(o for o in ("bf16", "channels_last", "graph") if opts.get(o)) or "eager"
            try:
                step = build(kind, model, options, shape, batch, k, device, **opts)
                t = best_time(step, 3 if args.quick else 20, device) / k
            except Exception as e:  # noqa: BLE001  (a row that says why, not a dead table)
                print(f"{label:<26} {kind:<6} {k:>3} {name:<24} failed: {type(e).__name__}: {str(e)[:60]}")
                if cuda:
                    torch.cuda.empty_cache()
                continue
            base = t if base is None else base
            print(f"{label:<26} {kind:<6} {k:>3} {name:<24} {t * 1e3:>11.3f} {t * steps:>11.3f} {base / t:>6.2f}",
                  flush=True)
            del step
            if cuda:
                torch.cuda.empty_cache()
    identity(args, device)


def identity(args, device) -> None:
    """One epoch of each network alone (``train``) and in a stack of 4 (``train_stacked``) on this
    device: bit-identical or not; and the vmap engine's distance from one-at-a-time training."""
    import copy

    from sketchprune import data as datasets
    from sketchprune import models, prune
    from sketchprune.stack import Job, train_stacked
    from sketchprune.train import TrainConfig, evaluate, train

    g = torch.Generator().manual_seed(0)
    n = 512 if args.quick else 4096
    for model, options, shape in (("mlp", {"width": 100, "depth": 5}, (40,)),
                                  ("resnet20", {"width": 4 if args.quick else 16}, (3, 32, 32))):
        x = torch.randn(n + 512, *shape, generator=g)
        y = (x.flatten(1) @ torch.randn(x[0].numel(), 10, generator=g)).argmax(1)
        ds = datasets.Dataset("synthetic", x[:n], y[:n], x[n:], y[n:], 10, image=len(shape) == 3)
        cfg = TrainConfig(epochs=1, batch_size=128, optimizer="adam", lr=1e-3, weight_decay=0.0)
        nets, masks = [], []
        for s in range(4):
            torch.manual_seed(s)
            net = models.create(model, input_shape=shape, **options)
            nets.append(net)
            masks.append(prune(net, "magnitude", 0.1))
        alone = []
        for s, (net, m) in enumerate(zip(nets, masks)):
            net = copy.deepcopy(net)
            train(net, ds, cfg, masks=m, seed=s, device=str(device))
            alone.append(net)
        jobs = [Job(copy.deepcopy(net), m, s) for s, (net, m) in enumerate(zip(nets, masks))]
        train_stacked(jobs, ds, cfg, device=str(device))
        same = all(torch.equal(a.state_dict()[p], j.model.state_dict()[p]) for a, j in zip(alone, jobs)
                   for p in a.state_dict())
        gap = max(float((a.state_dict()[p].float() - j.model.state_dict()[p].float()).abs().max())
                  for a, j in zip(alone, jobs) for p in a.state_dict())
        accs = [evaluate(a, ds.test_x.to(device), ds.test_y.to(device))[1] for a in alone]
        print(f"{model}: a network in a stack of 4 trains as it does alone: "
              f"{'bit-identical' if same else f'NOT bit-identical (largest weight difference {gap:.3g})'}; "
              f"test accuracy alone {sum(accs) / len(accs):.4f}")


if __name__ == "__main__":
    main()
