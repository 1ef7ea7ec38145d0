"""Helpers shared by the theory experiments: Monte Carlo summaries, reading text, tabular data."""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from sketchprune.errors import SketchpruneError, check

Z99 = 2.5758293035489004  # two-sided 99% normal quantile


def mc_summary(values: list[float] | Tensor) -> tuple[float, float]:
    """(mean, half-width of the 99% confidence interval of the mean)."""
    v = torch.as_tensor(values, dtype=torch.float64)
    if v.numel() < 2:
        return float(v.mean()), math.inf
    return float(v.mean()), Z99 * float(v.std()) / math.sqrt(v.numel())


def span(values: list[float], digits: int = 2, unit: str = "x") -> str:
    """'min to max' of a reading's ratios, e.g. '1.04x to 589.62x' ('n/a' when there are none)."""
    return f"{min(values):.{digits}f}{unit} to {max(values):.{digits}f}{unit}" if values else "n/a"


def ratios(pairs: Iterable[tuple[float, float]]) -> list[float]:
    """``a / b`` for each pair where the ratio says something: ``b > 0``. A cell where the reference
    error is 0 (every mask keeps every term: a budget of all of them, or one term) compares nothing
    and is left out, so a degenerate size is a valid result, never a division by zero."""
    return [a / b for a, b in pairs if b > 0]


def share(a: float, b: float) -> float:
    """``a / b``, a relative error: 0 when ``b`` is 0 (then ``a``, an error of approximating a zero
    quantity that is itself exact, is 0 too; inf if it is not)."""
    return a / b if b else (0.0 if a == 0 else math.inf)


def jaccard(a: Tensor, b: Tensor) -> float:
    """|a ∩ b| / |a ∪ b| of two boolean masks."""
    union = int((a | b).sum())
    return int((a & b).sum()) / union if union else 1.0


def load_table(path: str | Path, target: str) -> tuple[Tensor, Tensor, list[str]]:
    """Features ``X`` (N x d, float64), target ``y`` (N) and feature names from a CSV or NPZ file.

    CSV: a header row; ``target`` names the target column, every other column is a feature.
    NPZ: arrays ``X`` and ``y`` (``target`` may name another array for y). Errors name the
    problem and where it is.
    """
    path = Path(path)
    check(path.is_file(), f"data file {path} does not exist or is not a file; pass --data FILE.csv or FILE.npz")
    if path.suffix == ".npz":
        X, y, ykey = _read_npz_table(path, target or "y")
        names = [f"x{i}" for i in range(X.shape[1])]
    else:
        try:
            with open(path, newline="", encoding="utf-8") as f:
                rows = list(csv.reader(f))
        except (UnicodeDecodeError, csv.Error) as e:
            raise SketchpruneError(f"{path} is not a text CSV file ({type(e).__name__}); pass a CSV with a header "
                                   "row, or an .npz with arrays X and y") from None
        check(len(rows) >= 1, f"{path} is empty; it needs a header row and samples")
        header = [h.strip() for h in rows[0]]
        check(bool(target), f"{path}: pass --target COLUMN (columns: {', '.join(header)})")
        check(target in header, f"{path}: no target column {target!r}; columns are {', '.join(header)}")
        repeated = [h for i, h in enumerate(header) if h in header[:i]]
        check(not repeated, f"{path}: column {repeated[0] if repeated else ''!r} appears twice in the header; "
                            "give every column its own name")
        t = header.index(target)
        values = []
        for i, row in enumerate(rows[1:], start=2):
            check(len(row) == len(header), f"{path} line {i}: {len(row)} fields, header has {len(header)}")
            out = []
            for name, cell in zip(header, row):
                try:
                    v = float(cell)
                except ValueError:
                    raise SketchpruneError(f"{path} line {i}, column {name!r}: {cell!r} is not a number") from None
                check(math.isfinite(v), f"{path} line {i}, column {name!r}: {cell!r}; clean or drop that row")
                out.append(v)
            values.append(out)
        arr = np.array(values, dtype=np.float64).reshape(len(values), len(header))
        y = arr[:, t]
        X = np.delete(arr, t, axis=1)
        names = [h for h in header if h != target]
    check(len(X) >= 2, f"{path}: {len(X)} sample(s); at least 2 are needed")
    check(X.shape[1] >= 1, f"{path}: no feature columns besides the target")
    return torch.tensor(X, dtype=torch.float64), torch.tensor(y, dtype=torch.float64).reshape(-1), names


def _read_npz_table(path: Path, ykey: str) -> tuple[np.ndarray, np.ndarray, str]:
    """Arrays ``X`` (2-D, real, finite) and ``y`` (one value per row) of an ``.npz`` file."""
    try:
        with np.load(path, allow_pickle=False) as z:
            check("X" in z.files, f"{path}: no array 'X' (found {', '.join(z.files)}); save features as X")
            check(ykey in z.files, f"{path}: no target array {ykey!r} (found {', '.join(z.files)}); pass --target NAME")
            X, y = np.asarray(z["X"]), np.asarray(z[ykey])
    except SketchpruneError:
        raise
    except Exception as e:  # not a zip, truncated, pickled objects: numpy raises several types
        raise SketchpruneError(f"{path} is not a readable .npz of numeric arrays ({type(e).__name__}); save it with "
                               "numpy.savez(path, X=..., y=...)") from None
    for arr, what in ((X, "X"), (y, ykey)):
        check(np.issubdtype(arr.dtype, np.number) and not np.issubdtype(arr.dtype, np.complexfloating),
              f"{path}: {what} is not real-valued ({arr.dtype}); store real numbers")
    check(X.ndim == 2, f"{path}: X must be 2-D (samples x features), got shape {X.shape}")
    check(y.ndim == 1 or (y.ndim == 2 and y.shape[1] == 1),
          f"{path}: {ykey} must hold one value per sample, got shape {y.shape}")
    y = y.reshape(-1)
    check(len(X) == len(y), f"{path}: X has {len(X)} rows but {ykey} has {len(y)}; they must match")
    bad = np.argwhere(~np.isfinite(X))
    check(bad.size == 0, f"{path}: X has NaN/inf at row {bad[0][0] if bad.size else 0}; clean or drop that row")
    check(bool(np.isfinite(y).all()), f"{path}: {ykey} has NaN/inf; clean or drop those rows")
    return X.astype(np.float64), y.astype(np.float64), ykey


CONTRIBUTIONS = ("by-norm", "equal")


def synthetic_regression(n: int, d: int, generator: torch.Generator, noise: float = 0.1, spread: float = 1.0,
                         contributions: str = "by-norm") -> tuple[Tensor, Tensor]:
    """``X`` with log-normal column scales ``exp(spread * N(0, 1))`` and ``y = X w* + noise``.

    ``contributions="by-norm"``: ``w* ~ N(0, 1)``, so a feature's share of ``y`` grows with its
    norm and the features that matter at the end are the large ones (the pruning rules can
    differ); ``"equal"``: ``w* ~ N(0, 1) / scale``, every feature contributes alike whatever its
    norm (the rules can only tie, or the init rule loses). ``spread=0`` gives isotropic features.
    """
    scales = torch.exp(spread * torch.randn(d, generator=generator, dtype=torch.float64))
    X = torch.randn(n, d, generator=generator, dtype=torch.float64) * scales
    w_star = torch.randn(d, generator=generator, dtype=torch.float64)
    if contributions == "equal":
        w_star = w_star / scales
    return X, X @ w_star + noise * torch.randn(n, generator=generator, dtype=torch.float64)
