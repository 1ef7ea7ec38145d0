"""Benchmark: what a grid costs one network at a time and stacked (``sketchprune.stack``).

``--table`` (the default): time per network-step of one training step as ``train`` takes it
(forward, cross-entropy, backward, optimizer step, masks at density 0.1 enforced) against the
stacked step of ``train_stacked`` with K = 4, 16, 64 networks, for the E5 MLP on MNIST-1D, the
digits conv net, LeNet-5 on Fashion-MNIST and ResNet-20 on 28x28 inputs, all in one run (best
of ``--rounds`` interleaved rounds; the machine is shared, the minimum is the least disturbed).
A K whose training activations would pass ``--memory-gb`` is left out and said so. The
``products`` column is the floor: the step's matrix products alone (forward, weight and input
gradients at the step's shapes), and ``x floor`` = alone / products the most an engine that keeps
the arithmetic could gain on this machine.

``--grid CONFIG --sample AXIS=VALUES ...``: a representative slice of a sweep run both ways,
one at a time (``experiment.run``, as ``stack: 1``) and stacked (``--stack``), batch by batch in
alternating order, in fresh folders, one worker; prints the CPU and wall time of each, where the
stacked time goes (pruning by method, training steps, evaluation, checkpoints), whether every
result is identical, and the grid's time extrapolated from the slice (per method: the slice's
seconds per run times the grid's number of such runs).

Run: ``python benchmarks/bench_grid.py [--device cuda] [--threads 1]`` and
``python benchmarks/bench_grid.py --grid configs/e5_mlp_mnist1d.yaml --sample compression=31.623 --sample seed=0``.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import torch
import torch.nn.functional as F

# name, model, model options, input shape, batch size
MODELS = [
    ("E5 MLP, MNIST-1D", "mlp", {"width": 100, "depth": 5}, (40,), 128),
    ("digits conv", "conv", {"width": 32}, (1, 8, 8), 64),
    ("LeNet-5, Fashion-MNIST", "lenet5", {}, (1, 28, 28), 128),
    ("ResNet-20, 28x28", "resnet20", {}, (1, 28, 28), 128),
]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def best_time(step, repeats: int, device: torch.device) -> float:
    """The fastest of ``repeats`` calls of ``step`` after two warm-up calls (seconds)."""
    best = float("inf")
    for i in range(repeats + 2):
        sync(device)
        t0 = time.perf_counter()
        step()
        sync(device)
        if i >= 2:
            best = min(best, time.perf_counter() - t0)
    return best


def make_nets(model: str, options: dict, shape: tuple[int, ...], k: int, device: torch.device):
    """``k`` networks of one architecture (seeds 0..k-1) and their magnitude masks at density 0.1."""
    from sketchprune import models, prune

    nets, masks = [], []
    for s in range(k):
        torch.manual_seed(s)
        net = models.create(model, input_shape=shape, **options)
        nets.append(net)
        masks.append(prune(net, "magnitude", 0.1))
    return [n.to(device) for n in nets], masks


def build(kind: str, model: str, options: dict, shape: tuple[int, ...], batch: int, k: int, device: torch.device,
          *, bf16: bool = False, channels_last: bool = False, graph: bool = False):
    """A closure of one training step (Adam, masks at density 0.1 enforced) of ``k`` networks:

    * ``alone``: one network as ``train`` steps it (``k`` must be 1);
    * ``stack``: ``sketchprune.stack``'s stacked step (bit-identical to ``alone``, network by network);
    * ``vmap``: ``torch.func.stack_module_state`` + ``vmap`` (one ``bmm`` per Linear, one grouped
      convolution per Conv; not bit-identical), masks as a multiply of gradients and weights.

    ``bf16``: the forward and loss under ``torch.autocast(bfloat16)``; ``channels_last``: the
    network and its input in channels-last memory format (``alone`` only); ``graph``: the step
    captured once as a CUDA graph (``torch.cuda.CUDAGraph``, Adam with ``capturable=True``) and
    replayed. The same batch every step: this times arithmetic, not data.
    """
    from sketchprune.stack import stack_masks, stack_models

    nets, masks = make_nets(model, options, shape, k, device)
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext
    ys = torch.randint(0, 10, (k, batch), device=device)
    if kind == "alone":
        assert k == 1, "alone is one network"
        net, x, y = nets[0], torch.randn(batch, *shape, device=device), ys[0]
        if channels_last:
            net, x = net.to(memory_format=torch.channels_last), x.to(memory_format=torch.channels_last)
        masks[0].apply(net)
        params = list(net.parameters())

        def body() -> None:
            with autocast():
                loss = F.cross_entropy(net(x), y)
            loss.backward()
            opt.step()
    elif kind == "stack":
        assert not channels_last, "the stacked engine's slices are contiguous"
        stacked = stack_models(nets).to(device)
        stack_masks(stacked, masks).apply(stacked)
        params, x, labels = list(stacked.parameters()), torch.randn(k * batch, *shape, device=device), ys.unbind(0)

        def body() -> None:
            with autocast():
                out = stacked(x).reshape(k, batch, -1)
                losses = torch.stack([F.cross_entropy(o, yi) for o, yi in zip(out.unbind(0), labels)])
            losses.sum().backward()
            opt.step()
    elif kind == "vmap":
        assert not channels_last, "vmap batches the networks along the channels"
        from torch.func import functional_call, stack_module_state, vmap

        weights, buffers = stack_module_state(nets)
        keep = {n: torch.stack([m[n] for m in masks]).to(weights[n].dtype) for n in masks[0]}
        with torch.no_grad():
            for n, m in keep.items():
                weights[n].mul_(m)
        base = copy.deepcopy(nets[0]).to("meta")
        params, x = list(weights.values()), torch.randn(k, batch, *shape, device=device)
        batched = vmap(lambda p, b, xi, yi: F.cross_entropy(functional_call(base, (p, b), (xi,)), yi))

        def body() -> None:
            with autocast():
                losses = batched(weights, buffers, x, ys)
            losses.sum().backward()
            with torch.no_grad():
                for n, m in keep.items():
                    weights[n].grad.mul_(m)
            opt.step()
            with torch.no_grad():
                for n, m in keep.items():
                    weights[n].mul_(m)
    else:
        raise ValueError(kind)
    opt = torch.optim.Adam(params, lr=1e-3, capturable=graph)  # make_optimizer's Adam (weight decay 0)
    if not graph:
        def step() -> None:
            opt.zero_grad(set_to_none=True)
            body()

        return step
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm up outside the graph, as torch.cuda.graph asks
        for _ in range(3):
            opt.zero_grad(set_to_none=True)
            body()
    torch.cuda.current_stream().wait_stream(side)
    opt.zero_grad(set_to_none=True)  # the graph's backward allocates the gradients in its own pool
    captured = torch.cuda.CUDAGraph()
    with torch.cuda.graph(captured):
        body()
    return captured.replay


def single_step(model: str, options: dict, shape: tuple[int, ...], batch: int, device: torch.device):
    """One training step of one masked network, as ``train``'s loop takes it."""
    return build("alone", model, options, shape, batch, 1, device)


