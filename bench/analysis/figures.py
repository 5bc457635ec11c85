"""Interactive plotly figures of load points, published figures and power, for the HTML reports.

Every trace carries `meta = {"kind": ..., "series": ...}`, kind one of "measured", "front",
"invalid", "published", "power", "server_metrics", so tests (and readers of the page) can tell them apart.
Invalid points are drawn with an x marker and labelled in their hover text; a TPOT of 0,
or an interactivity computed from it, is never drawn. Every label that comes from a run
(series, ids, versions, reasons, titles with a model name) goes through `plot_text`: plotly
draws <a href> and other tags in labels, so a run id from a store could otherwise put a link
in every legend. `meta` keeps the raw series name (never drawn).
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from bench.analysis.pareto import X, pareto_front, split_series
from bench.analysis.reference import RefPoint, ref_label
from bench.escape import plot_text as esc
from bench.measure.groups import metric_label

HIGHER_IS_BETTER = {"output_tok_s_per_gpu", "tok_s_per_gpu"}
COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
          "#17becf"]
REF_SYMBOLS = {"ML.ENERGY": "star", "MLPerf": "diamond", "SemiAnalysis": "square"}
INVALID_SYMBOL = "x-thin-open"


def _layout(fig, title: str, xlabel: str, ylabel: str, log: bool = True):
    """Titles, legend, and per axis a log scale where its values span more than LOG_SPAN."""
    # One update_layout call: each call walks plotly's validators (the template alone ~30 ms).
    axes: dict[str, dict] = {}
    for which, label in (("x", xlabel), ("y", ylabel)):
        values: dict[str, list[float]] = {}
        for t in fig.data:
            values.setdefault(getattr(t, f"{which}axis") or which, []).extend(
                float(v) for v in (getattr(t, which) or ()) if _num(v) and float(v) > 0)
        for name, vs in values.items():
            axes[name.replace(which, f"{which}axis", 1)] = {"title_text": esc(label), **_axis(vs, log)}
    fig.update_layout(
        title={"text": esc(title), "x": 0.01, "xanchor": "left"}, template="plotly_white", height=480,
        margin={"l": 70, "r": 20, "t": 60, "b": 60}, hovermode="closest", showlegend=True,
        legend={"font": {"size": 11}, "itemsizing": "constant"}, **axes,
    )
    return fig


LOG_SPAN = 20.0


def _axis(values: list[float], log: bool) -> dict:
    """Linear from 0, or log with labelled 1-2-5 ticks when the values span more than LOG_SPAN."""
    if not log or not values or max(values) / min(values) <= LOG_SPAN:
        return {"type": "linear", "rangemode": "tozero"}
    lo, hi = min(values) / 1.5, max(values) * 1.5
    ticks = [m * 10.0 ** k for k in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
             for m in (1, 2, 5) if lo <= m * 10.0 ** k <= hi]
    return {"type": "log", "tickvals": ticks, "ticktext": [_si(v) for v in ticks]}


def _si(v: float) -> str:
    for scale, suffix in ((1e6, "M"), (1e3, "k")):
        if v >= scale:
            return f"{v / scale:g}{suffix}"
    return f"{v:g}"


def plottable(rows: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Rows with a finite, positive interactivity (never from a TPOT of 0) and a finite metric."""
    if rows.empty or metric not in rows:
        return rows.iloc[0:0]
    x, y = pd.to_numeric(rows[X], errors="coerce"), pd.to_numeric(rows[metric], errors="coerce")
    ok = x.notna() & y.notna() & (x > 0) & x.map(math.isfinite) & y.map(math.isfinite)
    if "tpot_s_p50" in rows:
        tpot = pd.to_numeric(rows["tpot_s_p50"], errors="coerce")
        ok &= tpot.isna() | (tpot > 0)
    return rows[ok]


# The columns a point's hover text reads; a column the table lacks reads as empty.
HOVER_COLUMNS = ["valid", "reasons", "concurrency", "rate_rps", "load_kind", "isl", "osl", "energy_method", "measured",
                 "run_id", "point_id", "engine", "engine_version", "n_gpus", "device_name", "harness_version",
                 "run_date", "accuracy_passed", "accuracy_score"]


