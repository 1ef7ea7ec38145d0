"""``Masks``: a small mapping from parameter name to a boolean keep-mask, the result of pruning.

Applying masks needs no custom layers and nothing in the forward pass: pruned weights are set to
zero once, their gradients are zeroed in place after accumulation (so momentum and Adam moments
stay zero), and after every step of an optimizer that updates a masked parameter they are
re-zeroed, so they stay *exactly* zero under any ``torch.optim`` optimizer, weight decay included.
Both are one in-place multiply by a 0/1 tensor in the parameter's dtype (on this CPU 9x cheaper
than a multiply by the bool mask and 17x cheaper than ``masked_fill_``); the re-zeroing is one
fused ``_foreach_mul_`` over the optimizer's masked parameters, whose list is cached until a mask,
the parameter list or a dtype or device changes. The cost is these two passes over the masked
weights (``bench_train.py``). A multiply keeps a NaN a NaN, so where a non-finite value can reach
a pruned entry the zeros are assigned instead: when the masks are applied, and after the steps
of an optimizer with ``eps=0`` (Adam, RMSprop, Adagrad, Adadelta then divide 0 by 0 there).

Which optimizers re-zero: while any mask is applied, one optimizer step pre-hook
(``torch.optim.optimizer.register_optimizer_step_pre_hook``) looks at each optimizer once, when it
first steps and again only when a mask is added or removed or its parameter groups change; an
optimizer that updates a masked parameter gets its own post-step hook (``register_step_post_hook``)
and no other optimizer does. So an optimizer made before or after ``apply`` is covered, an
optimizer of unmasked parameters pays one cached look-up per step and nothing else, and when the
last handle is removed no hook of ours is left in the process.

Each :class:`MaskHandle` owns exactly what its ``apply`` added: a parameter keeps the masks of
all live handles and enforces their intersection, with one gradient hook however many there
are; applying the same ``Masks`` twice adds nothing (a count), and ``remove()`` takes back only
its own. A deep copy of a masked model (``copy.deepcopy``) is masked as the original is at the
time of the copy, for the copy's lifetime: its pruned weights stay exactly zero too.
"""

from __future__ import annotations

import itertools
import json
import os
import weakref
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from sketchprune.errors import SketchpruneError, check
from sketchprune.atomic import read_safetensors, write_safetensors

FORMAT = "sketchprune.masks"
FORMAT_VERSION = "1"
_STATE = "_sketchprune_masks"  # attribute on a masked Parameter: its _ParamMasks
_tokens = itertools.count()


