"""Data sets as tensors: ``load(name, root=None, download=False)`` and ``names()``.

Shipped or generated here: ``synthetic`` (Gaussian-mixture classification), ``mnist1d``
(generated offline by the ``mnist1d`` package and cached as ``.npz``) and ``digits``
(scikit-learn's 8x8 digits); ``tokens`` (a synthetic next-token task of int64 token sequences, for
token models: :mod:`sketchprune.data.tokens`). ``fashion-mnist`` is read offline from Debian's
``dataset-fashion-mnist`` package (:data:`SYSTEM_FOLDERS`) when the data root has no copy.
Everything is held as tensors; see :class:`Dataset`.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from sketchprune import config as cfgmod
from sketchprune.data import download, files, tokens
from sketchprune.errors import SketchpruneError, check


@dataclass
class Dataset:
    """Train/test tensors with their shape facts. ``x`` are float32; ``y`` int64 class labels, or
    for ``task="regression"`` float32 targets of shape ``(n, outputs)`` (then ``num_classes`` is the
    number of outputs). The task names the loss (:mod:`sketchprune.losses`) and the metric."""

    name: str
    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor
    num_classes: int
    image: bool = False  # batch-level crop/flip augmentation applies
    task: str = "classification"  # or "regression": mean squared error instead of cross-entropy

    def __post_init__(self) -> None:
        check(self.task in ("classification", "regression"),
              f"dataset {self.name}: task must be classification or regression, got {self.task!r}")
        floats = self.train_y.is_floating_point() and self.test_y.is_floating_point()
        labels = not self.train_y.is_floating_point() and not self.test_y.is_floating_point()
        check(floats if self.task == "regression" else labels,
              f"dataset {self.name}: a {self.task} data set needs "
              f"{'float targets' if self.task == 'regression' else 'integer class labels'} in train_y and test_y")

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train_x.shape[1:])

    def to(self, device: torch.device | str) -> Dataset:
        return Dataset(self.name, self.train_x.to(device), self.train_y.to(device), self.test_x.to(device),
                       self.test_y.to(device), self.num_classes, self.image, self.task)


def default_root() -> Path:
    """``$SKETCHPRUNE_DATA`` or ``~/.cache/sketchprune``."""
    return Path(os.environ.get("SKETCHPRUNE_DATA", Path.home() / ".cache" / "sketchprune"))


def _standardize(train: Tensor, test: Tensor) -> tuple[Tensor, Tensor]:
    mean = train.mean(0, keepdim=True)
    std = train.std(0, keepdim=True).clamp_min(1e-6)
    return (train - mean) / std, (test - mean) / std


def synthetic(root: Path, download: bool) -> Dataset:
    """10-class Gaussian mixture in 32 dimensions (fixed seed): 2000 train, 1000 test samples."""
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(10, 32, generator=g) * 1.5

    def draw(n: int) -> tuple[Tensor, Tensor]:
        y = torch.randint(0, 10, (n,), generator=g)
        return centers[y] + torch.randn(n, 32, generator=g) * 2.0, y

    (xtr, ytr), (xte, yte) = draw(2000), draw(1000)
    return Dataset("synthetic", xtr, ytr, xte, yte, 10)


def digits(root: Path, download: bool) -> Dataset:
    """scikit-learn's 8x8 digits as 1x8x8 images, standardized; a fixed 1297 / 500 split."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.data, dtype=torch.float32).view(-1, 1, 8, 8) / 16.0
    y = torch.tensor(d.target, dtype=torch.int64)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    x, y = x[perm], y[perm]
    xtr, xte = _standardize(x[:1297], x[1297:])
    return Dataset("digits", xtr, y[:1297], xte, y[1297:], 10)


