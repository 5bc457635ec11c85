"""Accuracy beside speed in a comparison (issue 20 item 1 gives the verdicts; this reads them):
a point whose configuration failed its accuracy gate is drawn, marked, but is never on a
Pareto front, never matched and never a win. Columns, when the table has them (the accuracy
gate's): `accuracy_passed` (bool, or null: not run) and `accuracy_score`.

    failed = gate_failed(rows)                  # bool Series: the gate ran and did not pass
    series_accuracy(rows)                       # {series label: "passed 0.78" | "FAILED 0.0008" | "not run"}
"""

from __future__ import annotations

import pandas as pd

from bench.analysis.pareto import split_series

PASSED, SCORE = "accuracy_passed", "accuracy_score"
GATE_FAILED = "accuracy gate failed"


def gate_failed(rows: pd.DataFrame) -> pd.Series:
    """True where the gate ran and failed; False where it passed, did not run, or has no column."""
    if PASSED not in rows:
        return pd.Series(False, index=rows.index)
    return rows[PASSED].astype("boolean").eq(False).fillna(False).astype(bool)


def series_accuracy(rows: pd.DataFrame) -> dict[str, str]:
    """Each series' accuracy as a table cell; {} when the table has no accuracy column."""
    if PASSED not in rows:
        return {}
    out = {}
    for label, _, series in split_series(rows):
        verdicts = series[PASSED].astype("boolean")
        scores = series[SCORE].astype(float) if SCORE in series else pd.Series(dtype=float)
        score = f" {scores.dropna().iloc[0]:.4g}" if not scores.dropna().empty else ""
        if verdicts.eq(False).any():
            out[label] = f"FAILED{score}"
        elif verdicts.eq(True).any():
            out[label] = f"passed{score}"
        else:
            out[label] = "not run"
    return out


def mark_failed(points: pd.DataFrame) -> pd.DataFrame:
    """`points` with every gate-failed point invalid, its reason saying so (drawn as an x, never a front)."""
    failed = gate_failed(points)
    if not failed.any():
        return points
    reasons = points["reasons"].fillna("").astype(str) if "reasons" in points else pd.Series("", index=points.index)
    return points.assign(valid=points["valid"].astype(bool) & ~failed,
                         reasons=[f"{GATE_FAILED}; {r}".rstrip("; ") if f else r for f, r in zip(failed, reasons)])
