"""bench.measure.metrics.summarize and bench.measure.validity.check_validity on hand-built records."""

from __future__ import annotations

import numpy as np
import pytest

from bench.load.records import RequestRecord
from bench.load.types import LoopStats, PointRun
from bench.measure.groups import Energy, Metrics
from bench.measure.metrics import stats, summarize
from bench.measure.validity import Thresholds, check_validity
from bench.plan.points import parse_load


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
    assert (m.n_measured, m.n_failed) == (6, 1) and m.error_rate == pytest.approx(1 / 6)
    meas = [r for r in records[1:] if r.ok]
    assert m.ttft_s_p50 == pytest.approx(np.percentile([r.ttft_s for r in meas], 50))
    assert m.tpot_s_p99 == pytest.approx(np.percentile([r.tpot_s for r in meas], 99))
    assert m.itl_s_mean == pytest.approx(np.mean([x for r in meas for x in r.itl_s]))
    assert m.interactivity_tok_s_user == pytest.approx(1 / np.median([r.tpot_s for r in meas]))
    # output tokens by chunk arrival in [2, 4]: req 1 (2.2..2.6: 6), req 2 (3.2..3.6: 6); the slow one's
    # chunks (4.5..4.7) fall after it; warm-up is never counted; the failed req 6 received 2 tokens
    # inside (3.5, 3.6): labelled apart, in no rate
    assert m.window_output_tokens == 6 + 6 and m.window_failed_output_tokens == 2
    # input tokens at t_first in [2, 4] of successful requests: req 1 (2.2), req 2 (3.2)
    assert m.window_input_tokens == 20
    assert m.window_s == 2.0 and m.window_fallback is False
    assert m.output_tok_s == 6.0 and m.input_tok_s == 10.0 and m.total_tok_s == 16.0
    assert m.request_s == 1.0  # requests 1 and 2 finished (2.6 s, 3.6 s) inside; failed not counted
    assert m.window_requests == 2
    assert m.tok_s_per_gpu == 8.0 and m.output_tok_s_per_gpu == 3.0
    # totals are the records' sums (failed included: the Parquet must add up to them), in no rate
    assert m.output_tokens_total == 4 * 6 + 6 + 2 and m.input_tokens_total == 60
    assert m.span_s == pytest.approx(5.6 - 2.0)  # first measured send 2.0, last token 5.6
    assert m.span_output_tok_s == pytest.approx(30 / 3.6)
    assert m.span_request_s == pytest.approx(5 / 3.6)


def test_summarize_returns_the_typed_group():
    m = summarize(_point(), window=(2.0, 4.0), n_gpus=1)
    assert isinstance(m, Metrics) and m.output_tok_s == 6.0 and m.extra == {}
    assert Metrics.model_validate_json(m.model_dump_json()) == m


def test_every_request_failing_shows_no_throughput():
    """Issue 11 defect 4: 20 of 20 failed (streams closed mid-way) once showed 8,736.7 total tok/s."""
    records = [rec(i, 0.1 * i, [0.1 * i + 0.05, 0.1 * i + 0.06], [1, 1], n_in=4000,
                   error="stream closed mid-way", n_out_expected=64) for i in range(20)]
    m = summarize(records, window=(0.0, 2.0), n_gpus=1)
    assert (m.n_measured, m.n_failed) == (20, 20)
    for key in ("output_tok_s", "input_tok_s", "total_tok_s", "request_s", "tok_s_per_gpu",
                "output_tok_s_per_gpu", "span_total_tok_s", "span_output_tok_s"):
        assert getattr(m, key) is None, key
    assert m.window_output_tokens == m.window_input_tokens == 0
    assert m.window_failed_output_tokens == 40  # received, labelled, not counted as served


def test_degenerate_window_falls_back_to_span():
    records = _point()
    for window in (None, (3.0, 3.0), (4.0, 3.0)):
        m = summarize(records, window=window, n_gpus=1)
        assert m.window_fallback is True and m.window_s == pytest.approx(m.span_s)
        assert m.window_output_tokens + m.window_failed_output_tokens == m.output_tokens_total


