"""Pruning methods: one function and one options dataclass each, registered by name.

``sketchprune.methods.names()`` lists every method, built-in or plugin; ``get(name)`` gives its
:class:`Method` record. See :mod:`sketchprune.methods.registry` for the contract and for how
another package adds a method through the ``sketchprune.methods`` entry-point group.
"""

from __future__ import annotations

from sketchprune.methods.context import Built, Context, Scores, UnitContext
from sketchprune.methods.registry import (
    ENTRY_POINT_GROUP,
    Method,
    NoOptions,
    get,
    markdown_table,
    names,
    needs_data,
    register,
    register_units,
)

_INFRASTRUCTURE = {"registry", "context", "runners"}


def _import_builtins() -> None:
    """Import every module of this package: each registers its methods (adding a method is adding a file)."""
    import importlib
    import pkgutil

    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: (i.name != "basic", i.name)):
        if info.name not in _INFRASTRUCTURE and not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")


_import_builtins()

__all__ = ["ENTRY_POINT_GROUP", "Built", "Context", "Method", "NoOptions", "Scores", "UnitContext", "get",
           "markdown_table", "names", "needs_data", "register", "register_units"]
