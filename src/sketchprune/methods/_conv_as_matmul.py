"""Batch-1 float64 ``Conv2d`` on the CPU as plain matrix products (a private fast path of SynFlow and PX).

Why: SynFlow runs the network on one all-ones input, so its deep convolutions cover only a few
output positions (a 512-channel layer at 2x2 or 4x4): a matrix times a few columns. CPU float64
convolution (im2col + GEMM, no oneDNN kernel) spends much of its backward zero-filling the weight
gradient and reading the weights in a transposed order; ``unfold`` and two well-laid-out matrix
products avoid both (``benchmarks/bench_fastpaths.py`` times SynFlow with and without this).

:func:`convs_as_matmuls` swaps this in for the duration of a ``with`` block and leaves the
model as it was. Only exact ``nn.Conv2d`` modules (one group, zero padding) are swapped, and a
call takes the matrix path only for a float64 CPU batch of one with at most
``MAX_POSITIONS`` output positions; every other call runs the layer's own forward. Gradients
reach the weight through autograd as usual, so a weight used elsewhere too still gets its
whole gradient.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

MAX_POSITIONS = 16
"""Output positions up to which the matrix path is used (above it, im2col is as fast)."""


class _RowsTimesWeightT(torch.autograd.Function):
    """``X @ W.T`` for ``X`` (positions x in-features) and ``W`` (out x in), with the backward
    products laid out so that both stream ``W`` and the weight gradient row by row."""

    @staticmethod
    def forward(ctx, x: Tensor, w: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x, w)
        return x @ w.t()

    @staticmethod
    def backward(ctx, g: Tensor) -> tuple[Tensor | None, Tensor | None]:  # type: ignore[override]
        x, w = ctx.saved_tensors
        gx = g @ w if ctx.needs_input_grad[0] else None
        gw = g.t() @ x if ctx.needs_input_grad[1] else None
        return gx, gw


def _eligible(m: nn.Module) -> bool:
    return (type(m) is nn.Conv2d and m.groups == 1 and m.padding_mode == "zeros"
            and not isinstance(m.padding, str) and "forward" not in m.__dict__)


def _forward(m: nn.Conv2d, inp: Tensor) -> Tensor:
    """``m(inp)``: by matrix products where they are faster, else the layer's own forward."""
    if inp.dim() != 4 or inp.shape[0] != 1 or inp.dtype != torch.float64 or inp.device.type != "cpu":
        return nn.Conv2d.forward(m, inp)
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = m.kernel_size, m.stride, m.padding, m.dilation
    oh = (inp.shape[2] + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    ow = (inp.shape[3] + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    if oh * ow > MAX_POSITIONS:
        return nn.Conv2d.forward(m, inp)
    cols = F.unfold(inp, m.kernel_size, m.dilation, m.padding, m.stride)[0]  # (in * kh * kw, positions)
    out = _RowsTimesWeightT.apply(cols.t(), m.weight.reshape(m.out_channels, -1))  # (positions, out)
    # contiguous: a transposed (channels-last) view breaks batch norm's eval backward on the CPU
    # (torch 2.13: wrong weight and input gradients), and later layers expect the usual layout
    out = out.t().contiguous().reshape(1, m.out_channels, oh, ow)
    return out if m.bias is None else out + m.bias.view(1, -1, 1, 1)


@contextlib.contextmanager
def convs_as_matmuls(model: nn.Module) -> Iterator[None]:
    """Within the block, ``model``'s plain ``Conv2d`` layers compute batch-1 float64 CPU calls
    over few output positions by matrix products (same values up to float64 rounding)."""
    swapped = [m for m in model.modules() if _eligible(m)]
    for m in swapped:
        m.forward = functools.partial(_forward, m)
    try:
        yield
    finally:
        for m in swapped:
            del m.forward
