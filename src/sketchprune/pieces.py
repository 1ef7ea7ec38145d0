"""Pieces: flat chunks of score tensors, the unit of work of :func:`sketchprune.select`.

A selection over many tensors works on a list of 1-D pieces (flat views, cut into chunks of at
most :data:`PIECE` elements), so it never concatenates the tensors, and a selection over 10^9
scores needs only piece-sized temporaries. The random draws give each piece its own stream
(:mod:`sketchprune.sampling`), which is why the piece size is fixed.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

PIECE = 1 << 22
"""Elements per piece. Fixed, because per-piece random streams make results depend on it."""


def split(tensors: Sequence[Tensor]) -> list[Tensor]:
    """Cut flat views of ``tensors`` (in order) into pieces of at most :data:`PIECE` elements."""
    pieces: list[Tensor] = []
    for t in tensors:
        flat = t.reshape(-1)
        pieces.extend(flat.split(PIECE))
    return pieces
