"""The one table-cell formatter: how a value reads in the Markdown and HTML reports and in the
terminal tables. Light (no pandas): the CLI's tables import it.

    fmt(0.012345) == "0.01235"; fmt(12345.6) == "12346"; fmt(float("nan")) == fmt(None) == "-"
    fmt(1.2345e-05) == "0.00001234"   # never scientific notation
"""

from __future__ import annotations

import math
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
        if abs(value) >= WHOLE_FROM:
            return f"{value:.0f}"
        text = f"{value:.4g}"
        if "e" in text and abs(value) >= 1e-15:  # below 1e-4: positional, 4 significant digits, never 1.234e-05
            text = f"{value:.{3 - math.floor(math.log10(abs(value)))}f}".rstrip("0")
        return text
    return str(value)
