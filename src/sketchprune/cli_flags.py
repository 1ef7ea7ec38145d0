"""CLI flags generated from settings dataclasses (the typer side of :mod:`sketchprune.config`).

* :func:`options` makes one typer option per field (``--field-name``; tuples as comma lists
  ``--budgets 10,20``; mappings as ``--model-options depth=6,width=100``; bools as
  ``--flag/--no-flag``), its help from the field's :func:`~sketchprune.config.setting`, so flags
  never drift from the settings.
* :func:`register` adds a command whose flags build one config object before the command runs;
  :func:`command` is that for one settings dataclass.

Only the CLI imports this module: ``import sketchprune`` loads neither typer nor click.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import typer

from sketchprune.config import base_type, build, field_types, help_of

T = TypeVar("T")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _show(value: Any) -> str:
    if isinstance(value, (tuple, dict)):
        return ",".join(f"{k}={v}" for k, v in value.items()) if isinstance(value, dict) and value else \
            ",".join(map(str, value)) or "none"
    return str(value)


def options(cls: type, help_text: Mapping[str, str] | None = None, exclude: tuple[str, ...] = (),
            unset: bool = False) -> list[inspect.Parameter]:
    """One typer option parameter per dataclass field (defaults and help from the class), except
    ``exclude``. With ``unset``, every flag defaults to None ("not given")."""
    params = []
    defaults = cls()
    for f in dataclasses.fields(cls):
        if f.name in exclude:
            continue
        tp = base_type(field_types(cls)[f.name])
        default = getattr(defaults, f.name)
        helptext = (help_text or {}).get(f.name) or help_of(f)
        if unset and default is not None:
            helptext = f"{helptext} (default: {_show(default)})"
        if typing.get_origin(tp) is tuple:
            opt = typer.Option(None if unset else ",".join(map(str, default)), _flag(f.name),
                               help=helptext or "comma-separated list")
            ann: Any = typing.Optional[str] if unset else str
        elif tp is dict or typing.get_origin(tp) is dict:
            opt = typer.Option(None if unset else "", _flag(f.name), help=helptext, metavar="KEY=VALUE,...")
            ann = typing.Optional[str] if unset else str
        elif tp is bool:
            opt = typer.Option(None if unset else default, f"{_flag(f.name)}/--no-{f.name.replace('_', '-')}",
                               help=helptext, show_default=not unset)
            ann = typing.Optional[bool] if unset else bool
        else:
            opt = typer.Option(None if unset else default, _flag(f.name), help=helptext)
            ann = typing.Optional[tp] if (unset or default is None) else tp
        params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=opt, annotation=ann))
    return params


def register(app: typer.Typer, name: str, fn: Callable[..., Any], flags: list[inspect.Parameter],
             make_config: Callable[[dict[str, Any]], Any], extra: list[inspect.Parameter], help: str) -> None:
    """Add command ``name`` to ``app``: it takes ``flags`` plus ``extra`` and calls
    ``fn(make_config({flag: value}), **extra_values)``."""
    names = [p.name for p in flags]

    def wrapper(**kwargs: Any) -> Any:
        cfg = make_config({k: kwargs.pop(k) for k in names})
        return fn(cfg, **kwargs)

    wrapper.__signature__ = inspect.Signature(extra + flags)  # type: ignore[attr-defined]
    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = help
    app.command(name, help=help)(wrapper)


def command(
    app: typer.Typer,
    name: str,
    cls: type[T],
    extra: list[inspect.Parameter],
    help: str,
    help_text: Mapping[str, str] | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: register ``fn(config, **extra)`` as a command whose flags are ``cls``'s fields plus ``extra``."""

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        register(app, name, fn, options(cls, help_text), lambda values: build(cls, values), extra, help)
        return fn

    return deco
