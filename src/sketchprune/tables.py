"""Tables of result rows (dicts): one cell format, as aligned text, Markdown or HTML."""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any


def format_cell(v: Any) -> str:
    """One table cell: floats to 4 significant digits, None as "-"."""
    if isinstance(v, float):
        return f"{v:.4g}"
    return "-" if v is None else str(v)


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """Rows of dicts as an aligned text table."""
    if not rows:
        return "(no rows)"
    columns = list(columns or rows[0].keys())
    cells = [[format_cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    head = "  ".join(c.rjust(w) for c, w in zip(columns, widths))
    lines = [head, "  ".join("-" * w for w in widths)]
    lines += ["  ".join(x.rjust(w) for x, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """Rows of dicts as a Markdown table with the given columns."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(format_cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def html_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None,
               bold: set[tuple[int, str]] = frozenset()) -> str:  # type: ignore[assignment]
    """Rows of dicts as an HTML table. Every cell is escaped; the cells at ``bold`` ((row index,
    column) pairs) are then set in bold, so no cell text ever reaches the page as markup."""
    if not rows:
        return "<p>(none)</p>"
    columns = list(columns or rows[0].keys())
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)

    def cell(i: int, c: str, v: Any) -> str:
        text = html.escape(format_cell(v))
        return f"<b>{text}</b>" if (i, c) in bold else text

    body = "".join("<tr>" + "".join(f"<td>{cell(i, c, r.get(c))}</td>" for c in columns) + "</tr>"
                   for i, r in enumerate(rows))
    return f"<table><tr>{head}</tr>{body}</table>"
