"""Request records -> one load point's summary. Pure functions: no I/O, no printing.

Definitions follow docs/measurement.md sections 1-2 and docs/metrics.md:
- latency statistics use successful measured requests only; warm-up is never counted;
- window throughput counts tokens where they were produced inside [t0, t1]: an output
  token at the arrival of the chunk that carried it, a request's input tokens at its
  `t_first` (prefill is done when the first token arrives). Only successful requests
  count: tokens that a failed request did receive are reported apart, labelled
  (`window_failed_output_tokens`), and never enter a rate; with no successful request
  every throughput is None (a point where everything failed served nothing);
- `request_s` counts successful requests whose last token arrived inside the window;
- a zero-length or missing window falls back to the whole span (`window_fallback: true`).
Times are seconds, rates per second.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from bench.load.records import RequestRecord
from bench.measure.groups import Metrics

PERCENTILES = (50, 90, 95, 99)


def stats(values: Sequence[float | None], prefix: str) -> dict:
    """`{prefix}_mean/std/p50/p90/p95/p99`; None for each when there are no values.

    A None value (e.g. the TTFT of a successful request that got no token) counts as NaN."""
    keys = [f"{prefix}_mean", f"{prefix}_std"] + [f"{prefix}_p{p}" for p in PERCENTILES]
    if len(values) == 0:
        return dict.fromkeys(keys)
    import numpy as np  # here, not at the top: reading a result's types (results.schema) needs no numpy

    arr = np.asarray(values, dtype=float)
    out = [arr.mean(), arr.std()] + list(np.percentile(arr, PERCENTILES))
    return {k: float(v) for k, v in zip(keys, out)}


def span_of(records: Iterable[RequestRecord]) -> tuple[float, float] | None:
    """(first send, last completion) of the records, or None when there are none."""
    recs = list(records)
    if not recs:
        return None
    return min(r.t_send for r in recs), max(r.t_last if r.t_last is not None else r.t_send for r in recs)


def _tokens_in(records: Sequence[RequestRecord], t0: float, t1: float) -> tuple[int, int]:
    """(output tokens by chunk arrival, input tokens at t_first) inside [t0, t1]."""
    import numpy as np

    out = inp = 0
    for r in records:
        if r.chunk_t:
            t = np.asarray(r.chunk_t)
            out += int(np.asarray(r.chunk_tokens)[(t >= t0) & (t <= t1)].sum())
        if r.t_first is not None and t0 <= r.t_first <= t1:
            inp += r.n_in if r.n_in is not None else r.n_in_expected
    return out, inp


def _meets(r: RequestRecord, slo: dict) -> bool:
    if not r.ok:
        return False
    for key, value in (("ttft_s", r.ttft_s), ("tpot_s", r.tpot_s), ("e2e_s", r.e2e_s)):
        limit = slo.get(key)
        if limit is not None and value is not None and value > limit:
            return False
    return True


def summarize(records: Sequence[RequestRecord], window: tuple[float, float] | None, n_gpus: int,
              slo: dict | None = None) -> Metrics:
    """The metrics group of one load point (fields carry units; see docs/metrics.md).

    `window` = (t0, t1) in perf_counter seconds; `n_gpus` = TP x PP x DP actually used;
    `slo` = {"ttft_s": .., "tpot_s": .., "e2e_s": ..} (any subset) adds goodput keys.
    """
    if n_gpus < 1:
        raise ValueError(f"n_gpus must be >= 1, got {n_gpus}")
    meas = [r for r in records if r.phase == "measured"]
    ok = [r for r in meas if r.ok]
    n = len(meas)
    out: dict = {"n_measured": n, "n_failed": n - len(ok), "error_rate": (n - len(ok)) / n if n else None}
    tpots = [r.tpot_s for r in ok if r.tpot_s is not None]
    out |= stats([r.ttft_s for r in ok], "ttft_s")
    out |= stats(tpots, "tpot_s")
    out |= stats([x for r in ok for x in r.itl_s], "itl_s")
    out |= stats([r.e2e_s for r in ok], "e2e_s")
    if any(r.t_sched is not None for r in meas):  # rate and trace loads: also from the scheduled send
        out |= stats([r.ttft_sched_s for r in ok if r.t_sched is not None], "ttft_sched_s")
        out |= stats([r.e2e_sched_s for r in ok if r.t_sched is not None], "e2e_sched_s")
        out |= stats([r.schedule_lag_s for r in meas if r.t_sched is not None and r.t_send > 0], "schedule_lag_s")
    median_tpot = out["tpot_s_p50"]
    out["interactivity_tok_s_user"] = 1.0 / median_tpot if median_tpot else None

    span = span_of(meas)
    span_s = span[1] - span[0] if span else 0.0
    fallback = window is None or not (window[1] - window[0] > 0)
    if window is None or fallback:
        t0, t1 = span if span else (0.0, 0.0)
    else:
        t0, t1 = window
    window_s = t1 - t0
    w_out, w_in = _tokens_in(ok, t0, t1)
    failed_out, _ = _tokens_in([r for r in meas if not r.ok], t0, t1)
    n_done = sum(1 for r in ok if r.t_last is not None and t0 <= r.t_last <= t1)

    def rate(x: float, seconds: float) -> float | None:
        return x / seconds if seconds > 0 and ok else None

    out |= {
        "window_s": window_s, "window_fallback": fallback, "window_requests": n_done,
        "window_output_tokens": w_out, "window_input_tokens": w_in, "window_failed_output_tokens": failed_out,
        "output_tok_s": rate(w_out, window_s), "input_tok_s": rate(w_in, window_s),
        "total_tok_s": rate(w_out + w_in, window_s), "request_s": rate(n_done, window_s),
    }
    total = out["total_tok_s"]
    out["tok_s_per_gpu"] = total / n_gpus if total is not None else None
    out["output_tok_s_per_gpu"] = out["output_tok_s"] / n_gpus if out["output_tok_s"] is not None else None

    def n_in(rs: Sequence[RequestRecord]) -> int:
        return sum(r.n_in if r.n_in is not None else r.n_in_expected for r in rs if r.t_first is not None)

    # The totals are what the records hold (failed requests' received tokens included: the
    # per-request Parquet sums to them); the span rates count successful requests only.
    ok_out, ok_in = sum(r.n_out for r in ok), n_in(ok)
    out |= {
        "output_tokens_total": sum(r.n_out for r in meas), "input_tokens_total": n_in(meas), "span_s": span_s,
        "span_output_tok_s": rate(ok_out, span_s), "span_input_tok_s": rate(ok_in, span_s),
        "span_total_tok_s": rate(ok_out + ok_in, span_s), "span_request_s": rate(len(ok), span_s),
    }
    if slo:
        good = [r for r in meas if _meets(r, slo)]
        good_done = sum(1 for r in good if r.t_last is not None and t0 <= r.t_last <= t1)
        good_out, _ = _tokens_in(good, t0, t1)
        out |= {
            "goodput_request_s": rate(good_done, window_s),
            "goodput_output_tok_s": rate(good_out, window_s),
            "slo_attainment": len(good) / n if n else None,
        }
        out |= {f"slo_{k}": v for k, v in slo.items()}
    if any(r.n_reasoning for r in meas):
        out |= reasoning_metrics(meas)
    if any(r.session is not None for r in meas):
        out |= session_metrics(meas)
    return Metrics.from_flat(out)


def _p(values: Sequence[float | None], q: float) -> float | None:
    import numpy as np

    return float(np.percentile(np.asarray(values, dtype=float), q)) if len(values) else None


def reasoning_metrics(records: Sequence[RequestRecord]) -> dict:
    """Time to the first answer token and the reasoning share of the measured `records`
    (docs/metrics.md, "Reasoning"): ttfat over successful requests that got an answer token,
    token totals over all of them (failed included, as `output_tokens_total`)."""
    meas = [r for r in records if r.phase == "measured"]
    ttfat = [r.ttfat_s for r in meas if r.ok and r.ttfat_s is not None]
    n_reasoning, n_out = sum(r.n_reasoning for r in meas), sum(r.n_out for r in meas)
    return {"ttfat_s_p50": _p(ttfat, 50), "ttfat_s_p99": _p(ttfat, 99), "reasoning_tokens_total": n_reasoning,
            "reasoning_share": n_reasoning / n_out if n_out else None}


def session_metrics(records: Sequence[RequestRecord]) -> dict:
    """Per-turn and per-session figures of a sessions workload's measured `records` (docs/metrics.md,
    "Sessions"): by turn index, TTFT and prompt tokens (median, successful turns); per session,
    its duration (first send to the last turn's end, sessions whose every turn succeeded) and turns."""
    sessions: dict[int, list[RequestRecord]] = {}
    for r in records:
        if r.phase == "measured" and r.session is not None and r.t_send > 0:
            sessions.setdefault(r.session, []).append(r)
    by_turn: dict[int, list[RequestRecord]] = {}
    for turns in sessions.values():
        for r in turns:
            if r.ok and r.turn is not None:
                by_turn.setdefault(r.turn, []).append(r)
    n_turns = max(by_turn) + 1 if by_turn else 0
    ttft = [_p([r.ttft_s for r in by_turn.get(k, [])], 50) for k in range(n_turns)]
    n_in = [_p([r.n_in if r.n_in is not None else r.n_in_expected for r in by_turn.get(k, [])], 50)
            for k in range(n_turns)]
    durations = [max(r.t_done or r.t_last or r.t_send for r in turns) - min(r.t_send for r in turns)
                 for turns in sessions.values() if all(r.ok for r in turns)]
    return {"n_sessions": len(sessions),
            "turns_per_session_mean": sum(map(len, sessions.values())) / len(sessions) if sessions else None,
            "session_s_p50": _p(durations, 50), "session_s_p99": _p(durations, 99),
            "ttft_s_p50_by_turn": ttft, "input_tokens_p50_by_turn": n_in}
