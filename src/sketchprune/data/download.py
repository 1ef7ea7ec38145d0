"""Verified downloads: stream to a temporary file, check length and checksum, then rename.

An interrupted transfer or a checksum mismatch leaves no file behind and raises a one-line
error; a file in place is always complete and verified.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from sketchprune.errors import SketchpruneError, check


@dataclass(frozen=True)
class Remote:
    """A file to fetch: where from, its name under the data root, and ``algo:hexdigest``."""

    url: str
    filename: str
    checksum: str  # "sha256:..." (preferred) or "md5:..."


def file_digest(path: Path, algo: str) -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch(remote: Remote, root: Path, timeout: float = 60.0) -> Path:
    """Download ``remote`` into ``root`` unless a verified copy is there; return its path."""
    algo, _, expected = remote.checksum.partition(":")
    check(algo in ("sha256", "md5") and expected, f"bad checksum spec {remote.checksum!r}; use sha256:<hex>")
    dest = root / remote.filename
    if dest.exists() and file_digest(dest, algo) == expected:
        return dest
    root.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=root, prefix=f".{remote.filename}.", suffix=".part")
    try:
        h = hashlib.new(algo)
        got = 0
        try:
            with urllib.request.urlopen(remote.url, timeout=timeout) as resp, os.fdopen(fd, "wb") as out:
                length = resp.headers.get("Content-Length")
                while True:
                    block = resp.read(1 << 20)
                    if not block:
                        break
                    h.update(block)
                    out.write(block)
                    got += len(block)
        except (urllib.error.URLError, OSError, ValueError) as e:
            raise SketchpruneError(f"download of {remote.url} failed ({e}); check the network and retry") from None
        if length is not None and got != int(length):
            raise SketchpruneError(
                f"download of {remote.url} was cut short ({got} of {length} bytes); retry --download"
            )
        if h.hexdigest() != expected:
            raise SketchpruneError(
                f"checksum mismatch for {remote.filename}: got {algo} {h.hexdigest()[:16]}..., expected "
                f"{expected[:16]}...; the file was not kept, retry --download or check the source"
            )
        os.replace(tmp, dest)
        return dest
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
