"""Reports: a comparison across hardware for one model, and one run on its own.

Each report is a folder: report.md, an interactive page (compare.html / report.html,
bench.analysis.pages), the tables as CSV, and PNG plots. Every run used is listed with its
provenance, synthetic (test) runs are flagged, and invalid points' latencies are marked.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from bench.analysis.cells import cell_text, fmt
from bench.analysis.pareto import Operating, X, Y, baseline_names
from bench.analysis.plots import (
    Plot,
    metric_vs_interactivity,
    power_over_time,
    server_metrics_over_time,
    throughput_vs_interactivity,
)
from bench.analysis.significance import compare_with_intervals
from bench.analysis.timebreak import html_parts, markdown_section
from bench.errors import ConfigError
from bench.escape import csv_safe, md_text
from bench.measure.groups import Energy, Metrics, ServerCounters, metric_label
from bench.results import RunResult, read_summary
from bench.results.schema import PARQUET_READ_OPTIONS
from bench.store import run_models
from bench.store.costmodel import CSV_FLOAT_FORMAT, build_table, rows_to_frame
from bench.store.rows import engine_version_of, point_rows


@dataclass
class Report:
    path: Path
    table: pd.DataFrame
    plots: list[Plot] = field(default_factory=list)
    status: str | None = None  # one run's status as it stands now ("stale (process gone)" included)
    html: Path | None = None  # the interactive page
    figures: dict[str, Any] = field(default_factory=dict)  # its plotly figures by name
    explanation: Any = None  # bench.analysis.explain.Explanation of `bench compare --explain A B`
    warnings: list[str] = field(default_factory=list)  # one line each, for the terminal (a power-scope mix)


__all__ = ["PROVENANCE_COLUMNS", "Report", "compare_report", "fmt", "markdown_table", "run_report"]


def markdown_table(rows: list[dict], columns: Sequence[str | tuple[str, str]]) -> str:
    """Rows as a Markdown table; a column is a key or (key, header). Invalid points'
    latencies are marked and a TPOT of 0 is no number (`bench.analysis.cells`). Every cell
    is `md_text`: ids and reasons from a store never render as HTML, links or images."""
    cols = [(c, c) if isinstance(c, str) else c for c in columns]
    lines = ["| " + " | ".join(md_text(h) for _, h in cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(md_text(cell_text(r, k)) for k, _ in cols) + " |" for r in rows]
    return "\n".join(lines)


def provenance_rows(runs: list[tuple[str, RunResult]]) -> list[dict]:
    """One row per run: where, on what and with which software it was measured."""
    out = []
    for run_id, run in sorted(runs, key=lambda r: r[0]):
        cfg, prov = run.config, run.provenance
        out.append({
            "run_id": run_id + (" (SYNTHETIC)" if run.synthetic else ""),
            "date": run.created_utc[:10], "model": cfg.model, "hardware": cfg.hardware_id,
            "device": prov.device_name,
            "n_gpus": ", ".join(sorted({str(c.n_gpus) for c in cfg.configs()})),
            "precision": ", ".join(sorted({c.precision_label() for c in cfg.configs()})),
            "engine": ", ".join(sorted({f"{cfg.engine_config(cid).engine} {engine_version_of(run, cid) or ''}".strip()
                                        for cid in (list(cfg.engine_configs) or ["default"])})),
            "driver": prov.driver_version, "weights": cfg.weights,
            "harness": f"{run.harness.version} {(run.harness.git_sha or '')[:10]}".strip(),
            "status": run.status,
            "valid_points": f"{sum(p.valid and p.status == 'ok' for p in run.points)}/{len(run.points)}",
        })
    return out


def provenance_from_points(points: pd.DataFrame) -> list[dict]:
    """`provenance_rows` of runs known by their point rows only (a store's point files):
    GPU counts, precisions and engines are those of the run's points of this model."""
    points = points[_POINT_RUN_COLUMNS]
    out = []
    for run_id, rows in points.astype(object).where(points.notna(), None).groupby("run_id", sort=True):
        r = rows.iloc[0]
        out.append({
            "run_id": run_id + (" (SYNTHETIC)" if r["synthetic"] else ""), "date": r["run_date"],
            "model": r["model"], "hardware": r["hardware"], "device": r["device_name"],
            "n_gpus": ", ".join(sorted({str(n) for n in rows["n_gpus"]})),
            "precision": ", ".join(sorted({str(p) for p in rows["precision"]})),
            "engine": ", ".join(sorted({f"{e} {v or ''}".strip() for e, v in zip(rows["engine"], rows["engine_version"])})),
            "driver": r["driver_version"], "weights": r["weights"],
            "harness": f"{r['harness_version']} {(r['harness_git_sha'] or '')[:10]}".strip(),
            "status": r["run_status"], "valid_points": f"{r['run_n_valid_points']}/{r['run_n_points']}",
        })
    return out


_POINT_RUN_COLUMNS = ["run_id", "synthetic", "run_date", "model", "hardware", "device_name", "n_gpus", "precision",
                      "engine", "engine_version", "driver_version", "weights", "harness_version", "harness_git_sha",
                      "run_status", "run_n_valid_points", "run_n_points"]
PROVENANCE_COLUMNS = ["run_id", "date", "hardware", "device", "n_gpus", "precision", "engine", "driver",
                      "weights", "harness", "status", "valid_points"]


def compare_report(table: pd.DataFrame, runs: list[tuple[str, RunResult]] | None, model: str, out_dir: Path,
                   op: Operating, baseline: str | None = "h100-sxm",
                   scenario_names: list[str] | None = None, reference: bool = False,
                   points: pd.DataFrame | None = None, explain: tuple[str, str, str] | None = None) -> Report:
    """Compare every series of MODEL in a cost-model table; writes report.md, compare.html,
    compare.csv, plots. With `reference`, published figures (published.yaml) are drawn and
    tabled beside the measured ones, labelled `source: published`. Without `runs`, `points`
    (every ok point of MODEL with its run columns: bench.store.query.compare_points) stands
    in for them. With `explain` (series A, series B, scenario), the $/Mtok ratio B / A is
    decomposed into the cost law's factors (bench.analysis.explain): a table and a waterfall."""
    rows = table[table["model"] == model]
    if rows.empty:
        known = ", ".join(sorted(set(table["model"].dropna()))) or "none"
        raise ConfigError(f"no valid load points for model '{model}' (models with data: {known})")
    scenarios = _scenarios(table, scenario_names)
    cost_columns = [f"{f}__{s}" for s in scenarios for f in ("usd_per_mtok_output", "usd_per_mtok_total", "utilization")]
    from bench.analysis.accuracy import GATE_FAILED, gate_failed, mark_failed, series_accuracy

    accuracy = series_accuracy(rows)
    all_rows, rows = rows, rows[~gate_failed(rows)]  # a configuration failing its gate: never matched, never a win
    compared = compare_with_intervals(rows, model, op, baseline, cost_columns)
    if accuracy:
        gated = [{"series": s, "status": GATE_FAILED} for s in sorted(accuracy)
                 if s not in set(compared.get("series", []))]
        compared = pd.concat([compared, pd.DataFrame(gated)], ignore_index=True) if gated else compared
        compared["accuracy"] = [accuracy.get(s) for s in compared["series"]]
    expl = None
    if explain is not None:
        from bench.analysis.explain import explain as explain_pair
        from bench.analysis.explain import explain_columns

        a, b, scenario = explain
        expl = explain_pair(compare_with_intervals(rows, model, op, baseline, explain_columns(scenario)), a, b, scenario)
    from bench.analysis.powerscope import power_scopes

    scopes, scope_note = power_scopes(all_rows)
    if not compared.empty:
        compared["power_scope"] = [scopes.get(label) for label in compared["series"]]
    named = baseline_names(compared)  # a baseline is one of the series compared, or none is named
    base_text = ", ".join(named) if named else (f"none (no series on {baseline})" if baseline else "none")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_safe(compared).to_csv(out_dir / "compare.csv", index=False, float_format=CSV_FLOAT_FORMAT, lineterminator="\n")
    plots = [
        throughput_vs_interactivity(rows, out_dir / "throughput_vs_interactivity.png", f"{model}: throughput per GPU"),
        metric_vs_interactivity(rows, "j_per_token", out_dir / "j_per_token_vs_interactivity.png",
                                f"{model}: energy per token"),
    ]
    for s in scenarios:
        plots.append(metric_vs_interactivity(rows, f"usd_per_mtok_output__{s}", out_dir / f"usd_per_mtok_{s}.png",
                                             f"{model}: $ per million output tokens ({s})",
                                             ylabel="$ / Mtok output"))
    columns: list[Any] = ["series", "status", ("n_repeats", "repeats"),
                          *((k, metric_label(k, short=True)) for k in (X, Y)), *_ratio_columns(Y),
                          ("j_per_token", metric_label("j_per_token", short=True)), *_ratio_columns("j_per_token"),
                          ("power_scope", "power scope"), *([("accuracy", "accuracy")] if accuracy else [])]
    for s in scenarios:
        columns += [(f"usd_per_mtok_output__{s}", f"$/Mtok output ({s})"),
                    *_ratio_columns(f"usd_per_mtok_output__{s}"), (f"utilization__{s}", "util.")]
    if runs is not None:
        used = [r for r in runs if r[0] in set(all_rows["run_id"])]
        points, provenance = _with_invalid(all_rows, runs, model), provenance_rows(used)
        synthetic = any(run.synthetic for _, run in used)
    else:
        if points is None:  # the TypeError indexing None gave, with its cause
            raise TypeError("compare_report: `points` stands in for `runs` when runs is None")
        points = points[points["model"] == model]
        provenance = provenance_from_points(points[points["run_id"].isin(set(all_rows["run_id"]))])
        synthetic = bool(points["synthetic"].fillna(False).any())
        points = points.assign(valid=points["valid"].fillna(False).astype(bool),
                               reasons=points["invalid_reasons"].fillna("").astype(str))
    points = mark_failed(points)  # drawn as x markers with the reason, never on a front
    n_invalid = int((~points["valid"].astype(bool)).sum())
    refs = None
    if reference:
        from bench.analysis.reference import select_published

        refs = select_published(model)
    text = [
        f"# {md_text(model)}: comparison across hardware", "",
        f"Operating point: **{op.describe()}**. Baseline: **{md_text(base_text)}**.",
        ("Ratios carry their 95% interval over repeats (delta method; docs/compare.md) and a verdict; "
         "a series measured once is labelled `single run`, with no interval."),
        ("Matched by piecewise-linear interpolation along each series' Pareto front of throughput per GPU "
         "vs interactivity; targets outside a series' measured range are not extrapolated. "
         "$/Mtok assumes the utilization shown (share of hours serving at this load)."), "",
        markdown_table(compared.to_dict("records"), columns), "",
        *([f"> **{md_text(scope_note)}**", ""] if scope_note else []),
        *([f"{n_invalid} invalid load point(s) left out of the matching; compare.html shows them marked.", ""]
          if n_invalid else []),
        *_synthetic_note(synthetic),
        *_spec_section(rows),  # speculative decoding (issue 21)
        *(_reference_section(model, *refs) if refs else []),
        *(_explain_section(expl) if expl is not None else []),
        "## Plots", "", "Interactive: [compare.html](compare.html).", "",
        *[f"![{p.path.stem}]({p.path.name})" for p in plots], "",
        "## Runs used", "", markdown_table(provenance, PROVENANCE_COLUMNS), "",
    ]
    path = out_dir / "report.md"
    path.write_text("\n".join(text))
    from bench.analysis.pages import compare_page

    lead = (f"Operating point: {op.describe()}. Baseline: {base_text}. {len(provenance)} runs, "
            f"{len(points)} load points ({n_invalid} invalid)." + (f" {scope_note}" if scope_note else ""))
    html = compare_page(out_dir / "compare.html", model, lead, compared, columns, points, scenarios,
                        provenance, PROVENANCE_COLUMNS, refs, synthetic=synthetic, explanation=expl)
    return Report(path, compared, plots, html=html.path, figures=html.figures, explanation=expl,
                  warnings=[scope_note] if scope_note else [])


def run_report(run_dir: Path, out_dir: Path) -> Report:
    """One run: every load point with validity reasons, plots, and the full provenance."""
    from bench.run.lock import run_state

    run_dir = Path(run_dir)
    run = read_summary(run_dir)
    status = run_state(run_dir, run.status)  # "stale (process gone)" for a dead writer's run
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    points = [_point_row(p) for p in run.points]
    csv_safe(pd.DataFrame(points)).to_csv(out_dir / "points.csv", index=False, float_format=CSV_FLOAT_FORMAT,
                                          lineterminator="\n")
    ok_points = _with_reasons(rows_to_frame(point_rows(run.run_id, run, model_info=lambda _: {}, include_invalid=True)),
                              [(run.run_id, run)])
    valid = ok_points[ok_points["valid"]]
    plots = [
        throughput_vs_interactivity(valid, out_dir / "throughput_vs_interactivity.png", f"{run.run_id}: throughput"),
        metric_vs_interactivity(valid, "j_per_token", out_dir / "j_per_token_vs_interactivity.png",
                                f"{run.run_id}: energy per token"),
    ]
    power_file = run_dir / "power.parquet"
    power = pd.read_parquet(power_file, **PARQUET_READ_OPTIONS) if power_file.is_file() else None
    windows = [(p.point_id, p.window.t0_s, p.window.t1_s) for p in run.points if p.status == "ok" and p.window]
    if power is not None:
        plots.append(power_over_time(power, out_dir / "power_over_time.png", windows=windows))
    server_file = run_dir / "server_metrics.parquet"
    server_metrics = pd.read_parquet(server_file, **PARQUET_READ_OPTIONS) if server_file.is_file() else None
    if server_metrics is not None:
        plots.append(server_metrics_over_time(server_metrics, out_dir / "server_metrics_over_time.png",
                                              windows=windows))
    # one token basis per column, named; latencies in ms (the results keep seconds)
    columns: list[str | tuple[str, str]] = [
               "point_id", "load", "status", "valid", "reasons", "n_requests", (Y, metric_label(Y, short=True)),
               ("output_tok_s_per_gpu", metric_label("output_tok_s_per_gpu", short=True)),
               (X, metric_label(X, short=True)), *_MS_COLUMNS, "error_rate",
               ("avg_power_w", "power (W)"), "energy_method", ("j_per_token", metric_label("j_per_token", short=True)),
               ("j_per_output_token", metric_label("j_per_output_token", short=True)), "roofline_efficiency",
               "prefix_cache_hit_rate", "running_requests_max", "preemptions_in_window"]
    costs = [_cost_row(p) for p in run.points if p.status == "ok"]
    scenarios = sorted({k.split("__", 1)[1] for row in costs for k in row if "__" in k})
    cost_columns: list[str | tuple[str, str]] = ["point_id"]
    cost_columns += [c for s in scenarios for c in ((f"usd__{s}", f"$/Mtok output ({s})"), (f"util__{s}", "util."))]
    by_point = {row["point_id"]: row for row in costs}
    ok_points = ok_points.assign(**{f"usd_per_mtok_output__{s}": [by_point.get(pid, {}).get(f"usd__{s}")
                                                                 for pid in ok_points["point_id"]] for s in scenarios})
    for s in scenarios:
        plots.append(metric_vs_interactivity(ok_points[ok_points["valid"]], f"usd_per_mtok_output__{s}",
                                             out_dir / f"usd_per_mtok_{s}.png",
                                             f"{run.run_id}: $ per million output tokens ({s})",
                                             ylabel="$ / Mtok output"))
    from bench.analysis.repeats import REPEAT_COLUMNS, has_repeats, repeat_rows
    from bench.results.repeats import repeat_summaries

    summaries = repeat_summaries(run)
    repeats = repeat_rows(summaries) if has_repeats(summaries) else []
    about = {"status": status, "error": run.error, "created_utc": run.created_utc,
             "finished_utc": run.finished_utc, "harness": run.harness.model_dump(), "config": run.config.model_dump(mode="json"),
             "provenance": run.provenance.model_dump(mode="json"), "extra": run.extra}
    text = [
        f"# Run {md_text(run.run_id)}", "",
        (f"{md_text(', '.join(run_models(run)))} on {md_text(run.config.hardware_id)}, "
         f"{len(run.points)} load points, status **{md_text(status)}**."), "",
        "Interactive: [report.html](report.html). Latencies of invalid points are marked (invalid).", "",
        *_synthetic_note(run.synthetic),
        "## Load points", "", markdown_table(points, columns), "",
        "## Cost as stored with the run", "",
        ("$ per million output tokens for each cost scenario, at the utilization shown "
         "(`bench costmodel build` recomputes them with current prices)."), "",
        markdown_table(costs, cost_columns) if scenarios else "No cost figures stored.", "",
        *(["## Over repeats", "",
           ("Each figure over a load point's valid repeats (same prompts and schedule each time): n, mean, sd, "
            "CV and the Student-t 95% interval of the mean; a figure measured once is a single run."), "",
           markdown_table(repeats, REPEAT_COLUMNS), ""] if repeats else []),
        "## Plots", "", *[f"![{p.path.stem}]({p.path.name})" for p in plots], "",
        *markdown_section(run.timing),  # time breakdown (issue 22)
        "## Provenance", "", "```json", json.dumps(about, indent=2, sort_keys=True, default=str), "```", "",
    ]
    path = out_dir / "report.md"
    path.write_text("\n".join(text))
    from bench.analysis.pages import run_page

    lead = (f"{', '.join(run_models(run))} on {run.config.hardware_id}, {len(run.points)} load points, "
            f"status {status}.")
    html = run_page(out_dir / "report.html", f"Run {run.run_id}", lead, ok_points, points, columns, costs,
                    cost_columns, power, windows, json.dumps(about, indent=2, sort_keys=True, default=str),
                    synthetic=run.synthetic, server_metrics=server_metrics,
                    time_parts=html_parts(run.timing),  # time breakdown (issue 22)
                    cost_scenarios=scenarios, repeat_table=(repeats, REPEAT_COLUMNS))
    return Report(path, pd.DataFrame(points), plots, status, html=html.path, figures=html.figures)


_MS_COLUMNS = [("ttft_ms_p50", "TTFT p50 (ms)"), ("ttft_ms_p99", "TTFT p99 (ms)"), ("tpot_ms_p50", "TPOT p50 (ms)"),
               ("tpot_ms_p99", "TPOT p99 (ms)")]


def _ratio_columns(metric: str) -> list[tuple[str, str]]:
    """A ratio against the baseline, its 95% interval and its verdict (bench.analysis.significance)."""
    return [(f"{metric}_vs_baseline", "x base"), (f"{metric}_vs_baseline_ci95", "x base 95% CI"),
            (f"{metric}_vs_baseline_verdict", "verdict")]


def _point_row(p) -> dict:
    if p.load.kind == "concurrency":
        load_text = f"concurrency {p.load.concurrency}"
    else:
        load_text = ", ".join(f"{k}={v}" for k, v in sorted(p.load.model_dump(mode="json").items()))
    reasons = list(p.invalid_reasons) + ([p.error] if p.error else [])
    row = {"point_id": p.point_id, "load": load_text, "status": p.status, "valid": p.valid,
           "reasons": "; ".join(reasons), "n_requests": p.n_requests}
    # each group's fields by name: a group the point lacks gives None for all of them
    m, e = p.metrics or Metrics(), p.energy or Energy()
    for key in (Y, "output_tok_s_per_gpu", X, "ttft_s_p50", "ttft_s_p99", "tpot_s_p50", "tpot_s_p99", "error_rate"):
        row[key] = getattr(m, key)
    for key, _ in _MS_COLUMNS:
        seconds = row[key.replace("_ms_", "_s_")]
        row[key] = seconds * 1000.0 if seconds is not None else None
    for key in ("avg_power_w", "j_per_token", "j_per_output_token", "energy_method"):
        row[key] = getattr(e, key)
    row["roofline_efficiency"] = p.roofline.roofline_efficiency if p.roofline is not None else None
    server = p.server or ServerCounters()
    for key in ("prefix_cache_hit_rate", "running_requests_max", "preemptions_in_window"):
        row[key] = getattr(server, key)
    return row


def _cost_row(p) -> dict:
    """$/Mtok output and utilization per stored scenario (`cost` is {scenario: CostFigures};
    a v1 file's flat figures were put under their scenario name on read)."""
    by_scenario = {k: v for k, v in p.cost.items() if v.usd_per_mtok_output is not None}
    row = {"point_id": p.point_id}
    for name, figures in by_scenario.items():
        row[f"usd__{name}"] = figures.usd_per_mtok_output
        row[f"util__{name}"] = figures.utilization
    return row


def default_scenario(table: pd.DataFrame) -> str:
    """The first cost scenario of the table (by name); ConfigError when it has none."""
    present = _scenarios(table, None)
    if not present:
        raise ConfigError("no cost scenario in the table: --explain needs $/Mtok figures")
    return present[0]


def _scenarios(table: pd.DataFrame, names: list[str] | None) -> list[str]:
    present = sorted({c.split("__", 1)[1] for c in table.columns if c.startswith("usd_per_mtok_output__")})
    if not names:
        return present
    unknown = [n for n in names if n not in present]
    if unknown:
        raise ConfigError(f"unknown cost scenario(s) {', '.join(unknown)} (in table: {', '.join(present) or 'none'})")
    return list(names)


def _synthetic_note(synthetic: bool) -> list[str]:
    if synthetic:
        return ["> **Synthetic data**: some runs are test fixtures, not measurements.", ""]
    return []


def _with_invalid(rows: pd.DataFrame, runs: list[tuple[str, RunResult]], model: str) -> pd.DataFrame:
    """The table's rows of MODEL plus its runs' invalid ok points, with each point's reasons."""
    invalid = build_table(runs, include_invalid=True)
    invalid = invalid[(invalid["model"] == model) & ~invalid["valid"].astype(bool)]
    points = pd.concat([rows, invalid], ignore_index=True) if not invalid.empty else rows.reset_index(drop=True)
    return _with_reasons(points, runs)


def _with_reasons(points: pd.DataFrame, runs: list[tuple[str, RunResult]]) -> pd.DataFrame:
    """`valid` as plain bool and each point's invalid reasons in `reasons`."""
    reasons = {(rid, p.point_id): "; ".join(p.invalid_reasons) for rid, run in runs for p in run.points}
    return points.assign(valid=points["valid"].astype(bool),
                         reasons=[reasons.get(k, "") for k in zip(points["run_id"], points["point_id"])])


def _explain_section(expl) -> list[str]:
    from bench.analysis.explain import EXPLAIN_COLUMNS

    return [f"## Why {md_text(expl.b)} costs {expl.ratio:.4f} x {md_text(expl.a)} per output token", "",
            (f"$/Mtok output ({md_text(expl.scenario)}) at {md_text(expl.operating_point)}, decomposed into the cost "
             f"law's factors; they multiply to the measured ratio ({expl.product:.6f}). Sparsity explains, it is "
             "never multiplied in (docs/compare.md)."), "",
            markdown_table(expl.rows(), EXPLAIN_COLUMNS), ""]


def _reference_section(model: str, published: list, matched: bool) -> list[str]:
    from bench.analysis.reference import REFERENCE_COLUMNS, reference_rows

    scope = (f"Figures others published for {md_text(model)}" if matched else
             f"No published figure is of {md_text(model)}; every published figure is listed, for scale only")
    return ["## Published figures (source: published, not measured here)", "",
            (f"{scope} (published.yaml: where each was read and what is uncertain). They are drawn as "
             "black markers in compare.html; they never enter the measured cost-model table."), "",
            markdown_table(reference_rows(published), REFERENCE_COLUMNS), ""]



def _spec_section(rows: pd.DataFrame) -> list[str]:
    """Speculative points against the same configuration without speculation (issue 21); none: []."""
    from bench.analysis.specdecode import spec_speedup

    found = [vars(s) for s in spec_speedup(rows)]
    if not found:
        return []
    columns = [("point_id", "point"), ("spec_method", "method"), ("spec_tokens", "draft tokens"),
               ("mean_acceptance_length", "accept len"), ("interactivity_tok_s_user", "tok/s/user"),
               ("speedup_same_load", "x same load"), ("speedup_at_interactivity", "x at interactivity")]
    return ["## Speculative decoding", "",
            ("Each speculative point against the same configuration and workload without speculation: output tok/s "
             "at the same load, and output tok/s per GPU at the same interactivity (the baseline interpolated "
             "between its loads, never extrapolated; `-`: no baseline there)."), "",
            markdown_table(found, columns), ""]
