"""bench.measure.metrics.summarize and bench.measure.validity.check_point on hand-built records."""

from __future__ import annotations

import numpy as np
import pytest

from bench.load.records import RequestRecord
from bench.measure.metrics import stats, summarize
from bench.measure.validity import Thresholds, check_point


def rec(i, t_send, chunk_t, chunk_tokens, phase="measured", n_in=10, error=None, n_out_expected=None):
    n_out = sum(chunk_tokens)
    return RequestRecord(
        request_id=i, phase=phase, n_in_expected=n_in, n_out_expected=n_out_expected or n_out, t_send=t_send,
        t_first=chunk_t[0] if chunk_t else None, t_last=chunk_t[-1] if chunk_t else None, n_in=n_in,
        n_out=n_out, chunk_t=list(chunk_t), chunk_tokens=list(chunk_tokens), error=error)


def test_request_level_definitions():
    r = rec(0, 1.0, [1.5, 1.7, 2.3], [1, 2, 3])
    assert r.ttft_s == 0.5 and r.e2e_s == pytest.approx(1.3)
    assert r.tpot_s == pytest.approx((2.3 - 1.5) / 5)
    assert r.itl_s == pytest.approx([0.1, 0.2])
    assert r.e2e_s - r.ttft_s == pytest.approx(sum(i * n for i, n in zip(r.itl_s, r.chunk_tokens[1:])))
    assert rec(1, 0.0, [0.2], [1]).tpot_s is None


def test_stats_match_numpy_and_empty_is_none():
    rng = np.random.default_rng(0)
    x = rng.lognormal(size=501)
    s = stats(x, "ttft_s")
    assert s["ttft_s_mean"] == pytest.approx(x.mean()) and s["ttft_s_std"] == pytest.approx(x.std())
    for p in (50, 90, 95, 99):
        assert s[f"ttft_s_p{p}"] == pytest.approx(np.percentile(x, p))
    assert set(stats([], "e2e_s").values()) == {None}


def _point():
    warm = rec(0, 0.0, [0.5, 0.6], [1, 1], phase="warmup", n_in=1000)
    good = [rec(i, 1.0 + i, [1.0 + i + 0.2 + 0.1 * k for k in range(5)], [1, 1, 1, 1, 2]) for i in range(1, 5)]
    slow = rec(5, 2.5, [4.5, 4.6, 4.7], [2, 2, 2])  # ttft 2.0 s
    failed = rec(6, 3.0, [3.5, 3.6], [1, 1], error="fewer tokens than asked: 2 of 8", n_out_expected=8)
    return [warm, *good, slow, failed]


def test_summarize_window_counts_tokens_where_produced():
    records = _point()
    m = summarize(records, window=(2.0, 4.0), n_gpus=2)
    assert (m["n_measured"], m["n_failed"]) == (6, 1) and m["error_rate"] == pytest.approx(1 / 6)
    meas = [r for r in records[1:] if r.ok]
    assert m["ttft_s_p50"] == pytest.approx(np.percentile([r.ttft_s for r in meas], 50))
    assert m["tpot_s_p99"] == pytest.approx(np.percentile([r.tpot_s for r in meas], 99))
    assert m["itl_s_mean"] == pytest.approx(np.mean([x for r in meas for x in r.itl_s]))
    assert m["interactivity_tok_s_user"] == pytest.approx(1 / np.median([r.tpot_s for r in meas]))
    # output tokens by chunk arrival in [2, 4]: req 1 (2.2..2.6: 6), req 2 (3.2..3.6: 6), failed req 6
    # (3.5, 3.6: 2); the slow one's chunks (4.5..4.7) fall after it; warm-up is never counted
    assert m["window_output_tokens"] == 6 + 6 + 2
    # input tokens at t_first in [2, 4]: req 1 (2.2), req 2 (3.2), req 6 (3.5)
    assert m["window_input_tokens"] == 30
    assert m["window_s"] == 2.0 and m["window_fallback"] is False
    assert m["output_tok_s"] == 7.0 and m["input_tok_s"] == 15.0 and m["total_tok_s"] == 22.0
    assert m["request_s"] == 1.0  # requests 1 and 2 finished (2.6 s, 3.6 s) inside; failed not counted
    assert m["tok_s_per_gpu"] == 11.0 and m["output_tok_s_per_gpu"] == 3.5
    assert m["output_tokens_total"] == 4 * 6 + 6 + 2 and m["input_tokens_total"] == 60
    assert m["span_s"] == pytest.approx(5.6 - 2.0)  # first measured send 2.0, last token 5.6
    assert m["span_output_tok_s"] == pytest.approx(32 / 3.6)
    assert m["span_request_s"] == pytest.approx(5 / 3.6)