def mnist1d(root: Path, download: bool, *, samples: int = 5000, train_split: float = 0.8) -> Dataset:
    """MNIST-1D (Greydanus 2020): ``samples`` sequences of length 40 (default 4000 train / 1000 test),
    generated offline by the ``mnist1d`` package and cached under a name that carries the generator's
    version (``mnist1d-<version>[-<samples>-<split>].npz``). A cache that is damaged, or whose
    shapes, dtypes or labels are not what the generator makes for these settings, is generated again."""
    import importlib.metadata
    import warnings

    from mnist1d.data import get_dataset_args

    check(samples >= 10, f"mnist1d samples must be >= 10, got {samples}")
    check(0 < train_split < 1, f"mnist1d train_split must be in (0, 1), got {train_split}")
    version = importlib.metadata.version("mnist1d")
    default = (samples, train_split) == (5000, 0.8)
    cache = root / (f"mnist1d-{version}.npz" if default else f"mnist1d-{version}-{samples}-{train_split:g}.npz")
    keys = ("x", "y", "x_test", "y_test")
    args = get_dataset_args()
    args.num_samples, args.train_split = samples, train_split
    arrays = _read_npz(cache, keys) if cache.exists() else None
    wrong = _mnist1d_problem(arrays, args) if arrays is not None else None
    if wrong:
        warnings.warn(f"the cached data file {cache} {wrong}; generating it again", RuntimeWarning, stacklevel=2)
    if arrays is None or wrong:
        from mnist1d.data import make_dataset

        from sketchprune.atomic import atomic_path

        d = make_dataset(args)
        arrays = [d[k] for k in keys]
        wrong = _mnist1d_problem(arrays, args)
        check(wrong is None, f"the mnist1d generator {version} made data that {wrong}; install the version "
                             "sketchprune is tested with (pip install 'mnist1d==0.0.2.post1')")
        with atomic_path(cache) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **{k: d[k] for k in keys})
    xtr, ytr, xte, yte = (torch.from_numpy(np.asarray(a)) for a in arrays)
    xtr, xte = _standardize(xtr.float(), xte.float())
    return Dataset("mnist1d", xtr, ytr.long(), xte, yte.long(), 10)


def _mnist1d_problem(arrays: list[np.ndarray], args: Any) -> str | None:
    """What is wrong with MNIST-1D ``arrays`` (x, y, x_test, y_test) for generator settings ``args``
    (as a phrase: "has ..."), or None when they are what the generator makes: finite float
    sequences of ``final_seq_length``, ``num_samples // 10 * 10`` of them split at ``train_split``,
    integer labels 0-9."""
    x, y, x_test, y_test = (np.asarray(a) for a in arrays)
    total = args.num_samples // 10 * 10
    n_train = int(total * args.train_split)
    length = args.final_seq_length
    for name, a, rows in (("x", x, n_train), ("x_test", x_test, total - n_train)):
        if a.dtype.kind != "f" or a.ndim != 2 or a.shape != (rows, length):
            return f"has {name} of shape {a.shape} ({a.dtype}), not ({rows}, {length}) floats"
        if not np.isfinite(a).all():
            return f"has non-finite values in {name}"
    for name, a, rows in (("y", y, n_train), ("y_test", y_test, total - n_train)):
        if a.dtype.kind not in "iu" or a.shape != (rows,):
            return f"has {name} of shape {a.shape} ({a.dtype}), not ({rows},) integer labels"
        if a.size and (a.min() < 0 or a.max() > 9):
            return f"has labels outside 0-9 in {name} ({a.min()} to {a.max()})"
    return None


def token_task(root: Path, download: bool, *, samples: int = 5000, vocab: int = 16, length: int = 16,
               noise: float = 0.2) -> Dataset:
    """``tokens``: ``samples`` sequences (4000 train / 1000 test) of ``length`` int64 token indices, the
    next token the target (``vocab`` classes), generated here (:mod:`sketchprune.data.tokens`)."""
    xtr, ytr, xte, yte = tokens.markov_tokens(samples=samples, vocab=vocab, length=length, noise=noise)
    return Dataset("tokens", xtr, ytr, xte, yte, vocab)


