"""Seeds for independent random streams.

``torch.manual_seed(s)`` (model init) and ``torch.Generator().manual_seed(s)`` produce the *same*
stream, so a pruner seeded with the model's seed would draw "random" scores equal to the draws
that made the weights, and random pruning would keep the largest weights. Every consumer
therefore seeds its generator with ``derive(seed, purpose)``.
"""

from __future__ import annotations

import hashlib

import torch


def derive(seed: int, purpose: str) -> int:
    """A 63-bit seed for ``purpose`` ("prune", "train", ...) that shares no stream with ``seed`` itself."""
    digest = hashlib.sha256(f"sketchprune:{purpose}:{int(seed)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def generator(seed: int, purpose: str, device: str | torch.device = "cpu") -> torch.Generator:
    """A generator on ``device`` seeded with :func:`derive`."""
    return torch.Generator(device=device).manual_seed(derive(seed, purpose))