def point_hovers(rows: pd.DataFrame, series: str, lines: list[list[str]]) -> list[str]:
    """Hover text of each measured point of `rows` (one series): values, validity and
    provenance, each value escaped; `lines[i]` are the caller's for row i, already plotly text."""
    # Plain lists, one pass: per-row pandas access cost most of a figure's build time.
    n = len(rows)
    columns = [[None if _missing(v) else v for v in rows[c].tolist()] if c in rows.columns else [None] * n
               for c in HOVER_COLUMNS]
    accuracy = "accuracy_passed" in rows.columns
    return [_hover(dict(zip(HOVER_COLUMNS, r)), esc(series), extra, accuracy)
            for r, extra in zip(zip(*columns), lines)]


def _missing(v: Any) -> bool:
    """True for a cell pandas reads as empty (None, NaN, NaT, pd.NA)."""
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


def _hover(r: dict[str, Any], series: str, lines: list[str], accuracy: bool) -> str:
    """One point's hover text from its HOVER_COLUMNS values `r` (None where empty)."""
    e = {k: esc(v) if isinstance(v, str) else v for k, v in r.items()}  # every text escaped once
    verdict = "valid" if r["valid"] is True or r["valid"] == 1 else f"<b>INVALID</b>: {e['reasons'] or 'see report'}"
    load = f"concurrency {e['concurrency']}" if _num(r["concurrency"]) else (
        f"rate {e['rate_rps']} req/s" if _num(r["rate_rps"]) else str(e["load_kind"] or "-"))
    shape = f"{e['isl']} in / {e['osl']} out" if _num(r["isl"]) else ""
    energy = str(e["energy_method"] or "-") + (" (estimate, not measured)" if r["measured"] is False else "")
    return "<br>".join([
        f"<b>{series}</b>", *lines, f"{load}{' · ' + shape if shape else ''}", verdict,
        f"run {e['run_id']} · point {e['point_id']}",
        f"engine {e['engine']} {e['engine_version'] or ''} · {e['n_gpus']} GPU(s)",
        f"device {e['device_name'] or '-'} · harness {e['harness_version'] or '-'} · {e['run_date'] or ''}",
        f"energy: {energy}",
        *([f"accuracy: {_accuracy(r['accuracy_passed'], r['accuracy_score'])}"] if accuracy else []),
    ])


def _accuracy(passed: Any, score: Any) -> str:
    """The accuracy gate's verdict and score of a point (issue 20 item 1's columns)."""
    verdict = "not run" if not _num(passed) else ("passed" if bool(passed) else "FAILED")
    return verdict + (f" ({score:.4g})" if _num(score) else "")


def interactivity_figure(points: pd.DataFrame, metric: str, title: str, ylabel: str | None = None,
                         refs: list[RefPoint] | None = None):
    """METRIC against interactivity: per series its valid points, their Pareto front (line)
    and its invalid points (x markers); published points (refs) as distinct markers."""
    import plotly.graph_objects as go

    ylabel = ylabel or metric_label(metric)
    fig = go.Figure(data=_interactivity_traces(points, metric, ylabel, refs or []))
    if not fig.data:
        fig.add_annotation(text="no points to plot", x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False)
    return _layout(fig, title, metric_label(X), ylabel)


