"""Plain aligned text tables for the CLI: no colours, no box drawing, easy to grep."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from bench.analysis.cellformat import fmt, is_missing
from bench.escape import terminal_text

Column = str | tuple[str, str]  # key, or (key, header)


def _cell(value: Any) -> str:
    return terminal_text(fmt(value))  # a run id from a store must not drive the terminal (ESC, OSC 52, bidi)


def _numeric(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[Column], gap: int = 2) -> str:
    """Rows (mappings) as an aligned table with a header line and a dashed rule.

    A column is a key, or (key, header). Numbers are right-aligned, text left-aligned;
    cells read as bench.analysis.cellformat.fmt writes them (None and NaN as "-", booleans as
    yes/no, floats with 4 significant digits, no decimals from 1000 up). Missing keys print as "-".
    Control characters in text print as escapes (`\\x1b`): cells may come from a store.
    """
    cols = [(c, c) if isinstance(c, str) else c for c in columns]
    cells = [[_cell(row.get(key)) for key, _ in cols] for row in rows]
    right = [bool(rows) and all(_numeric(r.get(k)) or is_missing(r.get(k)) for r in rows) for k, _ in cols]
    widths = [max([len(h)] + [len(line[i]) for line in cells]) for i, (_, h) in enumerate(cols)]

    def line(values: Sequence[str]) -> str:
        parts = [v.rjust(w) if r else v.ljust(w) for v, w, r in zip(values, widths, right)]
        return (" " * gap).join(parts).rstrip()

    out = [line([terminal_text(h) for _, h in cols]), line(["-" * w for w in widths])]
    out += [line(c) for c in cells]
    return "\n".join(out)
