"""Forward hooks that last one ``with`` block: how scorers read a network's activations."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator

from torch import nn


@contextlib.contextmanager
def forward_hooks(modules: Iterable[nn.Module], fn: Callable, *, pre: bool = False) -> Iterator[None]:
    """Call ``fn(module, inputs, output)`` (``pre=True``: ``fn(module, inputs)`` before the module
    runs) on every forward of ``modules`` inside the block; the hooks are gone after it."""
    handles = [m.register_forward_pre_hook(fn) if pre else m.register_forward_hook(fn) for m in modules]
    try:
        yield
    finally:
        for h in handles:
            h.remove()
