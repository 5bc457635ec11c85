"""Progress bars and the end-of-run table (presentation only)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Self

from tqdm import tqdm

from bench.errors import one_line
from bench.plan.points import ConcurrencyLoad, LoadSpec, RateLoad, TraceLoad
from bench.run.events import (
    EngineStarting,
    Notice,
    PointDone,
    PointStarting,
    RequestsDone,
    RequestsStalled,
    RunEvent,
    RunPrepared,
)

if TYPE_CHECKING:
    from bench.measure.groups import Energy, Metrics
    from bench.plan.request import RunRequest
    from bench.results import PointResult, RunResult
    from bench.run.session import RunOutcome

NA = "n/a"  # a figure that was not measured: never printed as a number
RENDER_INTERVAL_S = 0.2  # the live lines are redrawn at most this often (a fast GPU finishes many requests/s)
NOT_MEASURED_NOTE = ("[x] latency or tok/s/user of an invalid point: not a measurement of the server "
                     "(reasons below)")
NO_TPOT_NOTE = "n/a: no inter-token time was measured (TPOT 0 or missing), so no TPOT and no tok/s/user"


def duration_text(seconds: float) -> str:
    """A duration for a person: 45s, 3m12s, 1h05m."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def point_postfix(progress: RequestsDone | None, stalled: int = 0) -> str:
    """The live part of a point's bar: in-flight requests, output tok/s so far, stalled requests.

    `progress` is the point's latest `RequestsDone` (None before one); its in-flight count and
    output tokens over `elapsed_s` (s since the point's first send, warm-up included) are shown
    when the load gives them.
    """
    parts = []
    if progress is not None and progress.in_flight is not None:
        parts.append(f"{progress.in_flight} in flight")
    if progress is not None and progress.output_tokens is not None and progress.elapsed_s:
        parts.append(f"{progress.output_tokens / progress.elapsed_s:.1f} out tok/s so far")
    if stalled:
        parts.append(f"{stalled} stalled")
    return ", ".join(parts)


def sweep_eta_s(elapsed_s: float, points_done: float, n_points: int | None) -> float | None:
    """Seconds left at the pace so far: elapsed / points done x points left.

    `points_done` may be fractional (the running point counts by its finished requests);
    `elapsed_s` runs from the first point's start, so later engine starts are in the pace
    but the first one is not. None until there is a pace to extrapolate.
    """
    if not n_points or points_done <= 0 or elapsed_s <= 0:
        return None
    return elapsed_s / points_done * max(n_points - points_done, 0.0)


