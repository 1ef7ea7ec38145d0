"""Readers for the standard data files: MNIST/Fashion-MNIST (IDX), CIFAR-10/100 (python batches),
Tiny ImageNet (folder layout). Each returns uint8 images ``(N, C, H, W)`` and int64 labels.

A missing file is an error naming ``--data-root``, ``$SKETCHPRUNE_DATA`` and ``--download``; a
file that does not parse is an error naming the file.
"""

from __future__ import annotations

import gzip
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from sketchprune.errors import SketchpruneError


def missing(path: Path, name: str) -> SketchpruneError:
    return SketchpruneError(
        f"{name}: {path} not found; put the files under --data-root (or $SKETCHPRUNE_DATA) "
        "or pass --download to fetch them"
    )


def corrupt(path: Path, why: str) -> SketchpruneError:
    return SketchpruneError(f"{path} is corrupt ({why}); delete it and fetch it again with --download")


# ---- IDX (MNIST, Fashion-MNIST) ------------------------------------------------------------
_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped): magic ``00 00 type ndim``, big-endian sizes, data."""
    if not path.exists():
        raise missing(path, "IDX file")
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise corrupt(path, f"bad gzip: {e}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise corrupt(path, "not an IDX file")
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise corrupt(path, "truncated header")
    shape = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    body = raw[4 + 4 * ndim:]
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(body) != expected:
        raise corrupt(path, f"{len(body)} data bytes, header says {expected}")
    return np.frombuffer(body, dtype=dtype).reshape(shape)


def _idx_pair(root: Path, images: str, labels: str) -> tuple[Tensor, Tensor]:
    def find(stem: str) -> Path:
        for cand in (root / stem, root / f"{stem}.gz"):
            if cand.exists():
                return cand
        raise missing(root / f"{stem}.gz", "IDX file")

    x = read_idx(find(images))
    y = read_idx(find(labels))
    if x.shape[0] != y.shape[0]:
        raise corrupt(root / images, f"{x.shape[0]} images but {y.shape[0]} labels")
    return torch.from_numpy(x.copy()).unsqueeze(1), torch.from_numpy(y.astype(np.int64))


def read_mnist(root: Path) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """MNIST-style folder: train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], t10k-*."""
    xtr, ytr = _idx_pair(root, "train-images-idx3-ubyte", "train-labels-idx1-ubyte")
    xte, yte = _idx_pair(root, "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    return xtr, ytr, xte, yte


# ---- CIFAR (python pickle batches) -----------------------------------------------------------
class _ArrayUnpickler(pickle.Unpickler):
    """Unpickler for CIFAR batches: only dicts, lists, bytes, strings and numpy arrays are allowed."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a CIFAR batch")


def read_cifar_batch(path: Path, label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR python batch: ``data`` (N x 3072 uint8) and labels under ``label_key``."""
    if not path.exists():
        raise missing(path, "CIFAR batch")
    try:
        with open(path, "rb") as f:
            d = _ArrayUnpickler(f, encoding="bytes").load()
        data = np.asarray(d[b"data"], dtype=np.uint8)
        labels = np.asarray(d[label_key], dtype=np.int64)
    except Exception as e:  # any parse failure is a corrupt file
        raise corrupt(path, f"{type(e).__name__}: {e}") from None
    if data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
        raise corrupt(path, f"data shape {data.shape}, {len(labels)} labels")
    return data.reshape(-1, 3, 32, 32), labels


def read_cifar(root: Path, classes: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """CIFAR-10 (``cifar-10-batches-py``) or CIFAR-100 (``cifar-100-python``) under ``root``."""
    if classes == 10:
        base = root / "cifar-10-batches-py"
        train = [read_cifar_batch(base / f"data_batch_{i}", b"labels") for i in range(1, 6)]
        test = [read_cifar_batch(base / "test_batch", b"labels")]
    else:
        base = root / "cifar-100-python"
        train = [read_cifar_batch(base / "train", b"fine_labels")]
        test = [read_cifar_batch(base / "test", b"fine_labels")]

    def cat(parts):
        return (torch.from_numpy(np.concatenate([p[0] for p in parts])),
                torch.from_numpy(np.concatenate([p[1] for p in parts])))

    return (*cat(train), *cat(test))


def extract_tar(archive: Path, root: Path) -> None:
    """Extract a downloaded ``.tar.gz`` into ``root`` (members outside ``root`` are refused)."""
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(root, filter="data")
    except (tarfile.TarError, OSError, EOFError) as e:
        raise corrupt(archive, f"bad archive: {e}") from None


# ---- Tiny ImageNet (folder layout) -----------------------------------------------------------
def _read_image(path: Path) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8).transpose(2, 0, 1)
    except Exception as e:
        raise corrupt(path, f"unreadable image: {type(e).__name__}") from None


def read_tiny_imagenet(root: Path) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``tiny-imagenet-200/``: wnids.txt, train/<wnid>/images/*.JPEG, val/images + val_annotations.txt.

    The labelled val split serves as the test set (the official test split has no labels).
    """
    base = root / "tiny-imagenet-200"
    wnids_file = base / "wnids.txt"
    if not wnids_file.exists():
        raise missing(wnids_file, "Tiny ImageNet")
    wnids = [w.strip() for w in wnids_file.read_text().split() if w.strip()]
    index = {w: i for i, w in enumerate(wnids)}
    xs, ys = [], []
    for w in wnids:
        for img in sorted((base / "train" / w / "images").glob("*")):
            xs.append(_read_image(img))
            ys.append(index[w])
    ann = base / "val" / "val_annotations.txt"
    if not ann.exists():
        raise missing(ann, "Tiny ImageNet")
    vx, vy = [], []
    for line in ann.read_text().splitlines():
        parts = line.split("\t")
        if len(parts) < 2 or parts[1] not in index:
            raise corrupt(ann, f"bad line {line[:60]!r}")
        vx.append(_read_image(base / "val" / "images" / parts[0]))
        vy.append(index[parts[1]])
    if not xs or not vx:
        raise corrupt(base, "no images found")
    return (torch.from_numpy(np.stack(xs)), torch.tensor(ys), torch.from_numpy(np.stack(vx)), torch.tensor(vy))
