"""From masks to faster inference: CSR sparse Linear layers (N:M patterns are a mask constraint:
:mod:`sketchprune.nm`).

* :func:`sparse` copies a model whose Linear layers run as CSR sparse products (``torch.sparse``)
  where that is measured faster on the example batch (by default; the measure is a few timed
  calls per layer), and stay dense elsewhere: at 10 % density a CSR product is slower than a
  dense one on the CPU (``benchmarks/bench_speed.py``). A layer whose dtype has no CSR product
  on its device (float16 on the CPU) stays dense when measured, and is an error without measuring.
"""

from __future__ import annotations

import copy
import time

import torch
from torch import Tensor, nn

from sketchprune.errors import check
from sketchprune.hooks import forward_hooks
from sketchprune.masks import Masks


class SparseLinear(nn.Module):
    """``y = x W^T + b`` with ``W`` stored as a CSR tensor (inference)."""

    def __init__(self, weight: Tensor, bias: Tensor | None) -> None:
        super().__init__()
        self.register_buffer("weight", weight.detach().to_sparse_csr())
        self.register_buffer("bias", bias.detach().clone() if bias is not None else None)
        self.in_features, self.out_features = weight.shape[1], weight.shape[0]

    def forward(self, x: Tensor) -> Tensor:
        flat = x.reshape(-1, self.in_features)
        y = torch.sparse.mm(self.weight, flat.t()).t()
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*x.shape[:-1], self.out_features)


def sparse(model: nn.Module, masks: Masks, *, example: Tensor | None = None, measure: bool = True,
           repeats: int = 3) -> nn.Module:
    """A copy of ``model`` (masks applied) whose masked Linear layers are CSR products where faster.

    With ``measure`` (the default) each layer is timed dense and sparse on its input for
    ``example`` and the faster kept; without it, every masked Linear layer becomes sparse.
    """
    check(not measure or example is not None, "sparse(..., measure=True) needs example= (a batch of inputs)")
    net = copy.deepcopy(model).eval()
    Masks(dict(masks)).apply(net).remove()  # the pruned weights are zero (the masks stay with the caller)
    inputs: dict[str, Tensor] = {}
    if measure:
        linear = {m: n for n, m in net.named_modules() if isinstance(m, nn.Linear)}
        with forward_hooks(linear, lambda m, i: inputs.__setitem__(linear[m], i[0].detach()), pre=True), \
                torch.no_grad():
            net(example)
    for name, m in list(net.named_modules()):
        if not isinstance(m, nn.Linear) or f"{name}.weight" not in masks:
            continue
        candidate = SparseLinear(m.weight, m.bias)
        if not _runs(candidate, m):  # no CSR product for this dtype on this device (fp16 on the CPU)
            check(measure, f"{name} ({m.weight.dtype} on {m.weight.device}) has no CSR sparse product here; "
                           "convert the model (model.float()), run it on CUDA, or pass measure=True to keep such "
                           "layers dense")
            continue
        if measure and _best_of(m, inputs[name], repeats) <= _best_of(candidate, inputs[name], repeats):
            continue
        parent, _, attr = name.rpartition(".")
        setattr(net.get_submodule(parent) if parent else net, attr, candidate)
    return net


@torch.no_grad()
def _runs(candidate: SparseLinear, layer: nn.Linear) -> bool:
    """Whether ``candidate`` can run at all (torch has no CSR product for some dtypes and devices)."""
    try:
        candidate(torch.zeros(1, layer.in_features, dtype=layer.weight.dtype, device=layer.weight.device))
        return True
    except (RuntimeError, NotImplementedError):
        return False


@torch.no_grad()
def _best_of(layer: nn.Module, x: Tensor, repeats: int) -> float:
    layer(x)
    best = float("inf")
    for _ in range(repeats):
        if x.is_cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        layer(x)
        if x.is_cuda:
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best
