"""The records of every client loop of one point -> one PointRun (pure; no I/O).

In-flight counts are computed from the records themselves: a request is in flight from
its `t_send` to its `t_done` (the client let go of it: last byte read, or failure). All
stamps are perf_counter() seconds, CLOCK_MONOTONIC on Linux, the same clock in every
worker process, so records from several workers need no offsets. The window rule is
docs/measurement.md section 2 (see bench.load.driver).
"""

from __future__ import annotations

from bench.load.records import RequestRecord
from bench.load.types import ClientSummary, LoopStats, PointRun
from bench.plan.points import ConcurrencyLoad, LoadSpec, RateLoad


def in_flight_reach(measured: list[RequestRecord], target: int) -> tuple[int, RequestRecord | None]:
    """Peak in-flight count over `measured`, and the request whose send first made it reach `target`."""
    events = []
    for r in measured:
        events.append((r.t_send, 1, r))
        events.append((r.t_done if r.t_done is not None else (r.t_last or r.t_send), -1, r))
    events.sort(key=lambda e: (e[0], e[1]))  # at a tie, an end before a start
    n = peak = 0
    reach = None
    for _, step, r in events:
        n += step
        peak = max(peak, n)
        if step > 0 and reach is None and target and n >= target:
            reach = r
    return peak, reach


def merge_point(records: list[RequestRecord], spec: LoadSpec, client: ClientSummary | None, loops: list[LoopStats]) -> PointRun:
    """One PointRun from the point's records (every loop's, in request order) and each loop's self-watch."""
    records = [r for r in records if r.t_send > 0]  # a request a stopped worker never sent carries nothing
    meas = [r for r in records if r.phase == "measured"]
    sends = [r.t_send for r in meas]
    span_t0 = min(sends) if sends else 0.0
    last_send = max(sends) if sends else 0.0
    span_t1 = max([r.t_last or r.t_send for r in meas] + [last_send])
    if isinstance(spec, ConcurrencyLoad):
        target_c = min(spec.concurrency, len(meas))
        peak, reach = in_flight_reach(meas, target_c)
        reached = reach is not None
        t0 = reach.t_send if reach is not None else span_t0
        target_rate = None
    else:  # rate and trace loads
        peak, _ = in_flight_reach(meas, 0)
        reached, t0, target_c = True, span_t0, None
        target_rate = spec.rate_rps if isinstance(spec, RateLoad) else None
    window_s = last_send - t0
    n_sent_in_window = sum(1 for s in sends if s >= t0)
    achieved = (n_sent_in_window - 1) / window_s if window_s > 0 and n_sent_in_window > 1 else None
    return PointRun(records=records, window_t0_s=t0, window_t1_s=last_send, span_t0_s=span_t0,
                    span_t1_s=span_t1, max_in_flight=peak, target_concurrency=target_c,
                    target_reached=reached, target_rate_rps=target_rate, achieved_rate_rps=achieved,
                    client=client, load=spec.model_dump(mode="json"), loops=list(loops))
