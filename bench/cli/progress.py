"""Progress bars and the end-of-run table (presentation only)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

from tqdm import tqdm

from bench.measure.groups import CostFigures, Energy, Metrics

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


def point_postfix(info: dict, stalled: int = 0) -> str:
    """The live part of a point's bar: in-flight requests, output tok/s so far, stalled requests.

    `info` is a `request_done` event; its keys `in_flight`, `output_tokens` and `elapsed_s`
    (seconds since the point's first send, warm-up included) are optional and shown when present.
    """
    parts = []
    if info.get("in_flight") is not None:
        parts.append(f"{info['in_flight']} in flight")
    tokens, elapsed_s = info.get("output_tokens"), info.get("elapsed_s")
    if tokens is not None and elapsed_s:
        parts.append(f"{tokens / elapsed_s:.1f} out tok/s so far")
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
    tok/s so far), both on `file` (stderr); disabled when it is not a terminal."""

    def __init__(self, n_points: int | None = None, disable: bool | None = None, file=None,
                 clock: Callable[[], float] = time.monotonic):
        self.file = file if file is not None else sys.stderr
        self.disable = (not self.file.isatty()) if disable is None else disable
        self.clock = clock
        self.n_points = n_points
        self.run_bar = tqdm(total=n_points, desc="points", unit="pt", position=0, disable=self.disable,
                            dynamic_ncols=True, file=self.file,
                            bar_format="{desc}: {n_fmt}/{total_fmt} |{bar}| {elapsed} elapsed{postfix}",
                            ) if n_points else None
        self.point_bar = None
        self._stall_shown = False
        self._stalled = 0
        self._last_info: dict = {}
        self._t_first_s: float | None = None  # first point_start
        self._points_done = 0
        self._point_fraction = 0.0  # of the running point, by finished requests
        self._last_render_s = -float("inf")

    def on_event(self, kind: str, info: dict) -> None:
        if kind == "engine_start":
            tqdm.write(f"starting engine for {info['model']} ({info['config_id']}) ...", file=self.file)
        elif kind == "point_start":
            self._close_point()
            if self._t_first_s is None:
                self._t_first_s = self.clock()
            self._stalled, self._last_info, self._point_fraction = 0, {}, 0.0
            self.point_bar = tqdm(total=info["n"], desc=info["point_id"], unit="req", leave=False,
                                  position=1, disable=self.disable, dynamic_ncols=True, file=self.file)
            self._render(force=True)
        elif kind == "request_done":
            self._request_done(info)
        elif kind == "requests_stalled":
            self._on_stalled(info["n"])
        elif kind == "notice":  # one line the runner has to say (a stale engine stopped on resume)
            tqdm.write(info["text"], file=self.file)
        elif kind == "point_done":
            self._close_point()
            self._points_done += 1
            self._point_fraction = 0.0
            tqdm.write(point_line(info["point"]), file=self.file)
            if self.run_bar is not None:
                self.run_bar.update(1)
            self._render(force=True)

    def _request_done(self, info: dict) -> None:
        self._last_info = info
        total = info.get("total") or (self.point_bar.total if self.point_bar is not None else None)
        if total:
            self._point_fraction = min(info["done"] / total, 1.0)
        if self.point_bar is not None:
            if info.get("total") and self.point_bar.total != info["total"]:
                self.point_bar.total = info["total"]
            self.point_bar.n = info["done"]
        self._render(force=bool(total) and info["done"] >= total)

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
            self.point_bar.set_postfix_str(point_postfix(self._last_info, self._stalled), refresh=False)
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


# ---------------------------------------------------------------- figures as text

def _ms(v) -> str:
    """Seconds as milliseconds; under 0.1 ms with two significant digits, so it never reads as 0."""
    if v is None:
        return ""
    ms = 1000 * v
    return f"{ms:.2g}" if 0 < ms < 0.1 else f"{ms:.1f}"


def _num(v, fmt="{:.1f}"):
    return "" if v is None else fmt.format(v)


def _marked(cell: str, valid: bool) -> str:
    """A figure of an invalid point in brackets; n/a and blanks as they are."""
    return cell if valid or cell in ("", NA) else f"[{cell}]"


def latency_cells(metrics, valid: bool) -> dict[str, str]:
    """The latency and interactivity cells of an ok point.

    A TPOT of 0 or None means no inter-token time was measured (every request gave one
    token, or they all arrived in one read): TPOT and tok/s/user are then n/a, never a number.
    An invalid point's figures are bracketed: they are not measurements of the server.
    """
    m = metrics if metrics is not None else Metrics()
    tpot_s = m.tpot_s_p50
    cells = {
        "tok/s/user": (_num(m.interactivity_tok_s_user) or NA) if tpot_s else NA,
        "ttft p50 ms": _ms(m.ttft_s_p50) or NA,
        "ttft p99 ms": _ms(m.ttft_s_p99) or NA,
        "tpot p50 ms": _ms(tpot_s) if tpot_s else NA,
    }
    return {k: _marked(v, valid) for k, v in cells.items()}


def point_line(pr) -> str:
    """The one line printed when a point finishes."""
    line = f"{pr.point_id}: {pr.status}"
    if pr.status == "ok":
        m = pr.metrics if pr.metrics is not None else Metrics()
        out_tok_s = m.output_tok_s
        ttft = _ms(m.ttft_s_p50)
        ttft = NA if not ttft else (f"{ttft} ms" if pr.valid else f"[{ttft}] ms (not a server measurement)")
        line += f", {'no' if out_tok_s is None else f'{out_tok_s:.1f}'} out tok/s, ttft p50 {ttft}"
        if not pr.valid:
            line += f", INVALID: {'; '.join(pr.invalid_reasons)}"
    elif pr.error:
        line += f" ({pr.error[:200]})"
    return line


def summary_table(result) -> str:
    """One row per load point: load, throughput, latency, energy, cost, validity."""
    from bench.cli.textable import format_table

    rows = []
    scenario = None
    blank_latency = dict.fromkeys(latency_cells(None, True), "")
    for p in result.points:
        m = p.metrics if p.metrics is not None else Metrics()
        e = p.energy if p.energy is not None else Energy()
        spec = p.load.model_dump(mode="json")
        load = spec.get("concurrency") or spec.get("rate_rps") or spec.get("batch")
        if p.load.kind == "trace":  # a trace's own schedule: only its cap, if any, is a level
            load = f"mc{spec['max_concurrency']}" if spec.get("max_concurrency") else "replay"
        name, cost = next(((n, c) for n, c in p.cost.items() if c.usd_per_mtok_output is not None),
                          (None, CostFigures()))
        if name and not scenario:
            scenario = f"$/Mtok under scenario '{name}' at utilization {cost.utilization or 1.0:g}"
        latency = latency_cells(m, p.valid) if p.status == "ok" else blank_latency
        rows.append({
            "point": p.point_id,
            "load": f"{p.load.kind[:5] if p.load.kind == 'trace' else p.load.kind[:4]} {load}",
            "status": p.status if p.status != "ok" else ("ok" if p.valid else "INVALID"),
            "out tok/s": _num(m.output_tok_s),
            "tok/s/gpu": _num(m.tok_s_per_gpu),
            **latency,
            "errors": "" if p.status != "ok" else str(p.n_failed),
            "W": _num(e.avg_power_w),
            "J/tok": _num(e.j_per_token, "{:.3g}"),
            "energy": ("" if p.energy is None else (e.energy_method or "") + ("" if e.measured else "*")),
            "$/Mtok out": _num(cost.usd_per_mtok_output, "{:.3g}"),
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
    return "\n".join([table, *footer, *notes])
