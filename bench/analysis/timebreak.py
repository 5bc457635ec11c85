"""Where a run's time went, for a person: the lines `bench run`/`sweep` print at the end, the
report.md section and report.html's section with its chart (issue 22, docs/timing.md).

    lines = time_lines(result.timing)          # terminal
    md = markdown_section(result.timing)       # report.md
    parts = html_parts(result.timing)          # report.html (heading, chart, table)
"""

from __future__ import annotations

from typing import Any

from bench.analysis.cellformat import fmt
from bench.escape import md_text
from bench.results.timing import RunTiming

PHASES = (  # (field of RunTiming, label): the wall time's parts, in the order they happen
    ("start_s", "engine starts"),
    ("warmup_s", "warm-up"),
    ("window_s", "measurement windows"),
    ("drain_s", "ramp-up and drain"),
    ("other_s", "other (resets, counters, client workers, idle baselines, writes, stops)"),
)


def breakdown_rows(t: RunTiming) -> list[dict[str, Any]]:
    """One row per part of the wall time: seconds and share of the wall (text, in %)."""
    return [{"part": label, "seconds": getattr(t, name),
             "share": f"{getattr(t, name) / t.wall_s:.1%}" if t.wall_s > 0 else "-"} for name, label in PHASES]


def start_rows(t: RunTiming) -> list[dict[str, Any]]:
    """One row per engine start: its wall, the phases its log named, the compile cache."""
    return [{"config": s.config_id, "start_s": s.start_s,
             "phases": ", ".join(f"{k.removesuffix('_s')} {fmt(v)} s" for k, v in s.phases.items()) or "-",
             "compile cache": s.compile_cache or "-",
             "pre-started": f"beside {s.prestart_during}, {fmt(s.hidden_s or 0.0)} s hidden" if s.prestart_during
             else "-"} for s in t.engine_starts]


START_COLUMNS = ["config", "start_s", "phases", "compile cache", "pre-started"]


def price_text(t: RunTiming) -> str:
    """'$0.0018 at 0.0864 $/device-h x 1' or why there is no figure."""
    if t.usd is None:
        return "no rental price in the catalog for this hardware"
    return f"${t.usd:.4g} at {t.rental_usd_per_gpu_hour:g} $/device-h x {t.n_devices} (on-demand rental)"


def time_lines(t: RunTiming | None) -> list[str]:
    """The end-of-run lines; none for a run without timing (an older file)."""
    if t is None:
        return []
    duty = f"{t.duty_cycle:.0%}" if t.duty_cycle is not None else "-"
    parts = "; ".join(f"{r['part'].split(' (')[0]} {fmt(r['seconds'])} s" for r in breakdown_rows(t))
    lines = [f"time: wall {fmt(t.wall_s)} s = {parts}; duty cycle {duty}; {price_text(t)}"]
    if t.prestart_hidden_s > 0:  # --prestart: starts overlapped the previous configuration's points
        lines[0] += f"; pre-started engines hid {fmt(t.prestart_hidden_s)} s of starts"
    for r in start_rows(t):
        beside = f"; pre-started {r['pre-started']}" if r["pre-started"] != "-" else ""
        lines.append(f"  start {r['config']}: {fmt(r['start_s'])} s ({r['phases']}; compile cache {r['compile cache']}"
                     f"{beside})")
    if t.plan_check is not None:
        c = t.plan_check
        lines.append(f"  plan estimate {fmt(c.estimate_s)} s vs actual {fmt(c.actual_s)} s: error {c.error:+.0%} ({c.basis})")
    return lines


def _md_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """Rows as a Markdown table, every cell `fmt` then `md_text` (config ids come from a store)."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(md_text(c if isinstance(c := r.get(k), str) else fmt(c)) for k in columns) + " |"
              for r in rows]
    return "\n".join(lines)


def markdown_section(t: RunTiming | None) -> list[str]:
    """report.md's 'Where the time went' section (lines)."""
    if t is None:
        return []
    return ["## Where the time went", "", *[f"{line}  " for line in time_lines(t)[:1]], "",
            _md_table(breakdown_rows(t), ["part", "seconds", "share"]), "",
            _md_table(start_rows(t), START_COLUMNS) if t.engine_starts
            else "No engine start recorded.", ""]


def html_parts(t: RunTiming | None) -> list[str]:
    """report.html's section: a heading, one stacked bar of the wall time, the two tables."""
    from bench.analysis import html as page

    if t is None:
        return []
    return [page.heading("Where the time went"), page.paragraph(time_lines(t)[0]),
            page.figure_html(breakdown_figure(t), "plot-time"),
            page.table_html(breakdown_rows(t), ["part", "seconds", "share"], table_id="time-table"),
            page.table_html(start_rows(t), START_COLUMNS, table_id="start-table")]


def breakdown_figure(t: RunTiming) -> Any:
    """A horizontal stacked bar of the run's wall time by part (plotly)."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for r in breakdown_rows(t):
        fig.add_bar(y=["run"], x=[r["seconds"]], name=r["part"], orientation="h",
                    hovertemplate=f"{r['part']}: %{{x:.1f}} s<extra></extra>")
    duty = f"{t.duty_cycle:.0%}" if t.duty_cycle is not None else "-"
    fig.update_layout(barmode="stack", height=220, title=f"wall {t.wall_s:.0f} s, duty cycle {duty}",
                      xaxis_title="seconds", margin={"l": 40, "r": 20, "t": 50, "b": 40})
    return fig