class Masks(Mapping[str, Tensor]):
    """Name -> bool tensor (True = keep). Build with ``Masks(mapping)``."""

    def __init__(self, mapping: Mapping[str, Tensor], meta: Mapping[str, Any] | None = None) -> None:
        self.meta: dict[str, Any] = dict(meta or {})  # how the masks were made (prune fills it)
        self.start_state: dict[str, Tensor] | None = None  # weights to train from, when a method rewinds (imp)
        self._token = next(_tokens)  # identifies this object's masks on the parameters it is applied to
        self._masks: dict[str, Tensor] = {}
        for name, m in mapping.items():
            check(isinstance(m, Tensor), f"mask for {name!r} is not a tensor; pass bool tensors")
            check(m.dtype == torch.bool, f"mask for {name!r} has dtype {m.dtype}; masks are bool tensors")
            self._masks[name] = m

    def __getitem__(self, name: str) -> Tensor:
        return self._masks[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._masks)

    def __len__(self) -> int:
        return len(self._masks)

    def __repr__(self) -> str:
        return f"Masks({len(self)} tensors, density={self.density():.4g})"

    # ---- reports ---------------------------------------------------------------------------
    def counts(self) -> dict[str, tuple[int, int]]:
        """Name -> (kept, total)."""
        return {n: (int(m.sum().item()), m.numel()) for n, m in self._masks.items()}

    def density(self) -> float:
        """Fraction kept over all masked entries."""
        c = self.counts().values()
        total = sum(t for _, t in c)
        return sum(k for k, _ in c) / total if total else 0.0

    def layer_density(self) -> dict[str, float]:
        """Name -> fraction kept in that tensor."""
        return {n: k / t if t else 0.0 for n, (k, t) in self.counts().items()}

    def collapsed(self) -> list[str]:
        """Names of tensors with nothing kept (layer collapse: the network is cut there)."""
        return [n for n, (k, t) in self.counts().items() if t and k == 0]

    def report(self) -> dict[str, Any]:
        """JSON-ready summary: overall density, per-layer rows and collapsed layers."""
        counts = self.counts()
        kept = sum(k for k, _ in counts.values())
        total = sum(t for _, t in counts.values())
        return {
            "density": kept / total if total else 0.0,
            "kept": kept,
            "total": total,
            "collapsed": self.collapsed(),
            "layers": [
                {"name": n, "shape": list(self._masks[n].shape), "kept": k, "total": t, "density": k / t if t else 0.0}
                for n, (k, t) in counts.items()
            ],
        }

    def table(self) -> str:
        """Per-layer density table as text."""
        rep = self.report()
        width = max([len("layer")] + [len(r["name"]) for r in rep["layers"]])
        lines = [f"{'layer':<{width}}  {'kept':>10}  {'total':>10}  density"]
        for r in rep["layers"]:
            flag = "  COLLAPSED" if r["kept"] == 0 else ""
            lines.append(f"{r['name']:<{width}}  {r['kept']:>10}  {r['total']:>10}  {r['density']:.4f}{flag}")
        lines.append(f"{'total':<{width}}  {rep['kept']:>10}  {rep['total']:>10}  {rep['density']:.4f}")
        return "\n".join(lines)

    # ---- model -----------------------------------------------------------------------------
    def _check_model(self, model: nn.Module) -> dict[str, nn.Parameter]:
        params = dict(model.named_parameters())
        for name, m in self._masks.items():
            check(
                name in params,
                f"mask {name!r} names no parameter of this model; masks were made for another model "
                f"(its parameters include {', '.join(list(params)[:3])}, ...)",
            )
            check(
                tuple(params[name].shape) == tuple(m.shape),
                f"mask {name!r} has shape {tuple(m.shape)} but the parameter has {tuple(params[name].shape)}; "
                "prune this model again",
            )
        return params

    def apply(self, model: nn.Module) -> MaskHandle:
        """Zero the pruned weights of ``model`` and keep them exactly zero through optimizer steps.

        Returns a handle whose ``remove()`` takes back this application only (weights stay as
        they are); masks applied by other handles stay enforced.
        """
        params = self._check_model(model)
        _watch_optimizers()
        applied, owners = [], []
        for name, m in self._masks.items():
            p = params[name]
            state = getattr(p, _STATE, None)
            if state is None:
                state = _ParamMasks(p)
                setattr(p, _STATE, state)
                _LIVE[id(state)] = state
            state.add(self._token, m)
            with torch.no_grad():  # by assignment: a NaN or inf at a pruned position becomes 0 too
                p.masked_fill_(state.keep_for(p) == 0, 0)
            applied.append(p)
            owner = model.get_submodule(name.rpartition(".")[0])
            _KeepOnCopy.of(owner).add(p)
            owners.append(owner)
        return MaskHandle(applied, self._token, owners)

    def to_torch_prune(self, model: nn.Module) -> nn.Module:
        """Attach the masks with ``torch.nn.utils.prune.custom_from_mask`` (weight_orig + weight_mask)."""
        self._check_model(model)
        from torch.nn.utils import prune as torch_prune

        for name, m in self._masks.items():
            module_name, _, attr = name.rpartition(".")
            module = model.get_submodule(module_name)
            torch_prune.custom_from_mask(module, attr, m.to(getattr(module, attr).device))
        return model

    # ---- files -----------------------------------------------------------------------------
    def save(self, path: str | os.PathLike, metadata: Mapping[str, Any] | None = None) -> Path:
        """Write the masks atomically as safetensors, with format version and shapes in the header
        (the same masks and metadata give the same bytes)."""
        path = Path(path)
        check(not path.is_dir(), f"{path} is a folder; pass the path of a file, e.g. {path / 'masks.safetensors'}")
        user = dict(self.meta if metadata is None else metadata)
        try:
            user_json = json.dumps(user)
        except (TypeError, ValueError) as e:
            raise SketchpruneError(f"masks metadata must be JSON (strings, numbers, lists, mappings): {e}; "
                                   "convert the values before saving") from None
        meta = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "shapes": json.dumps({n: list(m.shape) for n, m in self._masks.items()}),
            "sha256": _digest(self._masks),
            "user": user_json,
        }
        return write_safetensors(path, self._masks, meta)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Masks:
        """Read masks written by :meth:`save`; a corrupt file or another format version is a clear error."""
        path = Path(path)
        check(path.exists(), f"mask file {path} does not exist; write one with `sketchprune prune --out DIR`")
        tensors, meta = read_safetensors(path, what="mask file", fix="write it again with Masks.save")
        check(meta.get("format") == FORMAT, f"{path} is not a sketchprune mask file; write it with Masks.save")
        version = meta.get("format_version")
        check(
            version == FORMAT_VERSION,
            f"{path} has mask format version {version}, this sketchprune reads version {FORMAT_VERSION}; "
            "re-create the masks with this version",
        )
        shapes = _json_object(meta, "shapes", path)
        check(set(shapes) == set(tensors), f"mask file {path} is corrupt: its header lists other tensors than it "
                                           "holds; write it again with Masks.save")
        for n, t in tensors.items():
            check(list(t.shape) == shapes.get(n), f"{path} is corrupt: shape of {n!r} disagrees with its header")
        check(meta.get("sha256") in (None, _digest(tensors)),  # files written before the digest have none
              f"mask file {path} is corrupt: its masks are not the ones it was written with (their digest "
              "differs); write it again with Masks.save")
        return cls(tensors, meta=_json_object(meta, "user", path))

    @staticmethod
    def load_metadata(path: str | os.PathLike) -> dict[str, Any]:
        """The ``metadata`` mapping given to :meth:`save`; a missing or corrupt file is a clear error."""
        path = Path(path)
        check(path.is_file(), f"mask file {path} does not exist; write one with `sketchprune prune --out DIR`")
        meta = read_safetensors(path, what="mask file", fix="write it again with Masks.save", tensors=False)[1]
        return _json_object(meta, "user", path)


