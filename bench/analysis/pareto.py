"""Pareto fronts and matched operating points across hardware, precision and engine.

A series is one (hardware, precision, KV-cache dtype, engine, GPU count) of one model, and
one setting of each serving lever the table records (speculative method, LoRA mix,
structured-output mode): a speculative point never shares a front with its baseline. Its
front is the upper-right Pareto front of throughput per GPU (y) against interactivity,
tokens per second per user (x): no measured point has both more x and more y. Along the
front y falls as x rises, and values between two measured front points are read by
straight lines; nothing is ever read beyond the measured range.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from bench.store.accuracy_rows import gate_passed

X = "interactivity_tok_s_user"
Y = "tok_s_per_gpu"
SERIES_COLUMNS = ["hardware", "precision", "kv_cache_dtype", "engine", "n_gpus"]
LEVER_COLUMNS = ["spec_method", "lora_mix", "structured_mode"]  # issue 21: a series per lever setting, when recorded
MATCHED_METRICS = [
    "tok_s_per_gpu", "output_tok_s_per_gpu", "j_per_token", "j_per_output_token",
    "avg_power_w_per_gpu", "ttft_s_p99", "tpot_s_p50",
]
RATIO_METRICS = ["tok_s_per_gpu", "output_tok_s_per_gpu", "j_per_token", "j_per_output_token"]
OUTSIDE = "outside measured range"


def pareto_front(xs: Sequence[float], ys: Sequence[float]) -> list[int]:
    """Indices of the non-dominated points (maximising x and y), sorted by x ascending.

    Along the result x strictly rises and y strictly falls; NaN points are ignored and of
    identical points only the first is kept.
    """
    idx = [i for i in range(len(xs)) if not (_nan(xs[i]) or _nan(ys[i]))]
    idx.sort(key=lambda i: (-xs[i], -ys[i], i))
    front, best_y = [], -math.inf
    for i in idx:
        if ys[i] > best_y:
            front.append(i)
            best_y = ys[i]
    return front[::-1]


def interpolate(xs: Sequence[float], values: Sequence[float], x: float) -> float | None:
    """Piecewise-linear value at x between measured points sorted by x; None outside [xs[0], xs[-1]]."""
    if not xs or _nan(x) or x < xs[0] or x > xs[-1]:
        return None
    for i in range(len(xs)):
        if x == xs[i]:
            return float(values[i])
        if i + 1 < len(xs) and xs[i] < x < xs[i + 1]:
            w = (x - xs[i]) / (xs[i + 1] - xs[i])
            return float(values[i] + w * (values[i + 1] - values[i]))
    return None


@dataclass(frozen=True)
class SeriesKey:
    """What one series holds fixed: its SERIES_COLUMNS and the LEVER_COLUMNS the table records
    (`levers`); a cell the table leaves empty is None."""

    hardware: str
    precision: str
    kv_cache_dtype: str | None
    engine: str
    n_gpus: int | None
    spec_method: str | None = None
    lora_mix: str | None = None
    structured_mode: str | None = None
    levers: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        """The series' name in tables and legends, e.g. "h100-sxm fp8 kv-fp8 vllm x2 spec-ngram"."""
        kv = self.kv_cache_dtype
        kv_part = f" kv-{kv}" if kv and kv != "auto" else ""
        n = self.n_gpus
        n_part = f" x{int(n)}" if n and int(n) > 1 else ""
        spec = self.spec_method
        levers = f" spec-{spec}" if spec and spec != "none" else ""
        levers += f" lora[{self.lora_mix}]" if self.lora_mix else ""
        levers += f" {self.structured_mode}" if self.structured_mode else ""
        return f"{self.hardware} {self.precision}{kv_part} {self.engine}{n_part}{levers}"

    def columns(self) -> dict:
        """{column: value} of the columns the series was split by (a compare_table row's key)."""
        return {c: getattr(self, c) for c in (*SERIES_COLUMNS, *self.levers)}


def split_series(table: pd.DataFrame) -> list[tuple[str, SeriesKey, pd.DataFrame]]:
    """(label, key, rows) of each series in the cost-model table, sorted by label."""
    out: list[tuple[str, SeriesKey, pd.DataFrame]] = []
    if table.empty:
        return out
    levers = tuple(c for c in LEVER_COLUMNS if c in table.columns)
    columns = SERIES_COLUMNS + list(levers)
    keyed = table.assign(**{c: table[c].astype(object) for c in columns})
    for values, rows in keyed.groupby(columns, dropna=False, sort=False):
        cells: dict[str, Any] = {c: (None if _nan(v) else v) for c, v in zip(columns, values)}
        key = SeriesKey(**cells, levers=levers)
        out.append((key.label, key, rows.reset_index(drop=True)))
    return sorted(out, key=lambda s: s[0])


def hold_fixed(table: pd.DataFrame, where: Sequence[tuple[str, str]]) -> pd.DataFrame:
    """The rows whose column `c` reads `v` for every (c, v) of `where` (as text: `--where
    spec_method=none`), so a comparison varies only the axes left free. ValueError naming an
    unknown column."""
    for column, value in where:
        if column not in table.columns:
            raise ValueError(f"--where {column}=...: no such column (known: {', '.join(sorted(table.columns))[:300]})")
        cells = table[column].astype(object)
        table = table[[(str(c) if not _nan(c) else "") == value for c in cells]]
    return table


