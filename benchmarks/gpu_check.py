"""The timings of ``gpu_check.sh``: one table, each row a case and its ratio to its baseline.

* SynFlow x100 on VGG-16-BN (float64 and float32);
* one epoch of ResNet-20 on CIFAR-shaped synthetic data (50,000 images), dense and with masks at
  density 0.1 (the masked step's overhead);
* structured ResNet-20 / VGG-16-BN at 50 % of the units against dense (inference, batch 1024),
  and a 4096 -> 4096 fp16 Linear on 8192 tokens at 2:4 against dense.

Run: ``python benchmarks/gpu_check.py [--device cuda]`` (``--device cpu --quick`` checks the script).
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
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    device = torch.device(args.device)
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


if __name__ == "__main__":
    main()