def _digest(masks: Mapping[str, Tensor]) -> str:
    """sha256 of the masks' names, shapes and bytes (in name order): a changed byte is a changed digest."""
    import hashlib

    h = hashlib.sha256()
    for name in sorted(masks):
        m = masks[name].detach().to("cpu").contiguous()
        h.update(json.dumps([name, list(m.shape), str(m.dtype)]).encode())
        h.update(m.view(torch.uint8).numpy().tobytes() if m.dtype == torch.bool else m.numpy().tobytes())
    return h.hexdigest()


def _json_object(meta: Mapping[str, str], key: str, path: Path) -> dict[str, Any]:
    """The JSON object under ``key`` of a mask file's metadata (``{}`` when absent); text that is not
    JSON, or JSON that is not an object, is a one-line error naming the file."""
    try:
        value = json.loads(meta.get(key, "{}"))
    except ValueError:
        raise SketchpruneError(f"mask file {path} is corrupt (its {key} metadata is not JSON); "
                               "write it again with Masks.save") from None
    check(isinstance(value, dict), f"mask file {path} is corrupt (its {key} metadata is a {type(value).__name__}, "
                                   "not a JSON object); write it again with Masks.save")
    return value


class _KeepOnCopy:
    """Kept in each module that owns masked parameters, so that ``copy.deepcopy`` of the module (or of
    any module above it) is masked as the original is at the time of the copy: each copied parameter
    gets the masks its original has, enforced from then on for the copy's lifetime (removing the
    original's handle does not reach the copy). Pickling a module (``torch.save(model)``) carries no
    masks."""

    ATTR = "_sketchprune_keep_masks"
    __slots__ = ("params",)

    def __init__(self) -> None:
        self.params: list[nn.Parameter] = []

    @classmethod
    def of(cls, module: nn.Module) -> _KeepOnCopy:
        keeper = module.__dict__.get(cls.ATTR)
        if keeper is None:
            keeper = cls()
            object.__setattr__(module, cls.ATTR, keeper)
        return keeper

    def add(self, p: nn.Parameter) -> None:
        if not any(q is p for q in self.params):
            self.params.append(p)

    def __deepcopy__(self, memo: dict) -> _KeepOnCopy:
        import copy

        new = _KeepOnCopy()
        for p in self.params:
            state = getattr(p, _STATE, None)
            if state is None:
                continue
            q = copy.deepcopy(p, memo)  # the copy the module's copy holds (memo: one copy per parameter)
            if getattr(q, _STATE, None) is None:
                copied = _ParamMasks(q)
                copied.masks = dict(state.masks)
                setattr(q, _STATE, copied)
                _LIVE[id(copied)] = copied
                _changed()
                _watch_optimizers()
                with torch.no_grad():
                    q.masked_fill_(copied.keep_for(q) == 0, 0)
            new.params.append(q)
        return new

    def __reduce__(self) -> tuple:
        return (_KeepOnCopy, ())

    @classmethod
    def forget(cls, modules: Iterator[nn.Module]) -> None:
        """Drop unmasked parameters from the keepers of ``modules`` (and empty keepers)."""
        for module in modules:
            keeper = module.__dict__.get(cls.ATTR)
            if keeper is None:
                continue
            keeper.params = [p for p in keeper.params if hasattr(p, _STATE)]
            if not keeper.params:
                del module.__dict__[cls.ATTR]


