"""Atomic files: JSON, CSV, text, PNG and safetensors written to a temporary name and renamed into place.

A crash never leaves a half-written result behind: a reader sees the old file or the new one.
The temporary file is created with mode 0666, so the operating system applies the process's
umask as it does for any new file; nothing here reads or changes the umask.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import io
import json
import math
import os
import re
import secrets
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from sketchprune.errors import SketchpruneError


def _new_temp(path: Path) -> Path:
    """A new, empty file next to ``path`` with the mode an ordinary new file gets (0666 less the umask)."""
    while True:
        tmp = path.parent / f".{path.stem}.{secrets.token_hex(4)}{path.suffix}.tmp"
        try:
            fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp


_TEMP_NAME = re.compile(r"^\..+\.[0-9a-f]{8}(\.[^.]+)?\.tmp$")  # what _new_temp makes: .STEM.XXXXXXXX.SUFFIX.tmp


def remove_stale_temps(folder: str | os.PathLike, recursive: bool = False) -> list[Path]:
    """Delete the temporary files of atomic writes that a killed process left in ``folder`` (and its
    subfolders with ``recursive``; links are not followed); returns what was deleted. Only for a
    folder whose writer holds its lock: another writer's temporary file is in use."""
    folder = Path(folder)
    if not folder.is_dir() or folder.is_symlink():
        return []
    found = folder.rglob("*.tmp") if recursive else folder.glob("*.tmp")
    gone = []
    for p in found:
        if _TEMP_NAME.match(p.name) and p.is_file() and not p.is_symlink() and not any(
                (folder / q).is_symlink() for q in p.relative_to(folder).parents if q != Path(".")):
            p.unlink(missing_ok=True)
            gone.append(p)
    return gone


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is renamed onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _new_temp(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as e:  # a write error names the file it was writing (ENOSPC from write() names none)
        if e.filename is None:
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise
    except RuntimeError as e:  # torch.save reports a full disk as a RuntimeError of its stream writer
        if _disk_full(path.parent):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from e
        raise
    finally:
        if tmp.exists():
            tmp.unlink()


def _disk_full(folder: Path) -> bool:
    """Less than 1 MiB free where ``folder`` is (a write that failed there ran out of space)."""
    import shutil

    try:
        return shutil.disk_usage(folder).free < 2**20
    except OSError:
        return False


def create_json(path: str | os.PathLike, obj: Any) -> bool:
    """Write ``obj`` to ``path`` only if no file is there, atomically (complete or absent, and of two
    processes at once exactly one wins). Returns False when the file existed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _new_temp(path)
    try:
        tmp.write_text(to_json(obj))
        os.link(tmp, path)  # fails if path exists: an exclusive, complete publish
        return True
    except FileExistsError:
        return False
    finally:
        tmp.unlink()


@contextlib.contextmanager
def hold_lock(path: str | os.PathLike, busy: str) -> Iterator[None]:
    """Hold an exclusive lock on the file ``path`` (made if absent; never through a link, never another
    file's) while the block runs; ``busy`` is the error when another process holds it (``{pid}`` is
    replaced by that process's pid)."""
    import fcntl
    import stat

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as e:
        raise SketchpruneError(f"{path} cannot be opened as a lock ({e.strerror}); remove it if it is a link or not "
                               "a file") from None
    f = os.fdopen(fd, "r+")
    try:
        info = os.fstat(fd)
        if not (stat.S_ISREG(info.st_mode) and info.st_nlink == 1):
            raise SketchpruneError(f"{path} is not a plain file of its own (a link to another file?); remove it")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            raise SketchpruneError(busy.replace("{pid}", f.read().strip() or "?")) from None
        f.seek(0)
        f.truncate()  # ours: a plain file, opened without following links, and locked
        f.write(str(os.getpid()))
        f.flush()
        yield
    finally:
        f.close()  # closing releases the lock


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Atomically write ``data`` to ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Atomically write ``text`` to ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):  # numpy / torch scalars
        return _jsonable(obj.item())
    if isinstance(obj, Path):
        return str(obj)
    return obj


def to_json(obj: Any) -> str:
    """JSON text for results (non-finite floats become null / "inf")."""
    return json.dumps(_jsonable(obj), indent=2, sort_keys=False)


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Atomically write ``obj`` as JSON."""
    return write_text(path, to_json(obj) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text())


def write_csv(path: str | os.PathLike, rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> Path:
    """Atomically write ``rows`` (dicts) as CSV with the given column order."""
    columns = list(columns or (rows[0].keys() if rows else []))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({c: _jsonable(r.get(c)) for c in columns})
    return write_text(path, buf.getvalue())


def save_figure(fig: Any, path: str | os.PathLike) -> Path:
    """Atomically save a matplotlib figure as PNG and close it."""
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    return Path(path)


def safetensors_bytes(tensors: Mapping[str, Any], metadata: Mapping[str, str] | None = None) -> bytes:
    """``tensors`` (name -> torch tensor, any device) and ``metadata`` as safetensors bytes that
    depend on the contents only: the same tensors and metadata give the same bytes.

    safetensors itself writes its ``__metadata__`` map in a hash order that changes from one call
    to the next; here the header is rewritten with the metadata keys sorted, ``__metadata__``
    first and the tensors in the order of their data (the data bytes are safetensors' own).
    """
    from safetensors.torch import save

    raw = save({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()},
               metadata=dict(metadata) if metadata is not None else None)
    size = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + size])
    meta = header.pop("__metadata__", None)
    entries = sorted(header.items(), key=lambda kv: (kv[1]["data_offsets"], kv[0]))
    canonical = ({"__metadata__": dict(sorted(meta.items()))} if meta is not None else {}) | dict(entries)
    text = json.dumps(canonical, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned, as safetensors writes it
    return len(text).to_bytes(8, "little") + text + raw[8 + size:]


def write_safetensors(path: str | os.PathLike, tensors: Mapping[str, Any],
                      metadata: Mapping[str, str] | None = None) -> Path:
    """Atomically write ``tensors`` and ``metadata`` (str -> str) as a reproducible safetensors file
    (see :func:`safetensors_bytes`)."""
    return write_bytes(path, safetensors_bytes(tensors, metadata))


def read_safetensors(path: str | os.PathLike, *, fix: str, what: str = "file", tensors: bool = True
                     ) -> tuple[dict[str, Any], dict[str, str]]:
    """The tensors (on the CPU; none with ``tensors=False``) and metadata of a safetensors file; a
    damaged file is a one-line error naming it, its ``what`` and ``fix``."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            return ({k: f.get_tensor(k) for k in f.keys()} if tensors else {}), meta
    except Exception as e:  # safetensors raises its own error types for damaged headers and data
        raise SketchpruneError(f"{what} {path} is corrupt or not a safetensors file ({type(e).__name__}); "
                               f"{fix}") from None