def stacked_setup(model: str, options: dict, shape: tuple[int, ...], batch: int, k: int, device: torch.device):
    """The stacked model, its optimizer (``make_optimizer``'s) and one batch per network (masks
    applied), for ``sketchprune.stack.stacked_step``."""
    from sketchprune.stack import stack_masks, stack_models
    from sketchprune.train import TrainConfig, make_optimizer

    nets, masks = make_nets(model, options, shape, k, device)
    stacked = stack_models(nets).to(device)
    stack_masks(stacked, masks).apply(stacked)
    opt = make_optimizer(stacked, TrainConfig(optimizer="adam", lr=1e-3, weight_decay=0.0))
    x = torch.randn(k * batch, *shape, device=device)
    ys = list(torch.randint(0, 10, (k, batch), device=device).unbind(0))
    return stacked, opt, x, ys


def products_step(model: str, options: dict, shape: tuple[int, ...], batch: int, device: torch.device):
    """The matrix products of one network's training step and nothing else: each Linear / Conv
    layer's forward product and its backward products (weight gradient; input gradient except for
    the first layer, whose input needs none), at the step's shapes. No engine that keeps this
    arithmetic can take a network-step below this time."""
    from sketchprune import models

    net = models.create(model, input_shape=shape, **options).to(device)
    seen: list[tuple] = []

    def hook(module, inputs, output) -> None:
        seen.append((module, inputs[0].detach().clone(), torch.randn_like(output)))

    handles = [m.register_forward_hook(hook) for m in net.modules()
               if isinstance(m, (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d))]
    with torch.no_grad():
        net(torch.randn(batch, *shape, device=device))
    for h in handles:
        h.remove()

    def step() -> None:
        for i, (m, x, g) in enumerate(seen):
            w, b = m.weight.detach(), None if m.bias is None else m.bias.detach()
            if isinstance(m, torch.nn.Linear):
                F.linear(x, w, b)
                g.flatten(0, -2).T @ x.flatten(0, -2)  # the weight gradient
                if i:
                    g @ w  # the input gradient
            else:
                m._conv_forward(x, w, b)
                torch.ops.aten.convolution_backward(g, x, w, None if b is None else list(b.shape), list(m.stride),
                                                    list(m.padding), list(m.dilation), False,
                                                    [0] * len(m.stride), m.groups, [i > 0, True, b is not None])

    return step


