"""The one table-cell formatter: how a value reads in the Markdown and HTML reports and in the
terminal tables. Light (no pandas): the CLI's tables import it.

    fmt(0.012345) == "0.01235"; fmt(12345.6) == "12346"; fmt(float("nan")) == fmt(None) == "-"
"""

from __future__ import annotations

from typing import Any

WHOLE_FROM = 1000  # from here up a float shows no decimals (an exponent is hard to read in a table)


def is_missing(value: Any) -> bool:
    """None, NaN (Python or numpy) or pandas' NA (whose comparison is NA: truth of it raises)."""
    if value is None:
        return True
    try:
        return bool(value != value)
    except TypeError:
        return True


def fmt(value: Any) -> str:
    """A table cell: missing as '-', booleans as yes/no, floats to 4 significant digits (whole
    from WHOLE_FROM up), anything else as str(). The medium escapes the text (Markdown, HTML, terminal)."""
    if is_missing(value):
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.0f}" if abs(value) >= WHOLE_FROM else f"{value:.4g}"
    return str(value)