class MaskHandle:
    """Returned by :meth:`Masks.apply`; ``remove()`` takes back that application (once)."""

    def __init__(self, params: list[nn.Parameter], token: int, owners: list[nn.Module] | None = None) -> None:
        self._params = params
        self._token = token
        self._owners = owners or []

    def remove(self) -> None:
        for p in self._params:
            state = getattr(p, _STATE, None)
            if state is not None and state.remove(self._token):
                delattr(p, _STATE)
                _LIVE.pop(id(state), None)
        _KeepOnCopy.forget(iter(self._owners))
        self._params, self._owners = [], []
        _unhook_unmasked()


class _ParamMasks:
    """The masks applied to one parameter: a count per applying ``Masks`` object, their
    intersection as a 0/1 tensor in the parameter's dtype, and the one gradient hook."""

    def __init__(self, p: nn.Parameter) -> None:
        self.masks: dict[int, tuple[Tensor, int]] = {}
        self.keep: Tensor | None = None
        self.hook = p.register_post_accumulate_grad_hook(_mask_grad)

    def add(self, token: int, mask: Tensor) -> None:
        m, count = self.masks.get(token, (mask, 0))
        self.masks[token] = (m, count + 1)
        if count == 0:
            self.keep = None
            _changed()

    def remove(self, token: int) -> bool:
        """Take back one application of ``token``; True when no mask is left (the hook is gone)."""
        if token not in self.masks:
            return False
        m, count = self.masks[token]
        if count > 1:
            self.masks[token] = (m, count - 1)
            return False
        del self.masks[token]
        self.keep = None
        _changed()
        if not self.masks:
            self.hook.remove()
            return True
        return False

    def keep_for(self, p: Tensor) -> Tensor:
        """The intersection of the masks, on ``p``'s device and in its dtype (made again when either changed)."""
        if self.keep is None or self.keep.device != p.device or self.keep.dtype != p.dtype:
            both = None
            for m, _ in self.masks.values():
                m = m.to(p.device)
                both = m if both is None else both & m
            self.keep = both.to(p.dtype)  # type: ignore[union-attr]
        return self.keep


def _keep_for(p: Tensor) -> Tensor | None:
    state = getattr(p, _STATE, None)
    return state.keep_for(p) if state is not None else None


@torch.no_grad()
def _mask_grad(p: nn.Parameter) -> None:
    """Zero the accumulated gradient of pruned entries in place (keeps optimizer state at zero)."""
    keep = _keep_for(p)
    if keep is not None and p.grad is not None:
        p.grad.mul_(keep)


_VERSION = itertools.count()  # the next value is taken whenever a mask is added or removed anywhere
_version = 0
_LIVE: weakref.WeakValueDictionary = weakref.WeakValueDictionary()  # id -> _ParamMasks of every masked parameter
_MASKED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # optimizer -> (key, params, keeps)
_WATCHED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # optimizer -> _Watch
_PRE_HOOK: Any = None  # the handle of the step pre-hook, while any mask is applied


def _changed() -> None:
    global _version
    _version = next(_VERSION)


class _Watch:
    """What the pre-hook knows of one optimizer: the key it was last looked at under (the mask
    version and its parameter groups), and its post-step hook when it updates masked parameters."""

    __slots__ = ("key", "hook")

    def __init__(self) -> None:
        self.key: Any = None
        self.hook: Any = None


def _groups_key(optimizer: torch.optim.Optimizer) -> tuple:
    return (_version, tuple((id(g["params"]), len(g["params"])) for g in optimizer.param_groups))