def activation_bytes(model: str, options: dict, shape: tuple[int, ...], batch: int) -> int:
    """Bytes of every module output of one network's training step at ``batch`` (what autograd keeps)."""
    from sketchprune import models

    net = models.create(model, input_shape=shape, **options)
    total = [0]

    def hook(module, inputs, output) -> None:
        if isinstance(output, torch.Tensor) and not list(module.children()):
            total[0] += output.numel() * output.element_size()

    handles = [m.register_forward_hook(hook) for m in net.modules()]
    with torch.no_grad():
        net(torch.zeros(1, *shape))
    for h in handles:
        h.remove()
    return total[0] * batch


def table(args: argparse.Namespace) -> None:
    from sketchprune.stack import stacked_step

    dev = torch.device(args.device)
    ks = [int(k) for k in args.ks.split(",")]
    print(f"# time per network-step (ms), best of {args.rounds} rounds; torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread(s), {args.device}; Adam, masks at density 0.1")
    head = f"{'model':<24} {'batch':>5} {'alone':>8}" + "".join(f" {'K=' + str(k):>8}" for k in ks) + \
        "".join(f" {'x K=' + str(k):>7}" for k in ks) + "".join(f" {'vmap K=' + str(k):>9}" for k in ks) + \
        f" {'products':>9} {'x floor':>7}"
    print(head)
    print("(K=: sketchprune.stack, bit-identical to one at a time; x: alone / stacked; vmap: "
          "stack_module_state + vmap, bmm and grouped convolutions, not bit-identical, for comparison; "
          "products: the step's matrix products alone, one network; x floor: alone / products, the most "
          "any engine with the same arithmetic could gain)")
    for label, model, options, shape, batch in MODELS:
        if args.models and model not in args.models.split(","):
            continue
        per_net = activation_bytes(model, options, shape, batch)
        alone = single_step(model, options, shape, batch, dev)
        products = products_step(model, options, shape, batch, dev)
        setups, fast = {}, {}
        for k in ks:
            if k * per_net * 3 > args.memory_gb * 2**30:  # outputs, their gradients and the saved inputs
                continue
            setups[k] = stacked_setup(model, options, shape, batch, k, dev)
            if not args.no_vmap:
                fast[k] = build("vmap", model, options, shape, batch, k, dev)
        repeats = args.steps if model != "resnet20" else max(2, args.steps // 10)
        t = {"alone": float("inf"), "products": float("inf"), **{k: float("inf") for k in setups},
             **{("v", k): float("inf") for k in fast}}
        for _ in range(args.rounds):  # interleaved, so that the machine's noise falls on every column
            t["alone"] = min(t["alone"], best_time(alone, repeats, dev))
            t["products"] = min(t["products"], best_time(products, repeats, dev))
            for k, (stacked, opt, x, ys) in setups.items():
                reps = max(2, repeats * 2 // k)
                t[k] = min(t[k], best_time(lambda: stacked_step(stacked, opt, x, ys), reps, dev) / k)
                if k in fast:
                    t[("v", k)] = min(t[("v", k)], best_time(fast[k], reps, dev) / k)
        cells = "".join(f" {t[k] * 1e3:>8.3f}" if k in t else f" {'(mem)':>8}" for k in ks)
        ratios = "".join(f" {t['alone'] / t[k]:>7.2f}" if k in t else f" {'-':>7}" for k in ks)
        vm = "".join(f" {t[('v', k)] * 1e3:>9.3f}" if ("v", k) in t else f" {'-':>9}" for k in ks)
        floor = f" {t['products'] * 1e3:>9.3f} {t['alone'] / t['products']:>7.2f}"
        print(f"{label:<24} {batch:>5} {t['alone'] * 1e3:>8.3f}{cells}{ratios}{vm}{floor}", flush=True)
        del setups, fast


# ---- a slice of a grid, both ways ---------------------------------------------------------------

def _sample(runs: list, picks: list[str]) -> list:
    """The runs whose settings match every ``AXIS=V1,V2`` of ``picks`` (dense runs keep their density)."""
    from sketchprune.config import to_dict

    keep = []
    for cfg in runs:
        flat = to_dict(cfg)
        ok = True
        for pick in picks:
            axis, _, values = pick.partition("=")
            wanted = values.split(",")
            if axis == "compression":
                if cfg.density == 1.0:
                    continue
                ok &= any(abs(1 / cfg.density - float(v)) < 1e-3 * float(v) for v in wanted)
            else:
                ok &= str(flat.get(axis)) in wanted
        if ok:
            keep.append(cfg)
    return keep


def _group(cfg) -> str:
    """What a run's cost depends on besides training: its method (and mode for score methods)."""
    return cfg.method if cfg.density < 1.0 else "dense"


def grid(args: argparse.Namespace) -> None:
    """The slice both ways, batch by batch: each batch of ``stack.plan`` runs one at a time (as
    ``sweep.run`` with ``stack: 1`` runs them, by ``experiment.run``) and stacked (``run_many``),
    in alternating order, so that a shared machine's load falls on both alike. Times are process
    CPU seconds (what the runs cost, whatever else the machine runs) and wall seconds."""
    from sketchprune import stack, sweep
    from sketchprune.config import config_hash
    from sketchprune.experiment import run
    from sketchprune.results import collect

    full = sweep.load(args.grid)
    picked = _sample(full.runs, args.sample)
    by_hash = {config_hash(c): c for c in picked}
    print(f"# {args.grid}: {len(full.runs)} runs; slice {' '.join(args.sample)}: {len(picked)} runs; "
          f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), one worker", flush=True)
    cpu = {"alone": 0.0, "stacked": 0.0}
    wall = {"alone": 0.0, "stacked": 0.0}
    timings: dict[str, float] = {}
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])  # the optimizer's one-off imports, out of the clock
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for n, batch in enumerate(stack.plan(picked, args.stack, args.device)):
            cfgs = [picked[i] for i in batch]
            for label in (("alone", "stacked") if n % 2 == 0 else ("stacked", "alone")):
                c0, w0 = time.process_time(), time.perf_counter()
                if label == "alone":
                    for cfg in cfgs:
                        run(cfg, sweep.folder(root / label, cfg), device=args.device, data_root=full.data_root)
                else:
                    stack.run_many(cfgs, [sweep.folder(root / label, c) for c in cfgs], stack=args.stack,
                                   device=args.device, data_root=full.data_root, timings=timings)
                cpu[label] += time.process_time() - c0
                wall[label] += time.perf_counter() - w0
            print(f"  batch {n + 1}: {len(cfgs)} runs ({cfgs[0].method} ..); so far alone {cpu['alone']:.0f} s, "
                  f"stacked {cpu['stacked']:.0f} s CPU", flush=True)
        results = {label: {r.hash: r for r in collect(root / label)} for label in cpu}
    for label in cpu:
        print(f"{label:>8}: {cpu[label]:8.1f} s CPU, {wall[label]:8.1f} s wall, {len(results[label])} runs")
    a, b = results["alone"], results["stacked"]
    keys = ("final_test_acc", "best_test_acc", "final_train_loss", "kept", "layer_density", "diagnostics")
    same = sum(all(getattr(a[h], k) == getattr(b[h], k) for k in keys) for h in a if h in b)
    print(f"identical results (accuracies, losses, masks, diagnostics): {same} of {len(a)}")
    counts_full = Counter(_group(c) for c in full.runs)
    counts_pick = Counter(_group(c) for c in picked)
    est = {}
    for label in cpu:
        own: dict[str, float] = defaultdict(float)  # each run's own seconds (stacked: its share), by group
        for h, r in results[label].items():
            own[_group(by_hash[h])] += r.wall_seconds
        scale = cpu[label] / max(1e-9, sum(own.values()))  # in CPU seconds
        est[label] = sum(own[g] * scale * counts_full[g] / counts_pick[g] for g in own)
    missing = sorted(set(counts_full) - set(counts_pick))
    print(f"full grid, extrapolated by method from the slice (CPU seconds of one worker): alone "
          f"{est['alone'] / 60:.1f} min, stacked {est['stacked'] / 60:.1f} min ({est['alone'] / est['stacked']:.2f}x)"
          + (f"; methods missing from the slice: {missing}" if missing else ""))
    prune_by_group: dict[str, list[float]] = defaultdict(list)
    for h, r in b.items():
        prune_by_group[_group(by_hash[h])].append(r.prune_seconds)
    print("stacked slice, where the wall time goes (s): " + ", ".join(
        f"{k} {v:.1f}" for k, v in sorted(timings.items(), key=lambda kv: -kv[1])) +
          f"; total {wall['stacked']:.1f}")
    print("pruning up to training, mean s per run (imp: its levels): " + ", ".join(
        f"{g} {sum(v) / len(v):.2f}" for g, v in sorted(prune_by_group.items(), key=lambda kv: -sum(kv[1]))))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=20, help="timed steps per round (stacked: fewer, as K grows)")
    ap.add_argument("--ks", default="4,16,64")
    ap.add_argument("--models", default="", help="comma-separated model names of the table (default: all)")
    ap.add_argument("--memory-gb", type=float, default=4.0, help="leave out K whose activations pass this")
    ap.add_argument("--no-vmap", action="store_true", help="leave out the vmap columns")
    ap.add_argument("--grid", help="a sweep file: run a slice of it both ways")
    ap.add_argument("--sample", action="append", default=[], help="AXIS=V1,V2: the slice (repeatable)")
    ap.add_argument("--stack", default="auto", help="K of the stacked run of the slice (or auto)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.grid:
        grid(args)
    else:
        table(args)


if __name__ == "__main__":
    sys.exit(main())
