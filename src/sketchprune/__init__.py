"""sketchprune: pruning at initialization seen as sketching for approximate matrix multiplication.

The data flow is scores (:mod:`sketchprune.methods`) -> :func:`select` -> :class:`Masks` ->
``Masks.apply`` -> train -> results -> report; :func:`prune_units` removes whole units instead. Submodules (``sketchprune.models``, ``data``,
``sketch``, ``methods``, ...) load on first use: ``import sketchprune as sp; sp.models.create(...)``.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

from sketchprune.errors import SketchpruneError
from sketchprune.masks import Masks
from sketchprune.pruning import prune, prune_units
from sketchprune.selection import select

__all__ = ["Masks", "SketchpruneError", "prune", "prune_units", "select", "__version__"]

_SUBMODULES = {"atomic", "auto", "budgets", "config", "costs", "data", "diagnostics", "dst", "experiment", "export",
               "inclusion", "layers", "masks", "methods", "models", "nm", "pieces", "pruning", "report", "results",
               "sampling", "seeding", "selection", "sketch", "stats", "sweep", "tables", "theory", "topk", "train",
               "unit_groups"}


def __getattr__(name: str) -> Any:
    """Import a submodule on first attribute access (``sp.models``, ``sp.sketch``, ...)."""
    if name in _SUBMODULES:
        return importlib.import_module(f"sketchprune.{name}")
    raise AttributeError(f"module 'sketchprune' has no attribute {name!r}")