def test_degenerate_window_falls_back_to_span():
    records = _point()
    for window in (None, (3.0, 3.0), (4.0, 3.0)):
        m = summarize(records, window=window, n_gpus=1)
        assert m["window_fallback"] is True and m["window_s"] == pytest.approx(m["span_s"])
        assert m["window_output_tokens"] == m["output_tokens_total"]


def test_goodput_and_slo_attainment():
    records = _point()
    m = summarize(records, window=(2.0, 6.0), n_gpus=1, slo={"ttft_s": 1.0, "tpot_s": 0.1})
    # good: reqs 1-4 (ttft 0.2, tpot 0.08); slow misses ttft, failed misses by definition
    assert m["slo_attainment"] == pytest.approx(4 / 6)
    assert m["goodput_request_s"] == pytest.approx(4 / 4.0)  # all four finish in [2, 6]
    assert m["goodput_output_tok_s"] == pytest.approx(4 * 6 / 4.0)
    assert m["slo_ttft_s"] == 1.0
    tight = summarize(records, window=(2.0, 6.0), n_gpus=1, slo={"tpot_s": 0.01})
    assert tight["goodput_request_s"] == 0.0 and tight["slo_attainment"] == 0.0
    assert "goodput_request_s" not in summarize(records, window=(2.0, 6.0), n_gpus=1)


def _facts(**kw):
    base = {"max_in_flight": 8, "target_concurrency": 8, "target_reached": True,
            "target_rate_rps": None, "achieved_rate_rps": None}
    return base | kw


def test_validity_clean_point_is_valid():
    m = {"n_measured": 200, "n_failed": 0, "error_rate": 0.0, "window_fallback": False}
    ok, reasons = check_point(m, {"kind": "concurrency", "concurrency": 8}, _facts(),
                              server_counters={"generation_tokens": 1000.0, "prompt_tokens": 500.0},
                              client_counters={"generation_tokens": 1005, "prompt_tokens": 500},
                              energy={"energy_valid": True})
    assert ok and reasons == []


def test_validity_reasons():
    m = {"n_measured": 50, "n_failed": 2, "error_rate": 0.04, "window_fallback": True}
    ok, reasons = check_point(
        m, {"kind": "concurrency", "concurrency": 8}, _facts(max_in_flight=5, target_reached=False),
        server_counters={"generation_tokens": 1000.0, "prompt_tokens": 500.0},
        client_counters={"generation_tokens": 980, "prompt_tokens": 500},
        energy={"energy_valid": False, "energy_invalid_reasons": ["counter went backwards"]})
    assert not ok
    assert reasons == [
        "client saturation: in-flight peaked at 5, target 8",
        "token mismatch: client counted 980 output tokens, server 1000 (2.0% > 1%)",
        "error rate 4.0% above 1% (2 of 50 failed)",
        "fewer than 100 requests: p99 unstable",
        "no steady-state window: throughput over the whole span",
        "energy: counter went backwards",
    ]
    ok, reasons = check_point(m | {"window_fallback": False, "error_rate": 0.0}, {"kind": "concurrency"},
                              _facts(), thresholds=Thresholds(min_requests_for_p99=10))
    assert ok and reasons == []


def test_validity_rate_saturation():
    m = {"n_measured": 500, "n_failed": 0, "error_rate": 0.0}
    load = {"kind": "rate", "rate_rps": 10.0}
    facts = _facts(target_concurrency=None, target_rate_rps=10.0, achieved_rate_rps=8.5)
    ok, reasons = check_point(m, load, facts)
    assert not ok and reasons == ["client saturation: achieved 8.5 req/s, target 10 req/s (< 90%)"]
    assert check_point(m, load, facts | {"achieved_rate_rps": 9.5}) == (True, [])
    assert check_point({"n_measured": 0}, load, facts | {"achieved_rate_rps": 9.5})[1] == ["no measured requests"]


def test_validity_flags_a_lagging_client_loop():
    m = {"n_measured": 200, "n_failed": 0, "error_rate": 0.0}
    load = {"kind": "concurrency", "concurrency": 8}
    ok, reasons = check_point(m, load, _facts() | {"loop_lag_s_p99": 0.035})
    assert not ok and reasons == ["client saturation: event-loop lag p99 35.0 ms > 10 ms (time stamps may be late)"]
    assert check_point(m, load, _facts() | {"loop_lag_s_p99": 0.002}) == (True, [])
