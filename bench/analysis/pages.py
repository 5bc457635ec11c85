"""The HTML pages of `bench compare` (compare.html) and `bench report` (report.html).

Plots use output tokens (output tok/s per GPU, J per output token, $ per million output
tokens), the unit published figures are quoted in; the tables carry both.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from bench.analysis import html as page
from bench.analysis.figures import (
    cost_figure,
    interactivity_figure,
    latency_figure,
    power_figure,
    series_of,
    server_metrics_figure,
)
from bench.analysis.pareto import X, Y
from bench.analysis.reference import REFERENCE_COLUMNS, ref_points, reference_rows
from bench.catalog.published import PublishedResult
from bench.measure.groups import metric_label

POINT_COLUMNS: list[Any] = [
    "series", "concurrency", ("rate_rps", "req/s"),
    *((k, metric_label(k, short=True)) for k in (X, "output_tok_s_per_gpu", Y, "j_per_output_token", "ttft_s_p50",
                                                 "ttft_s_p99", "tpot_s_p50", "tpot_s_p99")),
    ("validity", "valid"), "energy_method", "engine_version", "device_name", "run_date", "run_id", "point_id",
]


def present(rows: list[dict], columns: list) -> list:
    """The columns with a value in at least one row."""
    return [c for c in columns if any(r.get(c if isinstance(c, str) else c[0]) is not None for r in rows)]


@dataclass
class Page:
    """A written page and its figures by name (what the browser draws)."""

    path: Path
    figures: dict[str, Any] = field(default_factory=dict)


def point_table_rows(points: pd.DataFrame) -> list[dict]:
    """Rows for the points table: None for missing values, validity as text."""
    rows = []
    for label, part in series_of(points):
        for r in part.astype(object).where(part.notna(), None).to_dict("records"):
            valid = bool(r.get("valid"))
            rows.append({**r, "series": label, "valid": valid,
                         "validity": "yes" if valid else f"INVALID: {r.get('reasons') or ''}".strip()})
    return rows


def _row_class(r: dict) -> str:
    return "published" if r.get("source") == "published" else ("invalid" if r.get("valid") is False else "")


def compare_page(path: Path, model: str, lead: str, compared: pd.DataFrame, compared_columns: list,
                 points: pd.DataFrame, scenarios: list[str], runs_rows: list[dict], runs_columns: list,
                 refs: tuple[list[PublishedResult], bool] | None = None, synthetic: bool = False,
                 explanation: Any = None) -> Page:
    """compare.html: the plots against interactivity, latency per load, and every table."""
    ref_rows, matched = refs if refs else ([], True)
    figs: dict[str, Any] = {
        "throughput": interactivity_figure(points, "output_tok_s_per_gpu", f"{model}: output throughput per GPU",
                                           refs=ref_points(ref_rows, "output_tok_s_per_gpu")),
        "energy": interactivity_figure(points, "j_per_output_token", f"{model}: energy per output token",
                                       refs=ref_points(ref_rows, "j_per_output_token")),
    }
    figs["cost"] = cost_figure(points, scenarios, f"{model}: $ per million output tokens",
                               lambda metric: ref_points(ref_rows, metric))
    figs["latency"] = latency_figure(points, f"{model}: latency percentiles per load (p50 solid, p99 dotted)")
    if explanation is not None:  # bench compare --explain A B: the waterfall panel
        from bench.analysis.explain import waterfall_figure

        figs["explain"] = waterfall_figure(explanation)
    point_rows = point_table_rows(points)
    parts = [page.heading(f"{model}: comparison across hardware", 1), page.paragraph(lead, "lead")]
    if synthetic:
        parts.append(page.paragraph("Synthetic data: some runs are test fixtures, not measurements.", "note"))
    parts.append(page.paragraph(
        "Each series is one hardware / precision / engine / GPU count; the line is its Pareto front. "
        "x markers are invalid points (hover for the reason), shown only to be seen, never used."))
    if refs:
        note = ("Black markers are published figures (source: published, not measured here)."
                if matched else f"No published figure is of {model}: every published figure is drawn, for scale only.")
        parts.append(page.paragraph(note, "note"))
    for i, fig in enumerate(figs.values()):
        parts.append(page.figure_html(fig, f"plot-{i}"))
    if explanation is not None:
        from bench.analysis.explain import EXPLAIN_COLUMNS

        parts += [page.heading(f"Why {explanation.b} costs {explanation.ratio:.4f} x {explanation.a}"),
                  page.paragraph("The factors of the cost law multiply to the measured $/Mtok ratio; sparsity "
                                 "explains, it is never multiplied in."),
                  page.table_html(explanation.rows(), EXPLAIN_COLUMNS, table_id="explain-table")]
    parts += [page.heading("Matched operating point"),
              page.table_html(compared.astype(object).where(compared.notna(), None).to_dict("records"),
                              compared_columns, table_id="compare-table"),
              page.heading("Every load point (invalid ones marked)"),
              page.table_html(point_rows, present(point_rows, POINT_COLUMNS), _row_class, "points-table")]
    if refs:
        parts += [page.heading("Published figures (source: published, not measured here)"),
                  page.table_html(reference_rows(ref_rows), REFERENCE_COLUMNS, _row_class, "reference-table")]
    parts += [page.heading("Runs used"), page.table_html(runs_rows, runs_columns, table_id="runs-table")]
    return Page(page.write_page(path, f"{model}: comparison", parts), figs)


def run_page(path: Path, title: str, lead: str, points: pd.DataFrame, table_rows: list[dict], table_columns: list,
             cost_rows: list[dict], cost_columns: list, power: pd.DataFrame | None,
             windows: list[tuple[str, float | None, float | None]], about: str, synthetic: bool = False,
             server_metrics: pd.DataFrame | None = None, time_parts: list[str] | None = None,
             cost_scenarios: list[str] | None = None,
             repeat_table: tuple[list[dict], list] | None = None) -> Page:
    """report.html of one run: plots of its ok points (invalid marked), power, server metrics, the tables."""
    figs: dict[str, Any] = {
        "throughput": interactivity_figure(points, "output_tok_s_per_gpu", f"{title}: output throughput per GPU"),
        "energy": interactivity_figure(points, "j_per_output_token", f"{title}: energy per output token"),
        "latency": latency_figure(points, f"{title}: latency percentiles per load (p50 solid, p99 dotted)"),
    }
    if cost_scenarios:  # $ per million output tokens, the basis of the cost table
        figs["cost"] = cost_figure(points, cost_scenarios, f"{title}: $ per million output tokens")
    if power is not None:
        figs["power"] = power_figure(power, f"{title}: board power over time (measurement windows shaded)", windows)
    if server_metrics is not None:
        figs["server_metrics"] = server_metrics_figure(
            server_metrics, f"{title}: the engine's running and waiting requests and KV-cache usage "
                            "(its /metrics, sampled; measurement windows shaded)", windows)
    parts = [page.heading(title, 1), page.paragraph(lead, "lead")]
    if synthetic:
        parts.append(page.paragraph("Synthetic data: this run is a test fixture, not a measurement.", "note"))
    parts.append(page.paragraph("x markers are invalid points (hover for the reason)."))
    parts += [page.figure_html(fig, f"plot-{i}") for i, fig in enumerate(figs.values())]
    parts += time_parts or []  # where the time went (bench.analysis.timebreak, issue 22)
    parts += [page.heading("Load points"),
              page.table_html(table_rows, present(table_rows, table_columns), _row_class, "points-table"),
              page.heading("Cost as stored with the run"),
              page.table_html(cost_rows, cost_columns, table_id="cost-table") if cost_rows and len(cost_columns) > 1
              else page.paragraph("No cost figures stored.")]
    if repeat_table and repeat_table[0]:
        parts += [page.heading("Over repeats (Student-t 95% interval of the mean)"),
                  page.table_html(repeat_table[0], repeat_table[1], table_id="repeats-table")]
    parts += [page.heading("Provenance"), page.preformatted(about, "run configuration and provenance (JSON)")]
    return Page(page.write_page(path, title, parts), figs)
