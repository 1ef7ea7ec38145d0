"""The registry: each pruning method registers once, with everything the rest of the code needs.

A method is one function and one frozen options dataclass (see :func:`register`). From that one
registration, ``prune`` validates the method's options, ``sketchprune prune`` / ``train`` get
one flag per option, sweep files accept the options as settings and grid axes (in the run hash
only when not the default), and the README's method table and the report's colours cover it.

Kinds:

* ``score``: ``fn(ctx) -> {name: scores}``; higher = keep; ``prune`` selects (top-k or sampled,
  any scope) and runs the rounds;
* ``mask``: ``fn(ctx) -> {name: bool mask}`` keeping exactly ``ctx.budget`` weights in all;
* ``train``: like ``mask``, but the method trains in the loop (``ctx.train`` is given).

Plugins: another installed package declares its module under the entry-point group
``sketchprune.methods``; importing it registers its methods, which then work like built-ins.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sketchprune import config as cfgmod
from sketchprune.errors import SketchpruneError, check

Scores = dict[str, Tensor]
KINDS = ("score", "mask", "train")
DATA = ("none", "optional", "required", "trains")
ENTRY_POINT_GROUP = "sketchprune.methods"


@dataclass(frozen=True)
class NoOptions:
    """The method has no options of its own."""


@dataclass(frozen=True)
class Method:
    """One registered pruning method: what the rest of the code needs to know about it."""

    name: str
    fn: Callable[[Context], dict[str, Tensor]]
    description: str
    """One line with the citation, e.g. "SNIP (Lee et al., ICLR 2019): |theta * dL/dtheta|"."""
    options: type = NoOptions
    """A frozen dataclass; each field is one option with its default and help (``config.setting``)."""
    kind: str = "score"
    data: str = "none"
    """``none`` (data-free), ``optional`` (uses data when given), ``required`` or ``trains`` (a train
    method: it needs a trainer, not scoring batches)."""
    signed: bool = False
    """Scores may be negative (higher = keep); sampling maps them with ``signed_map``."""
    rounds: int = 1
    """Default number of pruning rounds."""
    copies: bool = False
    """It changes the weights it scores, so ``prune`` hands it a copy of the model."""
    regrow: bool = False
    """Every round rescores all weights on the original values, pruned ones included."""
    sampling: str = ""
    """Mask methods: what ``mode='sample'`` means for them; empty = they refuse it."""
    source: str = "sketchprune"
    """Where it comes from: ``sketchprune`` or the plugin's entry point."""

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


@dataclass
class Context:
    """What a method sees during one ``prune`` call.

    ``model`` is the model being scored (``prune``'s working copy when the method ``copies`` or
    runs several rounds, with the dropped weights zeroed); ``params`` its prunable parameters.
    """

    method: Method
    model: nn.Module
    params: dict[str, nn.Parameter]
    options: Any
    generator: torch.Generator
    data: list[tuple[Tensor, Tensor]] | None = None
    input_shape: tuple[int, ...] | None = None
    budget: int = 0
    """Weights to keep in all (mask and train methods; score methods' rounds are prune's job)."""
    density: float = 1.0
    """The density ``prune`` is heading for."""
    originals: dict[str, Tensor] | None = None
    """Regrowing methods: the original values of ``params`` (the model holds them masked)."""
    trainer: Any = None
    """Train methods: a :class:`sketchprune.experiment.Trainer` (our training loop, with checkpoints)."""
    current: Callable[[], dict[str, Tensor]] | None = None
    """The current masks (set by ``prune`` between rounds); see :meth:`masks`."""
    state: dict[str, Any] = field(default_factory=dict)
    """Kept across the rounds of one ``prune`` call (e.g. SynFlow's prepared model)."""

    def masks(self) -> dict[str, Tensor]:
        """The current bool mask of each prunable tensor (all True before a round has dropped anything)."""
        if self.current is not None:
            return self.current()
        return {n: torch.ones(p.shape, dtype=torch.bool, device=p.device) for n, p in self.params.items()}

    @property
    def device(self) -> torch.device:
        return next(iter(self.params.values())).device

    def batches(self) -> list[tuple[Tensor, Tensor]]:
        """The data batches on the model's device; an error naming the method when there are none."""
        if not self.data:
            raise needs_data(self.method.name)
        return [(x.to(self.device), y.to(self.device)) for x, y in self.data]

    def shape(self) -> tuple[int, ...]:
        """The shape of one input; an error naming the fix when it is unknown."""
        if self.input_shape is None:
            raise SketchpruneError(f"{self.method.name} needs the input shape: pass data or input_shape=(C, H, W)")
        return tuple(self.input_shape)

    def inputs(self, samples: int) -> Tensor:
        """The data's inputs, or ``samples`` standard Gaussian inputs of the input shape (data-free)."""
        if self.data:
            return torch.cat([x for x, _ in self.batches()])
        return torch.randn((samples, *self.shape()), generator=self.generator).to(self.device)

    def loss_grads(self, loss: Callable[[Tensor, Tensor], Tensor] | None = None,
                   batches: list[tuple[Tensor, Tensor]] | None = None) -> Scores:
        """Gradient of the loss summed over ``batches`` (default: all) w.r.t. the prunable parameters
        (fresh tensors; ``.grad`` is left cleared). The loss defaults to summed cross-entropy."""
        loss = loss or (lambda out, y: F.cross_entropy(out, y, reduction="sum"))
        params = list(self.params.values())
        clear_grads(params)
        for x, y in batches if batches is not None else self.batches():
            loss(self.model(x), y).backward(inputs=params)
        grads = {n: grad_or_zeros(p) for n, p in self.params.items()}
        clear_grads(params)
        return grads


