"""PNG plots of cost-model tables, power and server-metric series (matplotlib, Agg, no pyplot state).

Each function writes one PNG and returns a `Plot` naming the file and the series drawn,
so callers and tests can check what was plotted. Text drawn from a run (series labels,
titles with a run id, window labels) goes through `_mpl`: matplotlib reads `$...$` as
mathtext, and a malformed one from a store would make savefig raise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from bench.analysis.pareto import X, Y, front_rows, split_series
from bench.measure.groups import metric_label


@dataclass
class Plot:
    """A written PNG, the number and labels of the series drawn, and the matplotlib Figure."""

    path: Path
    n_series: int
    labels: list[str] = field(default_factory=list)
    figure: Any = field(default=None, repr=False)


def _mpl(text) -> str:
    """`text` drawn as typed: every `$` escaped (no mathtext); a leading `_` would hide a legend entry."""
    out = str(text).replace("$", r"\$")
    return " " + out if out.startswith("_") else out


def _figure(title: str, xlabel: str, ylabel: str):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.set_title(_mpl(title))
    ax.set_xlabel(_mpl(xlabel))
    ax.set_ylabel(_mpl(ylabel))
    ax.grid(True, alpha=0.3)
    return fig, ax


# Margins (figure fractions) of a plot against interactivity: room for y tick labels of up to
# 8 characters ("0.000125", "875000"; matplotlib writes larger and smaller values with an
# offset) beside the y label, one line of tick labels and the x label below, the title above.
# Fixed rather than tight_layout, which lays out every tick label once more before the
# drawing does (a quarter of each PNG's time); the legend is inside the axes.
FIXED_MARGINS = {"left": 0.12, "right": 0.98, "bottom": 0.117, "top": 0.928}


def _save(fig, ax, path: Path, labels: list[str], handles: list | None = None, tight: bool = True) -> Plot:
    """Legend (or "no valid points"), layout, PNG; `tight=False` lays out by FIXED_MARGINS."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if labels:
        ax.legend(*([handles, [_mpl(label) for label in labels]] if handles else []), fontsize=8, loc="best")
    else:
        ax.text(0.5, 0.5, "no valid points", ha="center", va="center", transform=ax.transAxes)
    if tight:  # a twin axis or window labels above the axes: margins that depend on them
        fig.tight_layout()
    else:
        fig.subplots_adjust(**FIXED_MARGINS)
    fig.savefig(path, format="png")
    return Plot(path, len(labels), labels, fig)


def metric_vs_interactivity(table: pd.DataFrame, metric: str, path: Path, title: str = "",
                            ylabel: str | None = None, front_only: bool = False) -> Plot:
    """One curve per series: METRIC against interactivity, points joined in interactivity order.

    With front_only, the line follows the series' Pareto front of throughput per GPU vs
    interactivity and the other measured points are drawn as faint markers.
    """
    fig, ax = _figure(title or f"{metric} vs interactivity", metric_label(X), ylabel or metric_label(metric))
    labels = []
    for label, _, rows in split_series(table):
        rows = rows[rows[X].notna() & rows[metric].notna()] if metric in rows else rows.iloc[0:0]
        if rows.empty:
            continue
        line = front_rows(rows) if front_only else rows.sort_values(X)
        (handle,) = ax.plot(line[X].astype(float), line[metric].astype(float), marker="o", label=_mpl(label))
        if front_only:
            ax.scatter(rows[X].astype(float), rows[metric].astype(float), color=handle.get_color(), alpha=0.3, s=14)
        labels.append(label)
    return _save(fig, ax, path, labels, tight=False)


def throughput_vs_interactivity(table: pd.DataFrame, path: Path, title: str = "") -> Plot:
    """Throughput per GPU against tok/s per user: Pareto front line + all points, per series."""
    return metric_vs_interactivity(table, Y, path, title or "Throughput per GPU vs interactivity",
                                   front_only=True)


def power_over_time(power: pd.DataFrame, path: Path, title: str = "Board power over time",
                    windows: list[tuple[str, float | None, float | None]] | None = None) -> Plot:
    """One line per device from a power series (columns t_s, device, power_w).

    Time is shown from the first sample; `windows` (label, t0_s, t1_s) on the same clock as
    t_s are shaded, e.g. the measurement window of each load point.
    """
    fig, ax = _figure(title, "time since first sample (s)", "power (W)")
    power = power.dropna(subset=["power_w"])
    t0 = float(power["t_s"].min()) if len(power) else 0.0
    for i, (label, w0, w1) in enumerate(windows or []):
        if w0 is not None and w1 is not None and len(power) and w1 >= t0:
            ax.axvspan(w0 - t0, w1 - t0, color="grey", alpha=0.12 if i % 2 else 0.22, lw=0)
            ax.text(w0 - t0, 1.0, _mpl(label), transform=ax.get_xaxis_transform(), fontsize=6, va="bottom")
    labels = []
    for device, rows in sorted(power.groupby("device"), key=lambda g: str(g[0])):
        rows = rows.sort_values("t_s")
        label = f"device {device}"
        ax.plot(rows["t_s"].astype(float) - t0, rows["power_w"].astype(float), label=_mpl(label), linewidth=1)
        labels.append(label)
    return _save(fig, ax, path, labels)


def server_metrics_over_time(frame: pd.DataFrame, path: Path, title: str = "Server metrics over time",
                             windows: list[tuple[str, float | None, float | None]] | None = None) -> Plot:
    """Running and waiting requests (left axis) and KV-cache usage in % (right axis) from
    server_metrics.parquet rows (config_id, t_s, metric, value); windows shaded as in power_over_time."""
    fig, ax = _figure(title, "time since first sample (s)", "requests")
    frame = frame[frame["metric"].isin(["running_requests", "waiting_requests", "kv_cache_usage"])]
    t0 = float(frame["t_s"].min()) if len(frame) else 0.0
    for i, (label, w0, w1) in enumerate(windows or []):
        if w0 is not None and w1 is not None and len(frame) and w1 >= t0:
            ax.axvspan(w0 - t0, w1 - t0, color="grey", alpha=0.12 if i % 2 else 0.22, lw=0)
            ax.text(w0 - t0, 1.0, _mpl(label), transform=ax.get_xaxis_transform(), fontsize=6, va="bottom")
    kv_ax = ax.twinx()
    kv_ax.set_ylabel("KV-cache usage (%)")
    kv_ax.set_ylim(0, 100)
    several = frame["config_id"].nunique() > 1
    labels, handles = [], []
    for (cid, metric), rows in sorted(frame.groupby(["config_id", "metric"]), key=lambda g: (str(g[0][0]), g[0][1])):
        rows = rows.sort_values("t_s")
        kv = metric == "kv_cache_usage"
        label = metric.replace("_", " ") + (" (%)" if kv else "") + (f" ({cid})" if several else "")
        (line,) = (kv_ax if kv else ax).step(rows["t_s"].astype(float) - t0,
                                             rows["value"].astype(float) * (100.0 if kv else 1.0),
                                             where="post", label=label, linewidth=1, linestyle=":" if kv else "-")
        labels.append(label)
        handles.append(line)
    return _save(fig, ax, path, labels, handles)