def _interactivity_traces(points: pd.DataFrame, metric: str, ylabel: str, refs: list[RefPoint],
                          series: list[tuple[str, pd.DataFrame]] | None = None) -> list[dict]:
    """The traces of interactivity_figure as plain dicts: plotly validates them once, in the Figure.
    `series`: series_of(points) where the caller has it already."""
    traces: list[dict] = []
    sign = 1.0 if metric in HIGHER_IS_BETTER else -1.0
    for i, (label, rows) in enumerate(series_of(points) if series is None else series):
        color = COLORS[i % len(COLORS)]
        rows = plottable(rows, metric)
        valid = rows[rows["valid"].astype(bool)] if "valid" in rows else rows
        invalid = rows[~rows["valid"].astype(bool)] if "valid" in rows else rows.iloc[0:0]
        _points_trace(traces, valid, metric, label, color, "measured", ylabel)
        if not valid.empty:
            xs, ys = valid[X].astype(float).tolist(), valid[metric].astype(float).tolist()
            idx = pareto_front(xs, [sign * y for y in ys])
            traces.append({
                "type": "scatter", "x": [xs[k] for k in idx], "y": [ys[k] for k in idx], "mode": "lines",
                "name": esc(f"{label} front"), "line": {"color": color, "width": 2}, "legendgroup": label,
                "showlegend": False, "hoverinfo": "skip", "meta": {"kind": "front", "series": label}})
        _points_trace(traces, invalid, metric, f"{label} (invalid)", color, "invalid", ylabel, series=label)
    _ref_traces(traces, refs, ylabel)
    return traces


def cost_figure(points: pd.DataFrame, scenarios: list[str], title: str, refs_for=None):
    """$ per million output tokens against interactivity, one set of traces per cost
    scenario (meta["scenario"]); a menu shows one scenario at a time, the first at start."""
    import plotly.graph_objects as go

    names = scenarios or [""]
    traces: list[dict] = []
    spans = []
    series = series_of(points)  # split once, drawn once per scenario
    for s in names:
        metric = f"usd_per_mtok_output__{s}" if s else "usd_per_mtok_output"
        start = len(traces)
        for t in _interactivity_traces(points, metric, "$ / Mtok output", refs_for(metric) if refs_for else [],
                                       series):
            traces.append({**t, "meta": {**t["meta"], "scenario": s}, "visible": s == names[0]})
        spans.append((s, start, len(traces)))
    fig = go.Figure(data=traces)
    if len(names) > 1:
        buttons = [{"label": esc(s), "method": "update",
                    "args": [{"visible": [a <= k < b for k in range(len(fig.data))]},
                             {"title.text": esc(f"{title} ({s})")}]} for s, a, b in spans]
        fig.update_layout(updatemenus=[{"buttons": buttons, "x": 1.0, "xanchor": "right", "y": 1.12,
                                        "yanchor": "top", "showactive": True}])
    if not fig.data:
        fig.add_annotation(text="no cost figures (no prices for this hardware)", x=0.5, y=0.5, xref="paper",
                           yref="paper", showarrow=False)
    return _layout(fig, f"{title} ({names[0] or 'no cost scenario'})", metric_label(X), "$ / Mtok output")


