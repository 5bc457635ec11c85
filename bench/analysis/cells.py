"""Table cells of the Markdown and HTML reports: number formatting, and how figures that
are not measurements are shown.

An invalid point's latencies and interactivity are marked "(invalid)"; a TPOT of 0 (the
client saw every token at once) and an interactivity computed from it are shown as
"n/a (TPOT 0)", never as a number.
"""

from __future__ import annotations

import math
from typing import Any, TypeGuard

from bench.analysis.cellformat import fmt
from bench.analysis.pareto import X

TPOT_KEYS = ("tpot_s_p50", "tpot_s_p90", "tpot_s_p95", "tpot_s_p99", "tpot_s_mean", "tpot_ms_p50", "tpot_ms_p99")
MARKED_KEYS = (X, "ttft_s_p50", "ttft_s_p90", "ttft_s_p95", "ttft_s_p99", *TPOT_KEYS, "itl_s_p50", "itl_s_p99",
               "e2e_s_p50", "e2e_s_p99", "ttft_ms_p50", "ttft_ms_p99")  # the ms columns of the run report too
TPOT_ZERO = "n/a (TPOT 0)"


def is_number(value: Any) -> TypeGuard[int | float]:
    """A finite int or float (not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(float(value))


def tpot_zero(row: dict) -> bool:
    """The row's median TPOT is 0 (or below): its interactivity is no measurement."""
    v = row.get("tpot_s_p50")
    return is_number(v) and v <= 0


def not_a_measurement(row: dict, key: str) -> bool:
    """A TPOT of 0, or an interactivity computed from one (infinite, or its TPOT is 0)."""
    v = row.get(key)
    if key in TPOT_KEYS:
        return is_number(v) and v <= 0
    if key == X:
        return tpot_zero(row) or (isinstance(v, float) and math.isinf(v))
    return False


def cell_text(row: dict, key: str) -> str:
    """The text of ROW's cell KEY, marked where it is not a measurement of a valid point."""
    if not_a_measurement(row, key):
        return TPOT_ZERO
    text = fmt(row.get(key))
    if key in MARKED_KEYS and row.get("valid") is False and text != "-":
        return f"{text} (invalid)"
    return text