def clear_grads(params: list[nn.Parameter]) -> None:
    for p in params:
        p.grad = None


@torch.no_grad()
def make_absolute(model: nn.Module) -> nn.Module:
    """Every parameter and floating-point buffer of ``model`` replaced by its absolute value, in place
    (SynFlow's linearized network, fed an all-ones input). Returns ``model``."""
    for t in list(model.parameters()) + [b for b in model.buffers() if b.is_floating_point()]:
        t.abs_()
    return model


def grad_or_zeros(p: nn.Parameter) -> Tensor:
    """``p.grad``, or zeros when ``p`` got no gradient (unused in the forward)."""
    return p.grad if p.grad is not None else torch.zeros_like(p)


_METHODS: dict[str, Method] = {}
_RESERVED: dict[str, str] = {}  # setting name -> what already uses it
_plugins_loaded = False


def register(name: str, *, description: str, options: type = NoOptions, kind: str = "score", data: str = "none",
             signed: bool = False, rounds: int = 1, copies: bool = False, regrow: bool = False, sampling: str = ""
             ) -> Callable[[Callable], Callable]:
    """Register ``fn`` as method ``name`` (a decorator). ``fn`` returns fresh tensors and leaves the
    model's weights as they are unless ``copies`` is set (then ``prune`` gives it a copy)."""

    def deco(fn: Callable) -> Callable:
        method = Method(name, fn, description, options, kind, data, signed, rounds, copies, regrow, sampling,
                        _registering_source)
        _check_new(method)
        _METHODS[name] = method
        return fn

    return deco


_registering_source = "sketchprune"


def _check_new(m: Method) -> None:
    where = f"method {m.name!r} ({m.source})"
    check(m.name.isidentifier() and m.name == m.name.lower(),
          f"{where}: a method name is a lower-case identifier, e.g. my_method")
    check(m.name not in _METHODS, f"{where}: a method of that name is registered already "
                                  f"({_METHODS[m.name].source if m.name in _METHODS else ''})")
    check(m.kind in KINDS, f"{where}: kind must be one of {', '.join(KINDS)}, got {m.kind!r}")
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


def names() -> list[str]:
    """Every registered method, built-in or plugin, in registration order."""
    _load_plugins()
    return list(_METHODS)


def get(name: str) -> Method:
    """The method registered as ``name``; an unknown name is an error listing the known ones."""
    _load_plugins()
    if name not in _METHODS:
        raise SketchpruneError(f"unknown method {name!r}; known methods: {', '.join(_METHODS)}")
    return _METHODS[name]


def needs_data(method: str) -> SketchpruneError:
    """The error for a data-dependent method called without data."""
    free = ", ".join(m.name for m in _METHODS.values() if not m.needs_data)
    return SketchpruneError(
        f"method {method!r} needs data: pass data=[(inputs, targets), ...] (a DataLoader works), "
        f"or use a data-free method ({free})"
    )


def markdown_table(which: Callable[[Method], bool] = lambda m: True,
                   costs: Mapping[str, float | None] | None = None) -> str:
    """The methods table of the README: name, description with citation, kind, data, default rounds,
    options, and (given ``costs``: method -> seconds) the measured cost."""
    head = "| method | what it is | kind | data | rounds | options (default) |"
    rule = "|---|---|---|---|---|---|"
    if costs is not None:
        head, rule = head + " VGG-16-BN, 2 CPU threads |", rule + "---|"
    rows = [head, rule]
    for name in names():
        m = _METHODS[name]
        if not which(m):
            continue
        opts = ", ".join(f"`{k}={v}`" for k, v in m.defaults().items()) or "-"
        description = m.description.replace("|", "\\|")  # a bar inside a cell would end it
        row = f"| `{m.name}` | {description} | {m.kind} | {m.data} | {m.rounds} | {opts} |"
        if costs is not None:
            cost = costs.get(name)
            row += f" {cost:.3g} s |" if cost is not None else " (trains) |" if m.kind == "train" else " - |"
        rows.append(row)
    return "\n".join(rows) + "\n"
