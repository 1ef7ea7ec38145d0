"""The registry: each pruning method registers once, with everything the rest of the code needs.

A method is one function and one frozen options dataclass (see :func:`register`). From that one
registration, ``prune`` validates the method's options, ``sketchprune prune`` / ``train`` get
one flag per option, sweep files accept the options as settings and grid axes (in the run hash
only when not the default), and the README's method table lists it.

A method has a weight form (``fn(ctx: Context)``, used by ``prune``), a unit form
(``fn(ctx: UnitContext)``, used by ``prune_units`` and ``structure="units"``), or both: the same
name means the same idea at both granularities (``sketch``, ``synflow``, ``random``). The weight
form's kind is its runner (:mod:`sketchprune.methods.runners`):

* ``score``: ``fn(ctx) -> {name: scores}``; higher = keep; the runner selects (top-k or sampled,
  any scope) and runs the rounds;
* ``mask``: ``fn(ctx) -> {name: bool mask}`` (or a :class:`Built`) keeping exactly ``ctx.budget``
  weights in all;
* ``train``: like ``mask``, but the method trains in the loop (``ctx.trainer`` is given).

Plugins: another installed package declares its module under the entry-point group
``sketchprune.methods``; importing it registers its methods, which then work like built-ins.
"""

from __future__ import annotations

import dataclasses
import re
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sketchprune import config as cfgmod
from sketchprune.errors import SketchpruneError, check
from sketchprune.methods.runners import RUNNERS, Runner

KINDS = tuple(RUNNERS)
DATA = ("none", "optional", "required")
FORMS = ("weights", "units")
ENTRY_POINT_GROUP = "sketchprune.methods"


@dataclass(frozen=True)
class NoOptions:
    """The method has no options of its own."""


@dataclass(frozen=True)
class Method:
    """One registered pruning method: what the rest of the code needs to know about it."""

    name: str
    description: str
    """One line with the citation, e.g. "SNIP (Lee et al., ICLR 2019): |theta * dL/dtheta|"."""
    fn: Callable[..., Any] | None = None
    """The weight form: ``fn(Context)``, run by ``runner``; None for a unit-only method."""
    units: Callable[..., Any] | None = None
    """The unit form: ``fn(UnitContext) -> [one score tensor per unit group]``; None without one."""
    options: type = NoOptions
    """A frozen dataclass; each field is one option with its default and help (``config.setting``)."""
    runner: Runner = RUNNERS["score"]
    """How the weight form becomes a mask (score rounds, a built mask, a training loop)."""
    data: str = "none"
    """``none`` (data-free), ``optional`` (uses data when given) or ``required``."""
    signed: bool = False
    """Scores may be negative (higher = keep); sampling maps them with ``signed_map``."""
    rounds: int = 1
    """Default number of pruning rounds."""
    copies: bool = False
    """It changes the weights it scores, so ``prune`` hands it a copy of the model."""
    regrow: bool = False
    """Every round rescores all weights on the original values, pruned ones included."""
    source: str = "sketchprune"
    """Where it comes from: ``sketchprune`` or the plugin's entry point."""

    @property
    def kind(self) -> str:
        """The weight form's kind: ``score``, ``mask`` or ``train`` (its runner's)."""
        return self.runner.kind

    @property
    def forms(self) -> tuple[str, ...]:
        """``weights`` and / or ``units``: the granularities the method prunes at."""
        return tuple(f for f, fn in zip(FORMS, (self.fn, self.units)) if fn is not None)

    def check_form(self, form: str) -> None:
        """A one-line error when the method has no ``form`` (``weights`` or ``units``), naming those that do."""
        if form not in self.forms:
            have = ", ".join(names(form))
            what = "unit form (structure=units)" if form == "units" else "weight form"
            raise SketchpruneError(f"method {self.name!r} has no {what}; methods that have one: {have}")

    @property
    def needs_data(self) -> bool:
        return self.data == "required"

    def option_fields(self) -> list[dataclasses.Field]:
        return list(dataclasses.fields(self.options))

    def defaults(self) -> dict[str, Any]:
        """Option name -> default value."""
        return cfgmod.to_dict(self.options())

    def make_options(self, values: Mapping[str, Any] | None = None) -> Any:
        """The method's options from ``values`` (types converted, values checked); unknown or
        another method's option is a one-line error listing the valid ones."""
        values = dict(values or {})
        own = {f.name for f in self.option_fields()}
        for key in values:
            if key not in own:
                owner = option_owner(key)
                if owner is not None:
                    raise SketchpruneError(f"option {key!r} belongs to method {owner!r}, not {self.name!r}; "
                                           f"drop it or use method {owner!r}")
                listed = ", ".join(sorted(own)) or "none"
                raise SketchpruneError(f"unknown option {key!r} for method {self.name!r}; its options: {listed}")
        return cfgmod.build(self.options, values)

    def non_default(self, values: Mapping[str, Any] | None) -> dict[str, Any]:
        """The options of ``values`` that differ from the defaults, as plain values (run hashes)."""
        return cfgmod.non_default(self.make_options(values))