class Progress:
    """One bar for the run (points, with an ETA), one for the point (requests, in flight,
    tok/s so far), both on `file` (stderr); disabled when it is not a terminal. `on_event`
    takes a run's events (bench.run.events). `header(prepared)`: the text written once the run
    is prepared (default: the device line)."""

    def __init__(self, n_points: int | None = None, disable: bool | None = None, file=None,
                 clock: Callable[[], float] = time.monotonic,
                 header: Callable[[RunPrepared], str] | None = None):
        self.file = file if file is not None else sys.stderr
        self.disable = (not self.file.isatty()) if disable is None else disable
        self.clock = clock
        self.header = header or (lambda prepared: prepared.note)
        self.n_points: int | None = None
        self.run_bar = None
        self._open_run_bar(n_points)
        self.point_bar = None
        self._stall_shown = False
        self._stalled = 0
        self._last: RequestsDone | None = None
        self._t_first_s: float | None = None  # first point_start
        self._points_done = 0
        self._point_fraction = 0.0  # of the running point, by finished requests
        self._last_render_s = -float("inf")

    def _open_run_bar(self, n_points: int | None) -> None:
        self.n_points = n_points
        if self.run_bar is not None:
            self.run_bar.close()
        self.run_bar = tqdm(total=n_points, desc="points", unit="pt", position=0, disable=self.disable,
                            dynamic_ncols=True, file=self.file,
                            bar_format="{desc}: {n_fmt}/{total_fmt} |{bar}| {elapsed} elapsed{postfix}",
                            ) if n_points else None

    def on_event(self, event: RunEvent) -> None:
        if isinstance(event, RunPrepared):
            tqdm.write(self.header(event), file=self.file)
            self._open_run_bar(event.n_points)
        elif isinstance(event, EngineStarting):
            tqdm.write(f"starting engine for {event.model} ({event.config_id}) ...", file=self.file)
        elif isinstance(event, PointStarting):
            self._close_point()
            if self._t_first_s is None:
                self._t_first_s = self.clock()
            self._stalled, self._last, self._point_fraction = 0, None, 0.0
            self.point_bar = tqdm(total=event.n_requests, desc=event.point_id, unit="req", leave=False,
                                  position=1, disable=self.disable, dynamic_ncols=True, file=self.file)
            self._render(force=True)
        elif isinstance(event, RequestsDone):
            self._request_done(event)
        elif isinstance(event, RequestsStalled):
            self._on_stalled(event.n)
        elif isinstance(event, Notice):  # one line the runner has to say (a stale engine stopped on resume)
            tqdm.write(event.text, file=self.file)
        elif isinstance(event, PointDone):
            self._close_point()
            self._points_done += 1
            self._point_fraction = 0.0
            tqdm.write(point_line(event.point), file=self.file)
            if self.run_bar is not None:
                self.run_bar.update(1)
            self._render(force=True)

    def _request_done(self, event: RequestsDone) -> None:
        self._last = event
        total = event.total or (self.point_bar.total if self.point_bar is not None else None)
        if total:
            self._point_fraction = min(event.done / total, 1.0)
        if self.point_bar is not None:
            if event.total and self.point_bar.total != event.total:
                self.point_bar.total = event.total
            self.point_bar.n = event.done
        self._render(force=bool(total and event.done >= total))

    def _on_stalled(self, n: int) -> None:
        """In-flight requests with no token for a while: on the bar, or one line when there is no bar."""
        self._stalled = n
        if self.point_bar is not None and not self.disable:
            self._render(force=True)
        elif n and not self._stall_shown:
            tqdm.write(f"{n} request(s) stalled: no token from the server for a while", file=self.file)
        self._stall_shown = bool(n)

    def eta_text(self) -> str:
        """The run bar's live postfix: time left at the pace so far, or '' before there is one."""
        if self._t_first_s is None:
            return ""
        eta_s = sweep_eta_s(self.clock() - self._t_first_s, self._points_done + self._point_fraction,
                            self.n_points)
        return "" if eta_s is None else f"~{duration_text(eta_s)} left at the pace so far"

    def _render(self, force: bool = False) -> None:
        if self.disable:
            return
        now = self.clock()
        if not force and now - self._last_render_s < RENDER_INTERVAL_S:
            return
        self._last_render_s = now
        if self.point_bar is not None:
            self.point_bar.set_postfix_str(point_postfix(self._last, self._stalled), refresh=False)
            self.point_bar.refresh()
        if self.run_bar is not None:
            self.run_bar.set_postfix_str(self.eta_text(), refresh=False)
            self.run_bar.refresh()

    def _close_point(self) -> None:
        if self.point_bar is not None:
            self.point_bar.close()
            self.point_bar = None

    def close(self) -> None:
        self._close_point()
        if self.run_bar is not None:
            self.run_bar.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def run_with_progress(request: RunRequest, header: Callable[[RunPrepared], str] | None = None) -> RunOutcome:
    """`request` run by the library's one entry point, its progress drawn on stderr;
    `header(prepared)` is written once the run is prepared (default: the device line)."""
    from bench.run.session import run_request

    with Progress(header=header) as progress:
        return run_request(request, on_event=progress.on_event)


# ---------------------------------------------------------------- figures as text

def _ms(v) -> str:
    """Seconds as milliseconds; under 0.1 ms with two significant digits, so it never reads as 0."""
    if v is None:
        return ""
    ms = 1000 * v
    return f"{ms:.2g}" if 0 < ms < 0.1 else f"{ms:.1f}"


def _num(v, fmt="{:.1f}"):
    return "" if v is None else fmt.format(v)


def _sig(v) -> str:
    """4 significant digits, never scientific notation (bench.analysis.cellformat.fmt)."""
    from bench.analysis.cellformat import fmt

    return "" if v is None else fmt(float(v))


def _marked(cell: str, valid: bool) -> str:
    """A figure of an invalid point in brackets; n/a and blanks as they are."""
    return cell if valid or cell in ("", NA) else f"[{cell}]"


def latency_cells(metrics: Metrics | None, valid: bool) -> dict[str, str]:
    """The latency and interactivity cells of an ok point.

    A TPOT of 0 or None means no inter-token time was measured (every request gave one
    token, or they all arrived in one read): TPOT and tok/s/user are then n/a, never a number.
    An invalid point's figures are bracketed: they are not measurements of the server.
    """
    if metrics is None:
        return dict.fromkeys(LATENCY_COLUMNS, NA)
    tpot_s = metrics.tpot_s_p50
    cells = {
        "tok/s/user": (_num(metrics.interactivity_tok_s_user) or NA) if tpot_s else NA,
        "ttft p50 ms": _ms(metrics.ttft_s_p50) or NA,
        "ttft p99 ms": _ms(metrics.ttft_s_p99) or NA,
        "tpot p50 ms": _ms(tpot_s) if tpot_s else NA,
    }
    return {k: _marked(v, valid) for k, v in cells.items()}


