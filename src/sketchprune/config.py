"""Frozen dataclasses as settings: declared fields, checked values and stable hashes.

* :func:`setting` declares a field with its help line and, for a closed set, its values; the
  check of the value comes from there (:class:`Settings`), and so does the CLI flag's help
  (:mod:`sketchprune.cli_flags` makes one flag per field; this module imports no CLI framework).
* :func:`build` makes an instance from plain values (YAML, flags), each converted by
  :func:`parse_value` to its field's type.
* :func:`non_default` and :func:`config_hash` name a run by the settings that differ from the
  defaults, so adding a new setting with a default keeps old names (OpenLTH's rule).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import inspect
import json
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from sketchprune.errors import SketchpruneError

T = TypeVar("T")
Choices = Iterable[str] | Callable[[], Iterable[str]]


def setting(default: Any, help: str, *, choices: Choices | None = None) -> Any:
    """A settings field: its default, its one-line help (the flag's help) and, where the values
    form a closed set, that set (a tuple, or a function returning one for registries)."""
    meta = {"help": help, "choices": choices}
    if isinstance(default, (dict, list)):
        return dataclasses.field(default_factory=lambda: copy.deepcopy(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def choices_of(f: dataclasses.Field) -> tuple[str, ...] | None:
    """The closed set of values of field ``f``, or None."""
    c = f.metadata.get("choices")
    if c is None:
        return None
    return tuple(c() if callable(c) else c)


def help_of(f: dataclasses.Field) -> str:
    """The help line of field ``f``, followed by its values when they form a closed set."""
    text = f.metadata.get("help", "")
    values = choices_of(f)
    return f"{text} One of: {', '.join(values)}." if values else text


class Settings:
    """Base of the settings dataclasses: checks closed-set values, then the class's ``validate``,
    whenever an instance is made (so a bad setting fails before any work)."""

    def __post_init__(self) -> None:
        check_choices(self)
        self.validate()

    def validate(self) -> None:
        """Checks across fields (override)."""


def check_choices(obj: Any) -> None:
    """Every field of dataclass ``obj`` with a closed set of values holds one of them."""
    for f in dataclasses.fields(obj):
        values = choices_of(f)
        if values is None:
            continue
        v = getattr(obj, f.name)
        for item in v if isinstance(v, tuple) else (v,):
            if item not in values:
                raise SketchpruneError(f"unknown {f.name} {item!r}; use one of {', '.join(values)}")


def base_type(tp: Any) -> Any:
    """The type under an optional hint: ``int`` for ``int | None`` (first member of other unions)."""
    origin = typing.get_origin(tp)
    if origin is typing.Union or origin is types.UnionType:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return base_type(args[0])
    return tp


def _optional(tp: Any) -> bool:
    origin = typing.get_origin(tp)
    return (origin is typing.Union or origin is types.UnionType) and type(None) in typing.get_args(tp)


def field_types(cls: type) -> dict[str, Any]:
    """Field name -> its type hint (``X | None`` kept, so that None is accepted only there)."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def parse_value(tp: Any, raw: Any, name: str) -> Any:
    """Convert a CLI/YAML value to the field type ``tp`` (tuples accept lists or comma strings;
    None only where ``tp`` is ``X | None``)."""
    if raw is None:
        if _optional(tp):
            return None
        raise SketchpruneError(f"setting {name!r} needs a value ({getattr(base_type(tp), '__name__', tp)})")
    tp = base_type(tp)
    if tp is dict or typing.get_origin(tp) is dict:
        return parse_mapping(raw, name)
    if typing.get_origin(tp) is tuple:
        (item,) = {a for a in typing.get_args(tp) if a is not Ellipsis}
        items = raw.split(",") if isinstance(raw, str) else list(raw) if isinstance(raw, (list, tuple)) else [raw]
        if isinstance(raw, str) and not raw.strip():
            return ()
        values = tuple(parse_value(item, x.strip() if isinstance(x, str) else x, name) for x in items)
        if any(v == "" for v in values):
            raise SketchpruneError(f"setting {name!r} has an empty item in {raw!r}; separate items by single commas")
        repeated = [v for i, v in enumerate(values) if v in values[:i]]
        if repeated:
            raise SketchpruneError(f"setting {name!r} lists {repeated[0]!r} twice; give each value once")
        return values
    if isinstance(raw, (list, tuple, dict)):
        raise SketchpruneError(f"setting {name!r} takes one {getattr(tp, '__name__', tp)}, got {raw!r}; "
                               "a list of values to try goes under grid:")
    try:
        if tp is bool:
            if isinstance(raw, str):
                if raw.lower() in ("1", "true", "yes", "on"):
                    return True
                if raw.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError(raw)
            if not isinstance(raw, (bool, int)) or raw not in (0, 1):
                raise ValueError(raw)
            return bool(raw)
        if tp in (int, float) and isinstance(raw, bool):
            raise ValueError(raw)  # YAML's true is not a number
        if tp is int and isinstance(raw, float) and not raw.is_integer():
            raise ValueError(raw)
        if tp is str and not isinstance(raw, str):
            raise ValueError(raw)
        return tp(raw)
    except (TypeError, ValueError, OverflowError):
        raise SketchpruneError(f"setting {name!r} must be {getattr(tp, '__name__', tp)}, got {raw!r}") from None


def parse_mapping(raw: Any, name: str) -> dict[str, Any]:
    """A mapping setting from a mapping, or from ``"key=value,key=value"`` (values stay strings)."""
    if isinstance(raw, Mapping):
        return dict(raw)
    if not isinstance(raw, str):
        raise SketchpruneError(f"setting {name!r} must be a mapping or 'key=value,...', got {raw!r}")
    out: dict[str, Any] = {}
    for item in raw.split(","):
        if not item.strip():
            continue
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise SketchpruneError(f"setting {name!r}: {item!r} is not key=value; write e.g. depth=6,width=100")
        out[key.strip()] = value.strip()
    return out


def keyword_values(fn: Callable[..., Any], values: Mapping[str, Any], what: str, skip: tuple[str, ...] = ()
                   ) -> dict[str, Any]:
    """``values`` checked against the keyword parameters of ``fn`` (except ``skip``) and converted
    to their annotated types; an unknown keyword is an error listing the known ones."""
    hints = typing.get_type_hints(fn)
    known = {n: p for n, p in inspect.signature(fn).parameters.items()
             if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and n not in skip}
    out = {}
    for k, v in values.items():
        if k not in known:
            listed = ", ".join(known) or "none"
            raise SketchpruneError(f"unknown option {k!r} for {what}; its options: {listed}")
        out[k] = parse_value(hints.get(k, type(known[k].default)), v, k)
    return out


def build(cls: type[T], values: Mapping[str, Any], base: T | None = None) -> T:
    """An instance of ``cls`` from ``values`` (unknown keys are an error naming the known ones)."""
    types = field_types(cls)
    unknown = [k for k in values if k not in types]
    if unknown:
        raise SketchpruneError(f"unknown setting {unknown[0]!r}; known settings: {', '.join(types)}")
    parsed = {k: parse_value(types[k], v, k) for k, v in values.items()}
    obj = dataclasses.replace(base, **parsed) if base is not None else cls(**parsed)  # type: ignore[type-var]
    if not isinstance(obj, Settings):  # Settings check themselves when made
        check_choices(obj)
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