_METHODS: dict[str, Method] = {}
_RESERVED: dict[str, str] = {}  # setting name -> what already uses it
_plugins_loaded = False


def register(name: str, *, description: str, options: type = NoOptions, kind: str | Runner = "score",
             data: str = "none", signed: bool = False, rounds: int = 1, copies: bool = False, regrow: bool = False
             ) -> Callable[[Callable], Callable]:
    """Register ``fn`` as the weight form of method ``name`` (a decorator). ``fn`` returns fresh
    tensors and leaves the model's weights as they are unless ``copies`` is set (then ``prune``
    gives it a copy). ``kind`` names a runner (``score``, ``mask``, ``train``) or is one."""

    def deco(fn: Callable) -> Callable:
        check(isinstance(kind, Runner) or kind in RUNNERS,
              f"method {name!r}: kind must be one of {', '.join(RUNNERS)}, got {kind!r}")
        runner = kind if isinstance(kind, Runner) else RUNNERS[kind]
        method = Method(name, description, fn, None, options, runner, data, signed, rounds, copies, regrow,
                        _registering_source)
        _check_new(method)
        _METHODS[name] = method
        return fn

    return deco


def register_units(name: str, *, description: str | None = None, data: str | None = None
                   ) -> Callable[[Callable], Callable]:
    """Register ``fn`` as the unit form of method ``name`` (a decorator): it joins the weight form
    registered under that name (from the same source), or makes a unit-only method (then give
    ``description``). ``fn(UnitContext)`` returns one float64 score tensor per unit group."""

    def deco(fn: Callable) -> Callable:
        held = _METHODS.get(name)
        if held is None:
            check(bool(description), f"unit method {name!r}: give a one-line description with its citation")
            method = Method(name, description or "", None, fn, data=data or "none", source=_registering_source)
            _check_new(method)
        else:
            check(held.units is None, f"unit method {name!r} ({_registering_source}): a unit form of that name is "
                                      f"registered already ({held.source})")
            check(held.source == _registering_source, f"unit method {name!r} ({_registering_source}): method "
                  f"{name!r} comes from {held.source}; a unit form joins a method of its own source")
            method = dataclasses.replace(held, units=fn, description=held.description if description is None
                                         else description, data=held.data if data is None else data)
            check(method.data in DATA, f"unit method {name!r}: data must be one of {', '.join(DATA)}, got {data!r}")
        _METHODS[name] = method
        return fn

    return deco


_registering_source = "sketchprune"


def _check_new(m: Method) -> None:
    where = f"method {m.name!r} ({m.source})"
    check(re.fullmatch(r"[a-z0-9][a-z0-9_]*", m.name) is not None,
          f"{where}: a method name is a lower-case identifier (letters, digits and _), e.g. my_method")
    check(m.name not in _METHODS, f"{where}: a method of that name is registered already "
                                  f"({_METHODS[m.name].source if m.name in _METHODS else ''})")
    check(m.data in DATA, f"{where}: data must be one of {', '.join(DATA)}, got {m.data!r}")
    check(isinstance(m.rounds, int) and m.rounds >= 1, f"{where}: rounds must be an integer >= 1")
    check(bool(m.description.strip()), f"{where}: give a one-line description with its citation")
    check(dataclasses.is_dataclass(m.options) and m.options.__dataclass_params__.frozen,  # type: ignore[attr-defined]
          f"{where}: options must be a frozen dataclass")
    try:
        m.options()
    except TypeError:
        raise SketchpruneError(f"{where}: every option needs a default") from None
    for f in m.option_fields():
        owner = option_owner(f.name)
        check(owner is None, f"{where}: option {f.name!r} is an option of method {owner!r} already; "
                             f"prefix it with the method name, e.g. {m.name}_{f.name}")
        check(f.name not in _RESERVED, f"{where}: option {f.name!r} is {_RESERVED.get(f.name)}; "
                                       f"prefix it with the method name, e.g. {m.name}_{f.name}")


