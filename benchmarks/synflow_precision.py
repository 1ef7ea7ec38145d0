"""How far float32 SynFlow drifts from float64, and float64 with ``methods._conv_as_matmul`` from plain
autograd convolutions: kept weights that differ after 100 rounds.

Run: ``python benchmarks/synflow_precision.py [--models resnet20,vgg16_bn] [--rounds 100]``.
"""

from __future__ import annotations

import argparse
import warnings

import torch

from sketchprune import models, prune
from sketchprune.methods import _conv_as_matmul as conv_as_matmul


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="resnet20,vgg16_bn")
    ap.add_argument("--rounds", type=int, default=100)
    args = ap.parse_args()
    torch.set_num_threads(2)
    warnings.simplefilter("ignore")
    for name in args.models.split(","):
        torch.manual_seed(0)
        model = models.create(name)
        kw = {"iterations": args.rounds, "input_shape": (3, 32, 32)}
        exact = prune(model, "synflow", 0.01, **kw)
        fast = prune(model, "synflow", 0.01, synflow_dtype="float32", **kw)
        saved, conv_as_matmul.MAX_POSITIONS = conv_as_matmul.MAX_POSITIONS, 0  # every convolution by autograd
        try:
            plain = prune(model, "synflow", 0.01, **kw)
        finally:
            conv_as_matmul.MAX_POSITIONS = saved
        kept = sum(int(m.sum()) for m in exact.values())
        for label, other in (("float32", fast), ("float64 with autograd convolutions", plain)):
            differ = sum(int((exact[n] & ~other[n]).sum()) for n in exact)
            print(f"{name}: {kept} kept; {differ} kept by float64 but not by {label} ({100 * differ / kept:.2f} %)")


if __name__ == "__main__":
    main()
