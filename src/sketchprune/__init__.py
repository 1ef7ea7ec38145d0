"""sketchprune: pruning at initialization seen as sketching for approximate matrix multiplication.

The data flow is scores -> :func:`select` -> :class:`Masks` -> ``Masks.apply`` -> train -> results -> report.
"""

from __future__ import annotations

__version__ = "0.1.0"

from sketchprune.errors import SketchpruneError
from sketchprune.masks import Masks
from sketchprune.pruning import prune
from sketchprune.selection import select

__all__ = ["Masks", "SketchpruneError", "prune", "select", "__version__"]