LATENCY_COLUMNS = ("tok/s/user", "ttft p50 ms", "ttft p99 ms", "tpot p50 ms")


def point_line(pr: PointResult) -> str:
    """The one line printed when a point finishes."""
    line = f"{pr.point_id}: {pr.status}"
    if pr.status == "ok":
        m = pr.metrics
        out_tok_s = m.output_tok_s if m is not None else None
        ttft = _ms(m.ttft_s_p50 if m is not None else None)
        ttft = NA if not ttft else (f"{ttft} ms" if pr.valid else f"[{ttft}] ms (not a server measurement)")
        line += f", {'no' if out_tok_s is None else f'{out_tok_s:.1f}'} out tok/s, ttft p50 {ttft}"
        if not pr.valid:
            line += f", INVALID: {'; '.join(pr.invalid_reasons)}"
    elif pr.error:
        line += f" ({one_line(pr.error)})"
    return line


def _load_cell(load: LoadSpec) -> str:
    """The load column: its kind, shortened, and its level (a trace: its in-flight cap, or replay)."""
    if isinstance(load, TraceLoad):  # a trace's own schedule: only its cap, if any, is a level
        return f"trace {f'mc{load.max_concurrency}' if load.max_concurrency else 'replay'}"
    level: float
    if isinstance(load, ConcurrencyLoad):
        level = load.concurrency
    elif isinstance(load, RateLoad):
        level = load.rate_rps
    else:
        level = load.batch
    return f"{load.kind[:4]} {level}"


def _energy_cell(energy: Energy | None) -> str:
    """How the energy was measured; `*` marks an estimate (nominal power x time)."""
    if energy is None:
        return ""
    return (energy.energy_method or "") + ("" if energy.measured else "*")


def summary_table(result: RunResult) -> str:
    """One row per load point: load, throughput, latency, energy, cost, validity."""
    from bench.cli.textable import format_table

    rows = []
    scenario = None
    blank_latency = dict.fromkeys(LATENCY_COLUMNS, "")
    for p in result.points:
        m, e = p.metrics, p.energy
        name, cost = next(((n, c) for n, c in p.cost.items() if c.usd_per_mtok_output is not None), (None, None))
        if cost is not None and not scenario:
            scenario = f"$/Mtok under scenario '{name}' at utilization {cost.utilization or 1.0:g}"
        latency = latency_cells(m, p.valid) if p.status == "ok" else blank_latency
        rows.append({
            "point": p.point_id,
            "load": _load_cell(p.load),
            "status": p.status if p.status != "ok" else ("ok" if p.valid else "INVALID"),
            "out tok/s": _num(m.output_tok_s if m is not None else None),
            "tok/s/GPU (in+out)": _num(m.tok_s_per_gpu if m is not None else None),
            **latency,
            "errors": "" if p.status != "ok" else str(p.n_failed),
            "W": _num(e.avg_power_w if e is not None else None),
            "J/output tok": _sig(e.j_per_output_token if e is not None else None),  # $/Mtok's basis
            "energy": _energy_cell(e),
            "$/Mtok out": _sig(cost.usd_per_mtok_output if cost is not None else None),
        })
    table = format_table(rows, list(rows[0]) if rows else ["point"])
    notes = [f"{p.point_id}: {p.error or '; '.join(p.invalid_reasons)}" for p in result.points
             if p.status != "ok" or not p.valid]
    footer = ["* energy estimated from nominal catalog power (not measured)"] if any(
        p.energy is not None and not p.energy.measured for p in result.points) else []
    cells = [(r["tpot p50 ms"], r["status"]) for r in rows]
    if any(status == "INVALID" for _, status in cells):
        footer.append(NOT_MEASURED_NOTE)
    if any(tpot == NA for tpot, _ in cells):
        footer.append(NO_TPOT_NOTE)
    footer += [scenario] if scenario else []
    accuracy = [f"accuracy {cid} ({v.kind}): {v.status}: {v.reason}"  # accuracy gate, one line each
                for cid, verdicts in result.accuracy.items() for v in verdicts]
    from bench.analysis.timebreak import time_lines  # where the time went (issue 22)

    return "\n".join([table, *footer, *notes, *accuracy, *time_lines(result.timing)])
