"""Pruning methods: one function and one options dataclass each, registered by name.

``sketchprune.methods.names()`` lists every method, built-in or plugin; ``get(name)`` gives its
:class:`Method` record. See :mod:`sketchprune.methods.registry` for the contract and for how
another package adds a method through the ``sketchprune.methods`` entry-point group.
"""

from __future__ import annotations

from sketchprune.methods.registry import (
    ENTRY_POINT_GROUP,
    Context,
    Method,
    NoOptions,
    Scores,
    get,
    markdown_table,
    names,
    needs_data,
    register,
)

# the built-in methods register themselves on import, in this order (the README table's order)
from sketchprune.methods import basic, snip, grasp, synflow, ntk, linear_optimal  # noqa: E402,F401,I001

__all__ = ["ENTRY_POINT_GROUP", "Context", "Method", "NoOptions", "Scores", "get", "markdown_table", "names",
           "needs_data", "register"]