def reserve(names: list[str], what: str) -> None:
    """Declare setting names that no method option may take (``what`` says who uses them)."""
    for n in names:
        owner = option_owner(n)
        check(owner is None, f"setting {n!r} of {what} is an option of method {owner!r} too; rename the option")
        _RESERVED.setdefault(n, f"a setting of {what}")


def option_owner(option: str) -> str | None:
    """The method whose option is named ``option``, or None."""
    for m in _METHODS.values():
        if any(f.name == option for f in m.option_fields()):
            return m.name
    return None


def _load_plugins() -> None:
    """Import every module declared under the ``sketchprune.methods`` entry-point group (once)."""
    global _plugins_loaded, _registering_source
    if _plugins_loaded:
        return
    _plugins_loaded = True
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        _registering_source = f"plugin {ep.name} ({ep.value})"
        try:
            ep.load()
        except SketchpruneError:
            raise
        except Exception as e:  # a broken plugin must not take the library down with it
            warnings.warn(f"sketchprune plugin {ep.name!r} ({ep.value}) failed to load: {type(e).__name__}: {e}",
                          RuntimeWarning, stacklevel=2)
        finally:
            _registering_source = "sketchprune"


def names(form: str | None = None) -> list[str]:
    """Every registered method, built-in or plugin, in registration order; with ``form``
    (``weights`` or ``units``) only those that have that form."""
    _load_plugins()
    check(form is None or form in FORMS, f"unknown form {form!r}; use one of {', '.join(FORMS)}")
    return [n for n, m in _METHODS.items() if form is None or form in m.forms]


def get(name: str) -> Method:
    """The method registered as ``name``; an unknown name is an error listing the known ones."""
    _load_plugins()
    if name not in _METHODS:
        raise SketchpruneError(f"unknown method {name!r}; known methods: {', '.join(_METHODS)}")
    return _METHODS[name]


def needs_data(method: str, units: bool = False) -> SketchpruneError:
    """The error for a data-dependent method called without data."""
    free = ", ".join(n for n in names("units" if units else "weights") if not _METHODS[n].needs_data)
    return SketchpruneError(
        f"method {method!r} needs data: pass data=[(inputs, targets), ...] (a DataLoader works), "
        f"or use a data-free method ({free})"
    )


def markdown_table(which: Callable[[Method], bool] = lambda m: True,
                   costs: Mapping[str, float | None] | None = None) -> str:
    """The methods table of the README: name, description with citation, forms, kind, data, default
    rounds, options, and (given ``costs``: method -> seconds) the measured cost."""
    head = "| method | what it is | forms | kind | data | rounds | options (default) |"
    rule = "|---|---|---|---|---|---|---|"
    if costs is not None:
        head, rule = head + " VGG-16-BN, 2 CPU threads |", rule + "---|"
    rows = [head, rule]
    for name in names():
        m = _METHODS[name]
        if not which(m):
            continue
        opts = ", ".join(f"`{k}={v}`" for k, v in m.defaults().items()) or "-"
        description = m.description.replace("|", "\\|")  # a bar inside a cell would end it
        weights = m.fn is not None
        data = (m.runner.data_label if weights else None) or m.data
        row = (f"| `{m.name}` | {description} | {', '.join(m.forms)} | {m.kind if weights else '-'} | {data} | "
               f"{m.rounds if weights else '-'} | {opts} |")
        if costs is not None:
            cost = costs.get(name)
            row += f" {cost:.3g} s |" if cost is not None else " (trains) |" if m.runner.needs_trainer else " - |"
        rows.append(row)
    return "\n".join(rows) + "\n"