def test_goodput_and_slo_attainment():
    records = _point()
    m = summarize(records, window=(2.0, 6.0), n_gpus=1, slo={"ttft_s": 1.0, "tpot_s": 0.1})
    # good: reqs 1-4 (ttft 0.2, tpot 0.08); slow misses ttft, failed misses by definition
    assert m.slo_attainment == pytest.approx(4 / 6)
    assert m.goodput_request_s == pytest.approx(4 / 4.0)  # all four finish in [2, 6]
    assert m.goodput_output_tok_s == pytest.approx(4 * 6 / 4.0)
    assert m.slo_ttft_s == 1.0
    tight = summarize(records, window=(2.0, 6.0), n_gpus=1, slo={"tpot_s": 0.01})
    assert tight.goodput_request_s == 0.0 and tight.slo_attainment == 0.0
    assert summarize(records, window=(2.0, 6.0), n_gpus=1).goodput_request_s is None


def _loop(index=0, loop_lag_s_p99=None, cpu_share=None) -> LoopStats:
    """One client loop's self-watch with the figures a validity rule reads."""
    return LoopStats(loop_lag_s_p50=None, loop_lag_s_p99=loop_lag_s_p99, loop_lag_s_max=loop_lag_s_p99,
                     loop_lag_samples=100 if loop_lag_s_p99 is not None else 0, cpu_s=0.0, wall_s=1.0,
                     cpu_share=cpu_share, backlog_bytes_max=None, backlog_bytes_p99=None, backlog_samples=0,
                     index=index, pid=None)


def _run(records=(), loops=(), **kw) -> PointRun:
    """What the driver saw of a concurrency-8 point that reached its target; `kw` overrides."""
    base = {"window_t0_s": 2.0, "window_t1_s": 4.0, "span_t0_s": 2.0, "span_t1_s": 5.6, "max_in_flight": 8,
            "target_concurrency": 8, "target_reached": True, "target_rate_rps": None, "achieved_rate_rps": None}
    return PointRun(records=list(records), **(base | kw), loops=list(loops))


C8 = parse_load({"kind": "concurrency", "concurrency": 8})


def test_validity_clean_point_is_valid():
    m = Metrics(n_measured=200, n_failed=0, error_rate=0.0, window_fallback=False)
    v = check_validity(m, C8, _run(),
                       server_counters={"generation_tokens": 1000.0, "prompt_tokens": 500.0},
                       client_counters={"generation_tokens": 1005, "prompt_tokens": 500},
                       energy=Energy(energy_valid=True))
    assert v.valid and v.reasons == []


def test_validity_reasons():
    m = Metrics(n_measured=50, n_failed=2, error_rate=0.04, window_fallback=True)
    v = check_validity(
        m, C8, _run(max_in_flight=5, target_reached=False),
        server_counters={"generation_tokens": 1000.0, "prompt_tokens": 500.0},
        client_counters={"generation_tokens": 980, "prompt_tokens": 500},
        energy=Energy(energy_valid=False, energy_invalid_reasons=["counter went backwards"]))
    assert not v.valid
    assert v.reasons == [
        "client saturation: in-flight peaked at 5, target 8",
        "token mismatch: client counted 980 output tokens, server 1000 (2.0% > 1%)",
        "error rate 4.0% above 1% (2 of 50 failed)",
        "50 requests in the measurement window, fewer than 100: p99 unstable",
        "no steady-state window: throughput over the whole span",
        "energy: counter went backwards",
    ]
    m = m.model_copy(update={"window_fallback": False, "error_rate": 0.0})
    v = check_validity(m, C8, _run(), thresholds=Thresholds(min_requests_for_p99=10))
    assert v.valid and v.reasons == []


def test_validity_rate_saturation():
    m = Metrics(n_measured=500, n_failed=0, error_rate=0.0)
    load = parse_load({"kind": "rate", "rate_rps": 10.0})
    run = _run(target_concurrency=None, target_rate_rps=10.0, achieved_rate_rps=8.5)
    assert check_validity(m, load, run).reasons == ["client saturation: achieved 8.5 req/s, target 10 req/s (< 90%)"]
    run = _run(target_concurrency=None, target_rate_rps=10.0, achieved_rate_rps=9.5)
    assert check_validity(m, load, run).reasons == []
    assert check_validity(Metrics(n_measured=0), load, run).reasons == ["no measured requests"]


def test_validity_flags_a_lagging_client_loop():
    m = Metrics(n_measured=200, n_failed=0, error_rate=0.0)
    v = check_validity(m, C8, _run(loops=[_loop(loop_lag_s_p99=0.035)]))
    assert v.reasons == ["client saturation: event-loop lag p99 35.0 ms > 10 ms (time stamps may be late)"]
    assert check_validity(m, C8, _run(loops=[_loop(loop_lag_s_p99=0.002)])).reasons == []