def front_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """The rows of one series on its Pareto front, sorted by interactivity ascending; a row whose
    accuracy gate failed is never on it (docs/accuracy.md)."""
    if "accuracy_passed" in rows:  # accuracy gate
        rows = rows[[gate_passed(r) is not False for _, r in rows.iterrows()]]
    idx = pareto_front(rows[X].astype(float).tolist(), rows[Y].astype(float).tolist())
    return rows.iloc[idx].reset_index(drop=True)


@dataclass
class Operating:
    """How each series is matched: at an interactivity, under a TTFT p99 limit, or at its peak."""

    at_interactivity: float | None = None
    ttft_slo_s: float | None = None

    def describe(self) -> str:
        parts = []
        if self.at_interactivity is not None:
            parts.append(f"interactivity {self.at_interactivity:g} tok/s/user")
        if self.ttft_slo_s is not None:
            parts.append(f"TTFT p99 <= {self.ttft_slo_s:g} s")
        return " and ".join(parts) if parts else "peak throughput per GPU"


def match_series(rows: pd.DataFrame, op: Operating, metrics: list[str]) -> tuple[str, dict]:
    """(status, {metric: value}) of one series at the operating point; values NaN when unmatched."""
    if op.ttft_slo_s is not None:
        rows = rows[rows["ttft_s_p99"].astype(float) <= op.ttft_slo_s]
        if rows.empty:
            return "no point meets the TTFT limit", {}
    if op.at_interactivity is None:
        best = rows.loc[rows[Y].astype(float).idxmax()]
        return "measured", {m: _float(best[m]) if m in rows.columns else math.nan for m in [X, *metrics]}
    front = front_rows(rows)
    xs = front[X].astype(float).tolist()
    target = op.at_interactivity
    if not xs or target < xs[0] or target > xs[-1]:
        lo, hi = (min(xs), max(xs)) if xs else (math.nan, math.nan)
        return f"{OUTSIDE} ({lo:.3g}-{hi:.3g} tok/s/user)", {}
    values = {X: target}
    for m in metrics:
        col = front[m].astype(float).tolist() if m in front else []
        values[m] = _float(interpolate(xs, col, target)) if col else math.nan
    return ("measured" if target in xs else "interpolated"), values


def compare_table(table: pd.DataFrame, model: str, op: Operating, baseline: str | None = "h100-sxm",
                  cost_columns: list[str] | None = None) -> pd.DataFrame:
    """One row per series of MODEL at the operating point, with ratios against BASELINE (a
    series label: every row divides by that series; else a hardware id, as follows).

    Ratios (`<metric>_vs_baseline`) divide by the baseline series with the same precision,
    KV dtype, engine and GPU count when the baseline hardware has one, else by the baseline
    hardware's series with the highest matched throughput per GPU.
    """
    rows = table[table["model"] == model]
    if cost_columns is None:
        cost_columns = [c for c in table.columns if c.startswith("usd_per_mtok_")]
    metrics = MATCHED_METRICS + list(cost_columns)
    out = []
    for label, key, series in split_series(rows):
        status, values = match_series(series, op, metrics)
        lo, hi = float(series[X].min()), float(series[X].max())
        unmatched = dict.fromkeys([X, *metrics], math.nan)  # {} from match_series: every value NaN
        out.append({"series": label, **key.columns(), "operating_point": op.describe(), "status": status,
                    "n_points": len(series), "measured_interactivity_range": f"{lo:.3g}-{hi:.3g}",
                    **unmatched, **values})
    frame = pd.DataFrame(out)
    if frame.empty:
        return frame
    base = _baseline_rows(frame, baseline)
    ratio_cols = RATIO_METRICS + [c for c in cost_columns if c.startswith("usd_")]
    if base is not None and baseline in set(frame["series"]):  # one named series: every row divides by it
        picks = [base.iloc[0] for _ in range(len(frame))]
    else:
        picks = [_pick_baseline(r, base) if base is not None else None for _, r in frame.iterrows()]
    frame["baseline_series"] = [p["series"] if p is not None else None for p in picks]
    for m in ratio_cols:
        frame[f"{m}_vs_baseline"] = [_ratio(v, p[m] if p is not None else math.nan) for v, p in zip(frame[m], picks)]
    return frame


def baseline_names(frame: pd.DataFrame) -> list[str]:
    """The series the ratios of a compare_table frame divide by (none: no baseline found)."""
    if frame.empty or "baseline_series" not in frame:
        return []
    return sorted({b for b in frame["baseline_series"] if isinstance(b, str)})


def _baseline_rows(frame: pd.DataFrame, baseline: str | None) -> pd.DataFrame | None:
    if not baseline:
        return None
    named = frame["series"] == baseline  # a series label, else a hardware id
    base = frame[(named if named.any() else frame["hardware"] == baseline) & frame[Y].notna()]
    return None if base.empty else base


def _pick_baseline(row: pd.Series, base: pd.DataFrame) -> pd.Series:
    same = base
    for c in ("precision", "kv_cache_dtype", "engine", "n_gpus"):
        same = same[same[c] == row[c]]
    pool = same if not same.empty else base
    return pool.loc[pool[Y].astype(float).idxmax()]


def _ratio(value: float, ref: float) -> float:
    if _nan(value) or _nan(ref) or ref == 0:
        return math.nan
    return float(value) / float(ref)


def _float(v) -> float:
    try:
        return math.nan if v is None or pd.isna(v) else float(v)
    except (TypeError, ValueError):
        return math.nan


def _nan(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or bool(pd.isna(v))