def _read_npz(path: Path, keys: tuple[str, ...]) -> list[np.ndarray] | None:
    """The arrays ``keys`` of a cached ``.npz``, or None when the file is damaged (then it is made again)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return [z[k] for k in keys]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        import warnings

        warnings.warn(f"the cached data file {path} is damaged; generating it again", RuntimeWarning, stacklevel=3)
        return None


def _images(name: str, parts: tuple[Tensor, Tensor, Tensor, Tensor], classes: int) -> Dataset:
    """uint8 images -> float32 in [0, 1], standardized per channel with the training statistics."""
    xtr, ytr, xte, yte = parts
    xtr, xte = xtr.float() / 255.0, xte.float() / 255.0
    mean = xtr.mean((0, 2, 3), keepdim=True)
    std = xtr.std((0, 2, 3), keepdim=True).clamp_min(1e-6)
    return Dataset(name, (xtr - mean) / std, ytr.long(), (xte - mean) / std, yte.long(), classes, image=True)


def _mnist_like(name: str, base_url: str, checksums: dict[str, str]):
    stems = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")

    def loader(root: Path, download_: bool) -> Dataset:
        folder = root / name
        if download_:
            for stem in stems:
                download.fetch(download.Remote(f"{base_url}{stem}.gz", f"{stem}.gz", checksums[stem]), folder)
        elif not _has_idx(folder, stems) and name in SYSTEM_FOLDERS:
            system, package = SYSTEM_FOLDERS[name]
            if not _has_idx(system, stems):
                raise SketchpruneError(f"{name}: no IDX files under {folder} or {system}; install them with "
                                       f"`apt-get install {package}` (Debian/Ubuntu), put them under --data-root, or "
                                       "pass --download")
            folder = system
        return _images(name, files.read_mnist(folder), 10)

    where = f" (or, when that has none, {SYSTEM_FOLDERS[name][0]}/)" if name in SYSTEM_FOLDERS else ""
    loader.__doc__ = f"{name} from its IDX files under <root>/{name}/{where}."
    return loader


SYSTEM_FOLDERS: dict[str, tuple[Path, str]] = {
    "fashion-mnist": (Path("/usr/share/datasets/fashion-mnist"), "dataset-fashion-mnist"),
}
"""Data set -> (folder, Debian package): where a system package installs a data set's files;
``load`` reads them from there when the data root has none (files under the root win)."""


def _has_idx(folder: Path, stems: tuple[str, ...]) -> bool:
    """Whether ``folder`` holds every IDX file of ``stems`` (plain or gzipped)."""
    return all((folder / s).is_file() or (folder / f"{s}.gz").is_file() for s in stems)


def _archive_loader(name: str, remote: download.Remote, read: Callable[[Path], tuple], classes: int):
    def loader(root: Path, download_: bool) -> Dataset:
        if download_:
            archive = download.fetch(remote, root)
            if remote.filename.endswith(".zip"):
                import zipfile

                with zipfile.ZipFile(archive) as z:
                    z.extractall(root)
            else:
                files.extract_tar(archive, root)
        return _images(name, read(root), classes)

    loader.__doc__ = f"{name} from its standard files under <root>/ ({remote.filename} extracted)."
    return loader


_MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
_FASHION_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
_LOADERS: dict[str, Callable[[Path, bool], Dataset]] = {
    "synthetic": synthetic,
    "digits": digits,
    "mnist1d": mnist1d,
    "tokens": token_task,
    # md5 where that is what the publishers list; sha256 where it is known
    "mnist": _mnist_like("mnist", _MNIST_URL, {
        "train-images-idx3-ubyte": "md5:f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte": "md5:d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte": "md5:9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte": "md5:ec29112dd5afa0611ce80d1b7f02629c"}),
    "fashion-mnist": _mnist_like("fashion-mnist", _FASHION_URL, {
        "train-images-idx3-ubyte": "md5:8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte": "md5:25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte": "md5:bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte": "md5:bb300cfdad3c16e7a12a480ee83cd310"}),
    "cifar10": _archive_loader("cifar10", download.Remote(
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", "cifar-10-python.tar.gz",
        "sha256:6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"),
        lambda r: files.read_cifar(r, 10), 10),
    "cifar100": _archive_loader("cifar100", download.Remote(
        "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz", "cifar-100-python.tar.gz",
        "md5:eb9058c3a382ffc7106e4002c42a8d85"), lambda r: files.read_cifar(r, 100), 100),
    "tiny-imagenet": _archive_loader("tiny-imagenet", download.Remote(
        "http://cs231n.stanford.edu/tiny-imagenet-200.zip", "tiny-imagenet-200.zip",
        "md5:90528d7ca1a48142e341f4ef8d21d0de"), files.read_tiny_imagenet, 200),
}


IMAGE_SETS = ("mnist", "fashion-mnist", "cifar10", "cifar100", "tiny-imagenet")
"""Data sets whose batches take crop-and-flip augmentation (``Dataset.image``)."""


def names() -> list[str]:
    """Names accepted by :func:`load`."""
    return sorted(_LOADERS)


def _loader(name: str) -> Callable[..., Dataset]:
    if name not in _LOADERS:
        raise SketchpruneError(f"unknown dataset {name!r}; known datasets: {', '.join(names())}")
    return _LOADERS[name]


def options(name: str, values: dict[str, Any]) -> dict[str, Any]:
    """``values`` checked against data set ``name``'s keywords and converted to their types."""
    return cfgmod.keyword_values(_loader(name), values, f"data set {name!r}", skip=("root", "download"))


def load(name: str, *, root: str | os.PathLike | None = None, download: bool = False, **opts: Any) -> Dataset:
    """Load data set ``name`` from ``root`` (default :func:`default_root`); ``opts`` are its keywords
    (e.g. ``samples`` for MNIST-1D)."""
    loader = _loader(name)
    return loader(Path(root) if root is not None else default_root(), download, **options(name, opts))
