"""A run's repeats as table rows for a person: one row per load point and headline figure,
n, mean, sd, CV and the 95% interval, latencies in ms, each figure's token basis in its name.

    rows = repeat_rows(repeat_summaries(run))     # bench.results.repeats
    format_table(rows, REPEAT_COLUMNS)
"""

from __future__ import annotations

from typing import Any

from bench.results.repeats import HEADLINE, RepeatSummary

REPEAT_COLUMNS = ["point", "figure", "unit", "n", "mean", "sd", "CV %", "95% CI low", "95% CI high"]
_LATENCY = {"ttft_s_p50", "ttft_s_p99", "tpot_s_p50", "tpot_s_p99"}  # seconds in results, ms for a person
_UNITS = {"tok_s_per_gpu": "tok/s", "output_tok_s": "tok/s", "j_per_token": "J/token", "j_per_output_token": "J/token",
          "usd_per_mtok_output": "$/Mtok", "goodput_output_tok_s": "tok/s"}


def repeat_rows(summaries: list[RepeatSummary]) -> list[dict[str, Any]]:
    """Rows of REPEAT_COLUMNS; a figure measured once shows its value and "single run"."""
    labels = {k: label for k, _, label in HEADLINE}
    rows = []
    for s in summaries:
        for key, iv in s.figures.items():
            k = 1000.0 if key in _LATENCY else 1.0
            label = labels[key] + (f" ({s.cost_scenario})" if key == "usd_per_mtok_output" and s.cost_scenario else "")
            rows.append({
                "point": s.point + (" (INVALID)" if s.invalid else ""), "figure": label, "unit": "ms" if key in _LATENCY else _UNITS.get(key, ""),
                "n": iv.n if iv.n == s.n else f"{iv.n} of {s.n}", "mean": iv.mean * k,
                "sd": iv.sd * k if iv.sd is not None else "single run",
                "CV %": iv.cv * 100 if iv.cv is not None else None,
                "95% CI low": iv.lo * k if iv.lo is not None else None,
                "95% CI high": iv.hi * k if iv.hi is not None else None,
            })
    return rows


def has_repeats(summaries: list[RepeatSummary]) -> bool:
    """Any load point measured more than once."""
    return any(s.n_planned > 1 for s in summaries)