def series_of(points: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """(label, rows) per series; the model leads the label when the points hold several."""
    if points.empty:
        return []
    models = sorted(set(points["model"].dropna())) if "model" in points else []
    if len(models) <= 1:
        return [(label, rows) for label, _, rows in split_series(points)]
    return [(f"{m} {label}", rows) for m in models for label, _, rows in split_series(points[points["model"] == m])]


def _points_trace(traces: list[dict], rows: pd.DataFrame, metric: str, name: str, color: str, kind: str,
                  ylabel: str, series: str | None = None) -> None:
    """Appends the markers of `rows` (one series, one kind) to `traces`, as a plotly scatter dict."""
    if rows.empty:
        return
    invalid = kind == "invalid"
    xs, ys = rows[X].astype(float).tolist(), rows[metric].astype(float).tolist()
    hover = point_hovers(rows, series or name, [[f"{metric_label(X)}: {_g(x)}", f"{esc(ylabel)}: {_g(y)}"]
                                                for x, y in zip(xs, ys)])
    traces.append({
        "type": "scatter", "x": xs, "y": ys, "mode": "markers", "name": esc(name),
        "marker": {"color": color, "size": 11 if invalid else 9, "symbol": INVALID_SYMBOL if invalid else "circle",
                   "line": {"width": 2, "color": color}},
        "legendgroup": series or name, "hovertext": hover, "hoverinfo": "text",
        "meta": {"kind": kind, "series": series or name}})


def _ref_traces(traces: list[dict], refs: list[RefPoint], ylabel: str) -> None:
    """Appends one marker trace per publisher group of `refs` to `traces`."""
    groups: dict[str, list[RefPoint]] = {}
    for p in refs:
        groups.setdefault(ref_label(p.row), []).append(p)
    for label, pts in groups.items():
        symbol = next((s for k, s in REF_SYMBOLS.items() if pts[0].row.publisher.startswith(k)), "star-diamond")
        hover = ["<br>".join([f"<b>{esc(label)}</b>", "source: published (not measured here)",
                              f"{metric_label(X)}: {_g(p.x)}", f"{esc(ylabel)}: {_g(p.y)}", *map(esc, p.derived),
                              esc(f"{p.row.load} · {p.row.workload}"), esc(f"as published: {p.row.as_published}"),
                              esc(f"where: {p.row.where}"), *[esc(f"note: {n}") for n in p.row.notes]]) for p in pts]
        traces.append({
            "type": "scatter", "x": [p.x for p in pts], "y": [p.y for p in pts], "mode": "markers",
            "name": esc(label), "hovertext": hover, "hoverinfo": "text",
            "marker": {"symbol": symbol, "size": 14, "color": "#222222", "line": {"width": 1, "color": "#ffd400"}},
            "meta": {"kind": "published", "series": label}})


def latency_figure(points: pd.DataFrame, title: str, load_label: str = "load level (concurrency or req/s)"):
    """TTFT and TPOT p50/p99 per load level, one pair of lines per series; invalid points
    as x markers; a TPOT of 0 is left out."""
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=("time to first token (s)", "time per output token (s)"),
                        horizontal_spacing=0.1)
    traces: list[dict] = []  # added in one call: plotly validates them once
    cols: list[int] = []
    rows_all = points.assign(level=_load_level(points)) if not points.empty else points
    for i, (label, rows) in enumerate(series_of(rows_all)):
        color = COLORS[i % len(COLORS)]
        rows = rows[rows["level"].notna()].sort_values("level")
        for col, metric in ((1, "ttft_s"), (2, "tpot_s")):
            for q, dash in (("p50", "solid"), ("p99", "dot")):
                key = f"{metric}_{q}"
                if key not in rows:
                    continue
                shown = rows[pd.to_numeric(rows[key], errors="coerce") > 0]
                valid = shown[shown["valid"].astype(bool)] if "valid" in shown else shown
                invalid = shown[~shown["valid"].astype(bool)] if "valid" in shown else shown.iloc[0:0]
                for part, kind in ((valid, "measured"), (invalid, "invalid")):
                    if part.empty:
                        continue
                    hover = point_hovers(part, label, [[f"{key}: {_g(v)} s"] for v in part[key]])
                    bad = kind == "invalid"
                    traces.append({
                        "type": "scatter", "x": part["level"].astype(float).tolist(),
                        "y": part[key].astype(float).tolist(), "mode": "markers" if bad else "lines+markers",
                        "name": esc((label if col == 1 and q == "p50" else f"{label} {key}")
                                    + (" (invalid)" if bad else "")),
                        "line": {"color": color, "dash": dash}, "legendgroup": label,
                        "marker": {"color": color, "symbol": INVALID_SYMBOL if bad else "circle",
                                   "size": 11 if bad else 7, "line": {"width": 2, "color": color}},
                        "showlegend": col == 1 and q == "p50", "hovertext": hover, "hoverinfo": "text",
                        "meta": {"kind": kind, "series": label, "metric": key}})
                    cols.append(col)
    if traces:
        fig.add_traces(traces, rows=[1] * len(traces), cols=cols)
    return _layout(fig, title, load_label, "seconds")


def _shade_windows(fig, windows: list[tuple[str, float | None, float | None]] | None, t0_s: float) -> None:
    """Each load point's measurement window (label, t0_s, t1_s) shaded, times from `t0_s`, shades alternating."""
    for i, (label, w0, w1) in enumerate(windows or []):
        if w0 is None or w1 is None:
            continue
        fig.add_vrect(x0=w0 - t0_s, x1=w1 - t0_s, fillcolor="grey", opacity=0.12 if i % 2 else 0.22, line_width=0,
                      annotation_text=esc(label), annotation_position="top left", annotation_font_size=9)


