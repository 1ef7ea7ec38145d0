"""One error type for every bad input: a one-line message that says what to do instead."""

from __future__ import annotations


class SketchpruneError(ValueError):
    """Bad input. The message is one line and names the fix; the CLI prints it without a traceback."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))


def check(condition: bool, message: str) -> None:
    """Raise :class:`SketchpruneError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise SketchpruneError(message)


def check_density(density: object) -> None:
    """Reject a density outside (0, 1] (the one message every entry point gives)."""
    check(
        isinstance(density, (int, float)) and not isinstance(density, bool) and 0 < density <= 1,
        f"density must be in (0, 1], got {density!r}; for a compression ratio C use density 1/C",
    )


def check_finite(t, what: str) -> None:
    """Reject NaN or inf entries in tensor ``t`` (``what`` names it in the message)."""
    import torch

    if t.numel() and not all_finite(t):
        bad = "NaN" if bool(torch.isnan(t).any()) else "inf"
        raise SketchpruneError(f"{what} contain {bad}; pass finite values (check the model and data for overflow)")


def all_finite(t) -> bool:
    """True when ``t`` has no NaN or inf: one min/max pass (NaN propagates through both)."""
    import math

    import torch

    if not t.is_floating_point() or t.numel() == 0:
        return True
    lo, hi = torch.aminmax(t.detach().reshape(-1))
    return math.isfinite(float(lo)) and math.isfinite(float(hi))


def one_line_warnings() -> None:
    """Show warnings as one ``warning: ...`` line on stderr (the CLI and its worker processes)."""
    import sys
    import warnings

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        print(f"warning: {' '.join(str(message).split())}", file=sys.stderr)

    warnings.showwarning = show
