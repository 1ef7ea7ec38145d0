"""Frozen dataclasses as settings: CLI flags generated from their fields, and stable hashes.

* :func:`command` turns a function taking one settings dataclass into a typer command with one
  flag per field (``--field-name``; tuples as comma lists ``--budgets 10,20``; bools as
  ``--flag/--no-flag``), so flags never drift from the settings.
* :func:`non_default` and :func:`config_hash` name a run by the settings that differ from the
  defaults, so adding a new setting with a default keeps old names (OpenLTH's rule).
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import typing
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import typer

from sketchprune.errors import SketchpruneError

T = TypeVar("T")


def _base_type(tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin is typing.Union or str(origin) == "types.UnionType":
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _base_type(args[0])
    return tp


def field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: _base_type(hints[f.name]) for f in dataclasses.fields(cls)}


def parse_value(tp: Any, raw: Any, name: str) -> Any:
    """Convert a CLI/YAML value to the field type ``tp`` (tuples accept lists or comma strings)."""
    if raw is None:
        return None
    if typing.get_origin(tp) is tuple:
        (item,) = {a for a in typing.get_args(tp) if a is not Ellipsis}
        items = raw.split(",") if isinstance(raw, str) else list(raw) if isinstance(raw, (list, tuple)) else [raw]
        return tuple(parse_value(item, x.strip() if isinstance(x, str) else x, name) for x in items if x != "")
    try:
        if tp is bool:
            if isinstance(raw, str):
                if raw.lower() in ("1", "true", "yes", "on"):
                    return True
                if raw.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError(raw)
            return bool(raw)
        if tp is int and isinstance(raw, float) and not raw.is_integer():
            raise ValueError(raw)
        return tp(raw)
    except (TypeError, ValueError):
        raise SketchpruneError(f"setting {name!r} must be {getattr(tp, '__name__', tp)}, got {raw!r}") from None


def build(cls: type[T], values: Mapping[str, Any], base: T | None = None) -> T:
    """An instance of ``cls`` from ``values`` (unknown keys are an error naming the known ones)."""
    types = field_types(cls)
    unknown = [k for k in values if k not in types]
    if unknown:
        raise SketchpruneError(f"unknown setting {unknown[0]!r}; known settings: {', '.join(types)}")
    parsed = {k: parse_value(types[k], v, k) for k, v in values.items()}
    obj = dataclasses.replace(base, **parsed) if base is not None else cls(**parsed)
    validate = getattr(obj, "validate", None)
    if callable(validate):
        validate()
    return obj


def to_dict(obj: Any) -> dict[str, Any]:
    """Plain dict of a settings dataclass (tuples as lists)."""
    return json.loads(json.dumps(dataclasses.asdict(obj)))


def _diff(value: dict[str, Any], default: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in value.items():
        d = default.get(k)
        if isinstance(v, dict) and isinstance(d, dict):
            sub = _diff(v, d)
            if sub:
                out[k] = sub
        elif d != v:
            out[k] = v
    return out


def non_default(obj: Any) -> dict[str, Any]:
    """The fields of ``obj`` that differ from the class defaults (nested settings compared field by field)."""
    return _diff(to_dict(obj), to_dict(type(obj)()))


def config_hash(obj: Any) -> str:
    """Stable 12-hex-digit hash of the non-default settings of ``obj`` (and its class name)."""
    payload = json.dumps({"kind": type(obj).__name__, **non_default(obj)}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def options(cls: type, help_text: Mapping[str, str] | None = None, exclude: tuple[str, ...] = ()
            ) -> list[inspect.Parameter]:
    """One typer option parameter per dataclass field (defaults from the class), except ``exclude``."""
    params = []
    defaults = cls()
    for f in dataclasses.fields(cls):
        if f.name in exclude:
            continue
        tp = field_types(cls)[f.name]
        default = getattr(defaults, f.name)
        helptext = (help_text or {}).get(f.name)
        if typing.get_origin(tp) is tuple:
            opt = typer.Option(",".join(map(str, default)), _flag(f.name), help=helptext or "comma-separated list")
            ann: Any = str
        elif tp is bool:
            opt = typer.Option(default, f"{_flag(f.name)}/--no-{f.name.replace('_', '-')}", help=helptext)
            ann = bool
        else:
            opt = typer.Option(default, _flag(f.name), help=helptext)
            ann = tp if default is not None else typing.Optional[tp]
        params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=opt, annotation=ann))
    return params


def command(
    app: typer.Typer,
    name: str,
    cls: type[T],
    extra: list[inspect.Parameter],
    help: str,
    help_text: Mapping[str, str] | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register ``fn(config, **extra)`` as a command whose flags are ``cls``'s fields plus ``extra``."""

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        names = [f.name for f in dataclasses.fields(cls)]

        def wrapper(**kwargs: Any) -> Any:
            cfg = build(cls, {k: kwargs.pop(k) for k in names})
            return fn(cfg, **kwargs)

        wrapper.__signature__ = inspect.Signature(extra + options(cls, help_text))  # type: ignore[attr-defined]
        wrapper.__name__ = fn.__name__
        wrapper.__doc__ = help
        app.command(name, help=help)(wrapper)
        return fn

    return deco