def power_figure(power: pd.DataFrame, title: str = "Board power over time",
                 windows: list[tuple[str, float | None, float | None]] | None = None):
    """One line per device (columns t_s, device, power_w), time from the first sample;
    each load point's measurement window (label, t0_s, t1_s) is shaded."""
    import plotly.graph_objects as go

    fig = go.Figure()
    power = power.dropna(subset=["power_w"])
    t0 = float(power["t_s"].min()) if len(power) else 0.0
    if len(power):
        _shade_windows(fig, windows, t0)
    for device, rows in sorted(power.groupby("device"), key=lambda g: str(g[0])):
        rows = rows.sort_values("t_s")
        fig.add_trace(go.Scatter(x=(rows["t_s"].astype(float) - t0).tolist(), y=rows["power_w"].astype(float).tolist(),
                                 mode="lines", name=esc(f"device {device}"), line={"width": 1},
                                 meta={"kind": "power", "series": f"device {device}"}))
    return _layout(fig, title, "time since first sample (s)", "power (W)", log=False)


SERVER_SERIES = {"running_requests": "running requests", "waiting_requests": "waiting requests",
                 "kv_cache_usage": "KV-cache usage (%)"}


def server_metrics_figure(frame: pd.DataFrame, title: str = "Server metrics over time",
                          windows: list[tuple[str, float | None, float | None]] | None = None):
    """Running and waiting requests (left axis) and KV-cache usage in % (right axis) from
    server_metrics.parquet rows (config_id, point_id, t_s, metric, value), time from the first
    sample; each load point's measurement window (label, t0_s, t1_s) is shaded."""
    import plotly.graph_objects as go

    fig = go.Figure()
    frame = frame[frame["metric"].isin(list(SERVER_SERIES))]
    t0 = float(frame["t_s"].min()) if len(frame) else 0.0
    if len(frame):
        _shade_windows(fig, windows, t0)
    several = frame["config_id"].nunique() > 1
    for (cid, metric), rows in sorted(frame.groupby(["config_id", "metric"]), key=lambda g: (str(g[0][0]), g[0][1])):
        rows = rows.sort_values("t_s")
        kv = metric == "kv_cache_usage"
        name = SERVER_SERIES[metric] + (f" ({cid})" if several else "")
        fig.add_trace(go.Scatter(x=(rows["t_s"].astype(float) - t0).tolist(),
                                 y=(rows["value"].astype(float) * (100.0 if kv else 1.0)).tolist(),
                                 mode="lines", name=esc(name), yaxis="y2" if kv else "y",
                                 line={"width": 1, "shape": "hv", "dash": "dot" if kv else "solid"},
                                 meta={"kind": "server_metrics", "series": name}))
    fig.update_layout(yaxis2={"overlaying": "y", "side": "right", "showgrid": False})
    _layout(fig, title, "time since first sample (s)", "requests", log=False)
    fig.update_layout(yaxis2={"title_text": "KV-cache usage (%)", "range": [0, 100]})
    return fig


def _load_level(points: pd.DataFrame) -> pd.Series:
    """Concurrency, else request rate, of each row (NaN for other loads)."""
    level = pd.to_numeric(points["concurrency"], errors="coerce").astype(float) if "concurrency" in points \
        else pd.Series(math.nan, index=points.index)
    if "rate_rps" in points:
        level = level.fillna(pd.to_numeric(points["rate_rps"], errors="coerce").astype(float))
    return level.replace([math.inf, -math.inf], math.nan)


def _num(v: Any) -> bool:
    try:
        return v is not None and not pd.isna(v)
    except (TypeError, ValueError):
        return False


def _g(v: Any) -> str:
    try:
        return f"{float(v):.4g}"
    except (TypeError, ValueError):
        return esc(v)
