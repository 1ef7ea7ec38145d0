"""The scoring state: what ``prune`` sets on a model while a method scores it, and puts back after;
and the sanity checks that change a mask or a model afterwards (shuffle, re-initialize)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor, nn


@contextlib.contextmanager
def deterministic_kernels() -> Iterator[None]:
    """cuDNN's deterministic kernels while scoring (put back afterwards): on a GPU, its default
    convolution backward adds in a varying order, and the same seed would give different masks."""
    saved = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved


@contextlib.contextmanager
def math_attention() -> Iterator[None]:
    """Attention computed by its plain math kernel while scoring (put back afterwards): the fused
    kernels (flash attention, the fast path of ``MultiheadAttention`` and ``TransformerEncoderLayer``)
    have no double backward (GraSP, ProsPr), no batching rule (``torch.func``), and skip the
    submodules whose hooks a method reads."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    fast = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with sdpa_kernel(SDPBackend.MATH):
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(fast)


@contextlib.contextmanager
def seeded_global_rng(model: nn.Module, seed: int) -> Iterator[None]:
    """The global random stream seeded with ``seed`` while scoring, the caller's put back afterwards:
    what draws from it (dropout in train mode, a layer's own init) is then the same for the same
    seed, and the caller's stream is not consumed."""
    cuda = sorted({p.device.index or 0 for p in model.parameters() if p.is_cuda})
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        yield


@contextlib.contextmanager
def scoring_state(model: nn.Module, train: bool, restore: bool) -> Iterator[None]:
    """Make every parameter of ``model`` require grad, with no gradient, and set its mode for scoring;
    attention runs its math kernel meanwhile (:func:`math_attention`).

    With ``restore``, what scoring may change is put back afterwards, even on error: each
    parameter's ``requires_grad`` and ``.grad``, each module's mode, and the buffers' values.
    """
    saved = None
    if restore:  # buffers by module and name: a forward may replace a buffer (self.calls = self.calls + 1)
        saved = ([(p, p.requires_grad, p.grad) for p in model.parameters()],
                 [(m, m.training) for m in model.modules()],
                 [(m, name, b, b.clone()) for m in model.modules() for name, b in m._buffers.items()
                  if b is not None])
    for p in model.parameters():
        p.requires_grad_(True)
        p.grad = None  # scorers start from no gradient and never accumulate into the caller's
    model.train(train)
    try:
        with math_attention():
            yield
    finally:
        if saved is not None:
            params, modes, buffers = saved
            with torch.no_grad():
                for m, name, b, value in buffers:
                    b.copy_(value)
                    m._buffers[name] = b  # the caller's tensor, as it was
            for m, training in modes:
                m.training = training
            for p, requires_grad, grad in params:
                p.requires_grad_(requires_grad)
                p.grad = grad


def shuffle_within_layers(masks: dict[str, Tensor], generator: torch.Generator) -> dict[str, Tensor]:
    """Sanity check (Su et al. 2020): move each layer's kept positions at random, keeping its count."""
    out = {}
    for n, m in masks.items():
        perm = torch.randperm(m.numel(), generator=generator).to(m.device)
        out[n] = m.reshape(-1)[perm].view_as(m)
    return out


def reinitialize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Sanity check: re-initialize every module with ``reset_parameters`` (seeded), in place."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for m in model.modules():
            if hasattr(m, "reset_parameters") and m is not model:
                m.reset_parameters()
    return model
