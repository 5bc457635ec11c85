"""Progress bars and the end-of-run table (presentation only)."""

from __future__ import annotations

import sys

from tqdm import tqdm


class Progress:
    """One bar for the run (points), one for the point (requests), both on stderr."""

    def __init__(self, n_points: int | None = None, disable: bool | None = None):
        self.disable = (not sys.stderr.isatty()) if disable is None else disable
        self.run_bar = tqdm(total=n_points, desc="points", unit="pt", position=0, disable=self.disable,
                            dynamic_ncols=True) if n_points else None
        self.point_bar = None
        self._stall_shown = False

    def on_event(self, kind: str, info: dict) -> None:
        if kind == "engine_start":
            tqdm.write(f"starting engine for {info['model']} ({info['config_id']}) ...", file=sys.stderr)
        elif kind == "point_start":
            self._close_point()
            self.point_bar = tqdm(total=info["n"], desc=info["point_id"], unit="req", leave=False,
                                  position=1, disable=self.disable, dynamic_ncols=True)
        elif kind == "request_done" and self.point_bar is not None:
            self.point_bar.n = info["done"]
            self.point_bar.refresh()
        elif kind == "requests_stalled":
            self._stalled(info["n"])
        elif kind == "point_done":
            self._close_point()
            pr = info["point"]
            line = f"{pr.point_id}: {pr.status}"
            if pr.status == "ok":
                m = pr.metrics or {}
                out_tok_s = m.get("output_tok_s")
                line += (f", {'no' if out_tok_s is None else f'{out_tok_s:.1f}'} out tok/s, "
                         f"ttft p50 {1000 * (m.get('ttft_s_p50') or 0):.1f} ms")
                if not pr.valid:
                    line += f", INVALID: {'; '.join(pr.invalid_reasons)}"
            elif pr.error:
                line += f" ({pr.error[:200]})"
            tqdm.write(line, file=sys.stderr)
            if self.run_bar is not None:
                self.run_bar.update(1)

    def _stalled(self, n: int) -> None:
        """In-flight requests with no token for a while: on the bar, or one line when there is no bar."""
        if self.point_bar is not None and not self.disable:
            self.point_bar.set_postfix_str(f"{n} stalled" if n else "", refresh=True)
        elif n and not self._stall_shown:
            tqdm.write(f"{n} request(s) stalled: no token from the server for a while", file=sys.stderr)
        self._stall_shown = bool(n)

    def _close_point(self) -> None:
        if self.point_bar is not None:
            self.point_bar.close()
            self.point_bar = None

    def close(self) -> None:
        self._close_point()
        if self.run_bar is not None:
            self.run_bar.close()


def _ms(v):
    return "" if v is None else f"{1000 * v:.1f}"


def _num(v, fmt="{:.1f}"):
    return "" if v is None else fmt.format(v)


def summary_table(result) -> str:
    """One row per load point: load, throughput, latency, energy, cost, validity."""
    from bench.cli.textable import format_table

    rows = []
    scenario = None
    for p in result.points:
        m, e = p.metrics or {}, p.energy or {}
        spec = p.load.model_dump(mode="json")
        load = spec.get("concurrency") or spec.get("rate_rps") or spec.get("batch")
        name, cost = next(((n, c) for n, c in p.cost.items() if c.get("usd_per_mtok_output") is not None),
                          (None, {}))
        if name and not scenario:
            scenario = f"$/Mtok under scenario '{name}' at utilization {cost.get('utilization') or 1.0:g}"
        rows.append({
            "point": p.point_id,
            "load": f"{p.load.kind[:4]} {load}",
            "status": p.status if p.status != "ok" else ("ok" if p.valid else "INVALID"),
            "out tok/s": _num(m.get("output_tok_s")),
            "tok/s/gpu": _num(m.get("tok_s_per_gpu")),
            "tok/s/user": _num(m.get("interactivity_tok_s_user")),
            "ttft p50 ms": _ms(m.get("ttft_s_p50")),
            "ttft p99 ms": _ms(m.get("ttft_s_p99")),
            "tpot p50 ms": _ms(m.get("tpot_s_p50")),
            "errors": "" if p.status != "ok" else str(p.n_failed),
            "W": _num(e.get("avg_power_w")),
            "J/tok": _num(e.get("j_per_token"), "{:.3g}"),
            "energy": ("" if not e else (e.get("energy_method") or "") + ("" if e.get("measured") else "*")),
            "$/Mtok out": _num(cost.get("usd_per_mtok_output"), "{:.3g}"),
        })
    table = format_table(rows, list(rows[0]) if rows else ["point"])
    notes = [f"{p.point_id}: {p.error or '; '.join(p.invalid_reasons)}" for p in result.points
             if p.status != "ok" or not p.valid]
    footer = ["* energy estimated from nominal catalog power (not measured)"] if any(
        p.energy is not None and not p.energy.measured for p in result.points) else []
    footer += [scenario] if scenario else []
    return "\n".join([table, *footer, *notes])
