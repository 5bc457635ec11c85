"""Repeats in a comparison: a series' rows at the same load point (a point's repeats, or the
same configuration measured in several runs) are one measured point with an interval per
figure, and each ratio against the baseline gets its 95% interval and a verdict.

    collapsed, spread = collapse_repeats(series_rows)     # one row per load point (means), n_repeats
    iv = matched_interval(collapsed, spread, op, "tok_s_per_gpu")   # Interval at the operating point
    ratio_interval(iv_b, iv_a)                            # bench.measure.intervals: delta method

A point measured once keeps its value and gets no interval ("single run").
"""

from __future__ import annotations

import math

import pandas as pd

from bench.analysis.pareto import RATIO_METRICS, Operating, X, Y, compare_table, front_rows, split_series
from bench.measure.intervals import Interval, Ratio, blend, ratio_interval, summarize

LOAD_KEY = ["load_kind", "concurrency", "rate_rps", "isl", "osl"]  # one load point of a series
REPEAT_KEY = "_load_point"


def collapse_repeats(rows: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, dict[str, Interval]]]:
    """(rows with one row per load point: numeric columns averaged over its repeats, others
    the first's, `n_repeats` added; {load point: {column: Interval}}) of one series' rows."""
    if rows.empty:
        return rows.assign(n_repeats=pd.Series(dtype="Int64")), {}
    keys = [c for c in LOAD_KEY if c in rows]
    key = ["|".join("" if pd.isna(v) else str(v) for v in values) for values in rows[keys].itertuples(index=False)]
    numeric = [c for c, t in rows.dtypes.items() if pd.api.types.is_numeric_dtype(t) and
               not pd.api.types.is_bool_dtype(t) and c not in keys]
    # One pass over plain lists: a pandas groupby with a row copy and a cell write per column
    # and load point cost about a second per comparison. The rows are rebuilt as records, as
    # the row-wise version did, so each column's dtype is inferred from its values as before.
    members: dict[str, list[int]] = {}
    for i, k in enumerate(key):
        members.setdefault(k, []).append(i)  # load points in order of first appearance
    columns = [*rows.columns, REPEAT_KEY, "n_repeats"]
    firsts = [m[0] for m in members.values()]
    cells = {c: [col.array[i] for i in firsts] for c, col in rows.items()}  # each cell as a row read gives it
    records = [{c: cells[c][j] for c in rows.columns} for j in range(len(firsts))]
    values = {c: rows[c].astype(float).tolist() for c in numeric}
    spread = {}
    for (k, idx), first in zip(members.items(), records):
        ivs = {c: iv for c in numeric if (iv := summarize([values[c][i] for i in idx])) is not None}
        for c, iv in ivs.items():
            first[c] = iv.mean
        first[REPEAT_KEY], first["n_repeats"] = k, len(idx)
        spread[k] = ivs
    return pd.DataFrame(records, columns=columns), spread


def matched_interval(collapsed: pd.DataFrame, spread: dict[str, dict[str, Interval]], op: Operating,
                     metric: str) -> Interval | None:
    """The Interval of `metric` at the operating point, read as `pareto.match_series` reads the
    value: the measured point of peak throughput, or the blend of the two front points around
    the interactivity asked (their errors weighed). None where match_series has no value."""
    rows = collapsed
    if op.ttft_slo_s is not None:
        rows = rows[rows["ttft_s_p99"].astype(float) <= op.ttft_slo_s]
    if rows.empty or metric not in rows:
        return None
    if op.at_interactivity is None:
        return spread.get(rows.loc[rows[Y].astype(float).idxmax(), REPEAT_KEY], {}).get(metric)
    front = front_rows(rows)
    xs = front[X].astype(float).tolist()
    target = op.at_interactivity
    for i in range(len(xs)):
        lo_iv = spread.get(front.loc[i, REPEAT_KEY], {}).get(metric)
        if target == xs[i]:
            return lo_iv
        if i + 1 < len(xs) and xs[i] < target < xs[i + 1]:
            hi_iv = spread.get(front.loc[i + 1, REPEAT_KEY], {}).get(metric)
            if lo_iv is None or hi_iv is None:
                return None
            return blend(lo_iv, hi_iv, (target - xs[i]) / (xs[i + 1] - xs[i]))
    return None


def compare_with_intervals(table: pd.DataFrame, model: str, op: Operating, baseline: str | None,
                           cost_columns: list[str]) -> pd.DataFrame:
    """`pareto.compare_table` over the series with their repeats collapsed, plus `n_repeats`
    (of the matched point; interpolated: the fewer of its two) and, for every ratio column
    `<m>_vs_baseline`, `<m>_vs_baseline_ci95` ("lo-hi") and `<m>_vs_baseline_verdict`
    ("higher", "lower", "not distinguishable", "single run"; "baseline" on its own row)."""
    rows = table[table["model"] == model]
    parts, spreads = [], {}
    for label, _, series in split_series(rows):
        collapsed, spread = collapse_repeats(series)
        parts.append(collapsed)
        spreads[label] = (collapsed, spread)
    if not parts:
        return compare_table(rows, model, op, baseline, cost_columns)
    frame = compare_table(pd.concat(parts, ignore_index=True), model, op, baseline, cost_columns)
    if frame.empty:
        return frame
    ivs = {label: {m: matched_interval(c, s, op, m) for m in [Y, *RATIO_METRICS, *cost_columns]}
           for label, (c, s) in spreads.items()}
    frame["n_repeats"] = [_n(ivs[label].get(Y)) for label in frame["series"]]
    for m in [c[: -len("_vs_baseline")] for c in frame.columns if c.endswith("_vs_baseline")]:
        cis: list[str | None] = []
        verdicts: list[str | None] = []
        for label, base in zip(frame["series"], frame["baseline_series"]):
            if not isinstance(base, str):
                cis.append(None)
                verdicts.append(None)
                continue
            if label == base:
                cis.append(None)
                verdicts.append("baseline")
                continue
            num, den = ivs[label].get(m), ivs[base].get(m)
            cells = ratio_cells(ratio_interval(num, den) if num is not None and den is not None else None)
            cis.append(cells["ci95"])
            verdicts.append(cells["verdict"])
        frame[f"{m}_vs_baseline_ci95"] = cis
        frame[f"{m}_vs_baseline_verdict"] = verdicts
    return frame


def _n(iv: Interval | None) -> int | None:
    return None if iv is None else iv.n


def ratio_cells(ratio: Ratio | None) -> dict[str, str | None]:
    """The table cells of one ratio: its 95% interval as text and its verdict."""
    if ratio is None:
        return {"ci95": None, "verdict": None}
    if ratio.lo is None or ratio.hi is None or not math.isfinite(ratio.lo):
        return {"ci95": None, "verdict": ratio.verdict}
    return {"ci95": f"{ratio.lo:.3f}-{ratio.hi:.3f}", "verdict": ratio.verdict}