def test_validity_flags_a_saturated_client_worker():
    m = Metrics(n_measured=200, n_failed=0, error_rate=0.0)
    busy = [_loop(0, cpu_share=0.5), _loop(1, cpu_share=0.95)]
    assert check_validity(m, C8, _run(loops=busy)).reasons == [
        "client saturation: client worker 1 busy 95% of a core (> 90%; use more --client-workers)"]


def test_p99_guard_counts_requests_inside_the_window():
    """Issue 8 defect 3: 200 measured, only 40 inside the window: p99 of the steady state is unstable."""
    m = Metrics(n_measured=200, n_failed=0, error_rate=0.0, window_fallback=False, window_requests=40)
    v = check_validity(m, C8, _run())
    assert v.reasons == ["40 requests in the measurement window, fewer than 100: p99 unstable"]
    assert check_validity(m.model_copy(update={"window_requests": 150}), C8, _run()).reasons == []


def test_p99_guard_on_summarized_records():
    # 120 successful requests, 1 s apart; the window [50, 100] holds the completions of about 50 of them
    records = [rec(i, float(i), [i + 0.1, i + 0.2], [1, 1]) for i in range(120)]
    m = summarize(records, window=(50.0, 100.0), n_gpus=1)
    assert m.n_measured == 120 and m.window_requests == 50
    v = check_validity(m, parse_load({"kind": "concurrency", "concurrency": 1}),
                       _run(max_in_flight=1, target_concurrency=1))
    assert v.reasons == ["50 requests in the measurement window, fewer than 100: p99 unstable"]


def test_energy_over_other_devices_than_the_point_uses_is_invalid():
    m = Metrics(n_measured=200, n_failed=0, error_rate=0.0, window_requests=200)
    energy = Energy(energy_valid=True, n_devices=8, devices=list(range(8)))
    v = check_validity(m, C8, _run(), energy=energy, n_gpus=2)
    assert v.reasons == ["energy: covers 8 devices, the point uses 2 GPUs"]
    two = energy.model_copy(update={"n_devices": 2})
    assert check_validity(m, C8, _run(), energy=two, n_gpus=2).reasons == []
    # no meter at all (n_devices 0) is reported by the energy's own reasons, not as a mismatch
    assert check_validity(m, C8, _run(), energy=Energy(energy_valid=True, n_devices=0), n_gpus=2).reasons == []


def test_point_groups_compose_into_a_point_result():
    """point_groups returns typed groups; bench.results composes them (measure never imports results)."""
    from bench.measure.groups import Window
    from bench.measure.point import point_groups
    from bench.plan import EngineConfig, PointSpec
    from bench.results.point import point_result
    from bench.telemetry.types import WindowEnergy

    point = PointSpec.model_validate({
        "point_id": "c8", "engine_config_id": "e", "workload": {"kind": "random", "input_len": 10, "output_len": 6},
        "load": {"kind": "concurrency", "concurrency": 8}, "n_warmup": 1, "n_requests": 6})
    energy = WindowEnergy.of("nvml_counter", True, 2.0, [50.0] * 4, None, [], 20).on_devices([0, 1, 2, 3])
    groups = point_groups(point, EngineConfig(model="tiny-llama"), _run(_point()), n_gpus=2, energy=energy,
                          server_delta=None, client_tokens_in_counter_interval=None)
    assert isinstance(groups.window, Window) and groups.window.window_s == 2.0 and groups.window.span_s == pytest.approx(3.6)
    assert isinstance(groups.energy, Energy) and groups.energy.j_per_output_token == pytest.approx(200.0 / 12)
    assert groups.energy.avg_power_w == 100.0 and groups.energy.devices == [0, 1, 2, 3]
    assert "energy: covers 4 devices, the point uses 2 GPUs" in groups.validity.reasons
    pr = point_result(point, groups, started_utc="2026-01-01T00:00:00Z")
    assert pr.load.model_dump(mode="json") == {"kind": "concurrency", "concurrency": 8} and pr.workload.input_len == 10
    assert pr.metrics is groups.metrics and pr.valid is False and pr.invalid_reasons == groups.validity.reasons
    assert (pr.n_requests, pr.n_failed, pr.error) == (6, 1, "fewer tokens than asked: 2 of 8")