def _look_at(optimizer: torch.optim.Optimizer, *_: Any) -> None:
    """Step pre-hook: give ``optimizer`` a re-zeroing post-step hook when it updates a masked
    parameter, and take it back when it no longer does (looked at again only when masks or its
    parameter groups change, or its post-hook found nothing to re-zero)."""
    watch = _WATCHED.get(optimizer)
    if watch is None:
        watch = _WATCHED[optimizer] = _Watch()
    elif watch.key is not None and (watch.hook is not None or watch.key == _groups_key(optimizer)):
        return  # a hooked optimizer is followed by rezero itself; an unmasked one is unchanged
    masked = any(hasattr(p, _STATE) for g in optimizer.param_groups for p in g["params"])
    if masked and watch.hook is None:
        watch.hook = optimizer.register_step_post_hook(_rezero_hook)
    elif not masked and watch.hook is not None:
        watch.hook.remove()
        watch.hook = None
    watch.key = _groups_key(optimizer)


def _rezero_hook(optimizer: torch.optim.Optimizer, *_: Any) -> None:
    if not rezero(optimizer):  # nothing masked any more: the next pre-hook call takes the hook back
        watch = _WATCHED.get(optimizer)
        if watch is not None:
            watch.key = None


def _watch_optimizers() -> None:
    """Install the step pre-hook (once, while any mask is applied)."""
    global _PRE_HOOK
    if _PRE_HOOK is None:
        from torch.optim.optimizer import register_optimizer_step_pre_hook

        _PRE_HOOK = register_optimizer_step_pre_hook(_look_at)


def _unhook_unmasked() -> None:
    """After masks were removed: take the post-step hook back from every optimizer that no longer
    updates a masked parameter, and the pre-hook too when no mask is applied anywhere."""
    global _PRE_HOOK
    for optimizer, watch in list(_WATCHED.items()):
        if watch.hook is not None and not any(hasattr(p, _STATE) for g in optimizer.param_groups for p in g["params"]):
            watch.hook.remove()
            watch.hook = watch.key = None
    if not _LIVE:
        if _PRE_HOOK is not None:
            _PRE_HOOK.remove()
            _PRE_HOOK = None
        _WATCHED.clear()
        _MASKED.clear()


def _masked_of(optimizer: torch.optim.Optimizer) -> tuple[list[Tensor], list[Tensor]]:
    """The masked parameters ``optimizer`` updates and their keep tensors, cached until a mask, the
    optimizer's parameter list, or a parameter's device or dtype changes."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    key = (_version, tuple((id(p), p.device, p.dtype) for p in params))
    cached = _MASKED.get(optimizer)
    if cached is not None and cached[0] == key:
        return cached[1], cached[2]
    masked = [(p, keep) for p in params if (keep := _keep_for(p)) is not None]
    entry = (key, [p for p, _ in masked], [k for _, k in masked])
    _MASKED[optimizer] = entry
    return entry[1], entry[2]


@torch.no_grad()
def rezero(optimizer: torch.optim.Optimizer, *_: Any) -> int:
    """Zero the pruned entries of every masked parameter that ``optimizer`` updates (one fused
    multiply over all of them); returns how many masked parameters there were."""
    params, keeps = _masked_of(optimizer)
    if params and any(g.get("eps", 1.0) == 0 for g in optimizer.param_groups):
        for p, keep in zip(params, keeps):  # an eps of 0 divides 0 by 0 at pruned entries: assign, NaN * 0 is NaN
            p.masked_fill_(keep == 0, 0)
    elif params:
        torch._foreach_mul_(params, keeps)
    return len(params)


@torch.no_grad()
def zero_pruned_state(optimizer: torch.optim.Optimizer) -> None:
    """Zero ``optimizer``'s state at the pruned entries of the masked parameters it updates: every
    state tensor shaped like its parameter (SGD's momentum buffer, Adam's ``exp_avg`` and
    ``exp_avg_sq``, ...), so a weight pruned now and kept again later starts from no history.
    Scalar state (Adam's step count) and factored state of another shape are left as they are."""
    for p, keep in zip(*_masked_of(optimizer)):
        for value in optimizer.state.get(p, {}).values():
            if isinstance(value, Tensor) and value.shape == p.shape:
                value.mul_(keep.to(value.device, value.dtype))
