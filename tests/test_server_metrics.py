"""Prefix-cache control and the engine's own metrics over time (issue 10, parts 4 and 5),
against the fake server's vLLM-shaped /metrics and POST /reset_prefix_cache (fast tier)."""

from __future__ import annotations

import json
import threading
import time
import urllib.request

import pandas as pd
import pytest

from bench.engines.base import reset_prefix_cache
from bench.engines.process import http_post
from bench.load.driver import run_point_sync
from bench.load.types import LoadJob, PointRun
from bench.load.workload import make_workload
from bench.measure.groups import Metrics, ServerCounters
from bench.measure.validity import check_validity
from bench.plan import EngineConfig, Plan, PointSpec
from bench.plan.points import parse_load
from bench.results import read_summary
from bench.run.environment import RunEnvironment
from bench.run.measure_point import workload_seed
from bench.run.runner import execute
from bench.run.scope import SERVER_METRICS_FILE
from bench.telemetry.server_metrics import (
    ServerMetricsScraper,
    parse_metrics,
    window_summary,
)
from bench.testing.fake_device import fake_device
from bench.testing.fake_server import FakeServer, FakeServerConfig

FAST = FakeServerConfig(ttft_s=0.01, itl_s=0.004)
RANDOM = {"kind": "random", "input_len": 64, "output_len": 12}
SHARED = {"kind": "shared_prefix", "prefix_len": 64, "suffix_len": 16, "output_len": 12}


def _plan(url: str, workloads: list[dict], concurrency=(2,), n_requests: int = 8, n_warmup: int = 1) -> Plan:
    cfg = EngineConfig(model="tiny-llama", engine="endpoint", endpoint_url=url)
    points = [PointSpec(point_id=f"{cfg.config_id()}_w{i}_c{c}_r0", engine_config_id=cfg.config_id(), workload=w,
                        load={"kind": "concurrency", "concurrency": c}, n_warmup=n_warmup, n_requests=n_requests)
              for i, w in enumerate(workloads) for c in concurrency]
    return Plan(engine_configs=[cfg], points=points, name="prefix", n_devices=1, telemetry="none")


SCRAPE_S = 0.1  # the runs' /metrics interval: windows of a few samples from points well under a second
TIMED = FakeServerConfig(ttft_s=0.01, itl_s=0.007)  # ~0.1 s a request of 12 tokens: each window holds samples


def _env() -> RunEnvironment:
    return RunEnvironment(device=fake_device("cpu", 0, name="cpu"), idle_baseline_s=0.0,
                          server_metrics_interval_s=SCRAPE_S)


# ------------------------------------------------------------------ the fake server's metrics


def _complete(url: str, prompt: list[int]) -> None:
    body = json.dumps({"model": "fake-model", "prompt": prompt, "max_tokens": 4, "stream": True}).encode()
    req = urllib.request.Request(url + "/v1/completions", data=body, headers={"Content-Type": "application/json"})
    urllib.request.urlopen(req, timeout=10).read()


def _metrics_when(srv, done, timeout_s: float = 10.0) -> dict:
    """The server's parsed /metrics once `done(metrics)` holds (polled; AssertionError after timeout_s)."""
    deadline = time.monotonic() + timeout_s
    while not done(m := parse_metrics(srv.metrics_text())):
        assert time.monotonic() < deadline, f"/metrics never got there: {m}"
        time.sleep(0.01)  # the poll period of a bounded wait on the server's state
    return m


def test_fake_metrics_model_running_and_waiting():
    """Three requests held by the server (never answered until it stops), two slots
    (max_num_seqs=2): two run, one waits, as the scheduler gauges say; nothing races a clock."""
    cfg = FakeServerConfig(max_num_seqs=2, hang_every=1)
    prompt = list(range(40))
    with FakeServer(cfg) as srv:
        assert parse_metrics(srv.metrics_text()) == {
            "running_requests": 0, "waiting_requests": 0, "kv_cache_usage": 0.0, "preemptions": 0,
            "prefix_cache_queries": 0, "prefix_cache_hits": 0}

        def send():
            try:
                _complete(srv.base_url, prompt)
            except OSError:
                pass  # held, then dropped when the server stops

        threads = [threading.Thread(target=send, daemon=True) for _ in range(3)]
        for t in threads:
            t.start()
        busy = _metrics_when(srv, lambda m: m["running_requests"] + m["waiting_requests"] == 3)
    for t in threads:
        t.join(10)
    assert not any(t.is_alive() for t in threads)
    assert busy["running_requests"] == 2 and busy["waiting_requests"] == 1  # max_num_seqs=2
    assert busy["kv_cache_usage"] == pytest.approx(2 * 44 / cfg.kv_capacity_tokens)


def test_fake_metrics_model_prefix_hits_and_reset():
    with FakeServer(FakeServerConfig(ttft_s=0.01, itl_s=0.001)) as srv:
        prompt = list(range(40))  # two whole 16-token blocks and 8 tokens more
        for _ in range(3):
            _complete(srv.base_url, prompt)
        done = parse_metrics(srv.metrics_text())
        assert done["prefix_cache_queries"] == 3 * 40
        assert done["prefix_cache_hits"] == 2 * 32  # the 2nd and 3rd found both whole blocks
        assert reset_prefix_cache(srv.base_url) == "done"
        _complete(srv.base_url, prompt)
        assert parse_metrics(srv.metrics_text())["prefix_cache_hits"] == 2 * 32  # nothing left to hit


@pytest.mark.slow
def test_reset_is_unavailable_without_dev_mode_and_a_refusal_is_retried_then_failed():
    with FakeServer(FakeServerConfig(dev_mode=False)) as srv:
        assert http_post(srv.base_url + "/reset_prefix_cache")[0] == 404
        assert reset_prefix_cache(srv.base_url) == "unavailable"
    answers = iter([(200, '{"success": false}'), (200, '{"success": true}')])
    assert reset_prefix_cache("http://x", post=lambda url, timeout_s: next(answers)) == "done"
    never = reset_prefix_cache("http://x", retry_s=0.3, post=lambda url, timeout_s: (200, '{"success": false}'))
    assert never.startswith("failed: the server refused the reset")
    assert reset_prefix_cache("http://x", post=lambda url, timeout_s: (0, "refused")).startswith("failed: HTTP 0")


def test_parse_combines_engines_sum_for_counts_max_for_kv_usage():
    text = """# HELP vllm:num_requests_running x
vllm:num_requests_running{engine="0"} 3.0
vllm:num_requests_running{engine="1"} 4.0
vllm:kv_cache_usage_perc{engine="0"} 0.25
vllm:kv_cache_usage_perc{engine="1"} 0.5
vllm:num_preemptions_total{engine="0"} 2.0
vllm:num_preemptions_created{engine="0"} 1.7e9
other_metric 5
"""
    assert parse_metrics(text) == {"running_requests": 7.0, "kv_cache_usage": 0.5, "preemptions": 2.0}


def test_a_label_value_holding_a_brace_a_quote_or_a_space_is_read():
    """Was: the hand-written sample pattern ended the labels at the first '}', so a served model
    named `org/m} x` (any text a server may report) lost every sample: no server metrics."""
    page = ('vllm:num_requests_running{engine="0",model_name="org/m} x \\"q\\""} 3.0\n'
            'vllm:kv_cache_usage_perc{engine="0",model_name="org/m} x"} 0.5\n'
            'vllm:num_preemptions_total{engine="0",model_name="org/m} x"} 2.0 1712345678000\n')
    scraper = ServerMetricsScraper("http://x", fetch=lambda url, timeout_s: (200, page))
    scraper.sample_once()
    assert [v for _, v in scraper.samples] == [{"running_requests": 3.0, "kv_cache_usage": 0.5, "preemptions": 2.0}]


def test_a_line_that_does_not_parse_is_passed_over_not_raised():
    page = ("vllm:num_requests_running{engine=\"0\" 3.0\n"  # labels never closed
            "vllm:num_requests_waiting{engine=\"0\"} 12abc\n"  # not a number
            "vllm:kv_cache_usage_perc{engine=\"0\"} NaN\n"  # not a reading
            "vllm:num_preemptions_total{engine=\"0\"} 4.0\n")
    assert parse_metrics(page) == {"preemptions": 4.0}


# ------------------------------------------------------------------ the scraper and its summary


@pytest.mark.slow
def test_scraper_samples_on_the_client_clock_and_summarizes_the_window():
    with FakeServer(FakeServerConfig(ttft_s=0.05, itl_s=0.02, preempt_every=3)) as srv:
        scraper = ServerMetricsScraper(srv.base_url, interval_s=0.05).start()
        wl = make_workload(RANDOM, vocab_size=1000, seed=1)
        pr = run_point_sync(LoadJob(srv.base_url, "fake-model", wl, {"kind": "concurrency", "concurrency": 3}, 0, 12,
                                    workers=0))
        scraper.stop()
    ts = [t for t, _ in scraper.samples]
    assert len(ts) >= 10 and ts == sorted(ts)
    assert ts[0] <= pr.window_t0_s and ts[-1] >= pr.span_t1_s  # same clock as the client's stamps
    s = scraper.summary_between(pr.window_t0_s, pr.window_t1_s)
    assert s.n_samples >= 3 and s.interval_s == 0.05
    assert s.running_requests_max == 3 and 0 < s.running_requests_mean <= 3
    assert s.waiting_requests_max == 0 and s.in_server_requests_max == 3
    assert s.kv_cache_usage_max == pytest.approx(3 * 76 / 65536)
    assert s.preemptions_in_window >= 1  # the 3rd, 6th, 9th request was "preempted"
    frame = scraper.frame()
    assert list(frame.columns) == ["t_s", "metric", "value"]
    assert set(frame["metric"]) == {"running_requests", "waiting_requests", "kv_cache_usage", "preemptions",
                                    "prefix_cache_queries", "prefix_cache_hits"}


def test_window_summary_counters_bracket_the_window_and_gauges_stay_inside():
    samples = [(0.0, {"running_requests": 9, "waiting_requests": 0, "preemptions": 1}),
               (1.0, {"running_requests": 2, "waiting_requests": 1, "preemptions": 2}),
               (2.0, {"running_requests": 4, "waiting_requests": 0, "preemptions": 5}),
               (3.0, {"running_requests": 0, "waiting_requests": 0, "preemptions": 6})]
    s = window_summary(samples, 0.5, 2.5, 1.0)
    assert s.n_samples == 2 and s.running_requests_max == 4 and s.running_requests_mean == 3
    assert s.in_server_requests_max == 4 and s.kv_cache_usage_max is None
    assert s.preemptions_in_window == 5  # 6 (at 3.0) - 1 (at 0.0)
    assert window_summary(samples, 3.5, 4.0).preemptions_in_window is None  # no sample after the window


def test_a_server_without_metrics_gives_no_samples_and_is_soon_left_alone():
    calls = []
    scraper = ServerMetricsScraper("http://x", fetch=lambda url, timeout_s: calls.append(url) or (404, ""))
    for _ in range(10):
        scraper.sample_once()
    assert scraper.samples == [] and len(calls) == 3 and scraper.summary_between(0, 1) is None
    assert scraper.frame().empty


# ------------------------------------------------------------------ validity


def _reasons(server: dict, kind="random", load=None) -> list[str]:
    load = parse_load(load or {"kind": "concurrency", "concurrency": 4})
    peak = getattr(load, "concurrency", None)
    run = PointRun(records=[], window_t0_s=0.0, window_t1_s=1.0, span_t0_s=0.0, span_t1_s=1.0, max_in_flight=peak or 0,
                   target_concurrency=peak, target_reached=True, target_rate_rps=None, achieved_rate_rps=None)
    metrics = Metrics(n_measured=200, error_rate=0.0, window_requests=200)
    return check_validity(metrics, load, run, workload_kind=kind, server=ServerCounters(**server)).reasons


def test_validity_from_the_server_metrics():
    assert _reasons({"prefix_cache_hit_rate": 0.005}) == []
    assert _reasons({"prefix_cache_hit_rate": 0.25}) == ["prefix cache hits inflate a random workload: hit rate 25.0%"]
    assert _reasons({"prefix_cache_hit_rate": 0.9}, kind="shared_prefix") == []  # a result, not a fault
    assert _reasons({"preemptions_in_window": 3.0}) == ["preemptions during the window: 3"]
    never = {"metric_samples": 5, "running_requests_max": 2.0, "in_server_requests_max": 2.0}
    assert _reasons(never) == [("the server never had the target running requests: max running 2, "
                                "running + waiting 2, target 4 (5 samples)")]
    # a server that caps its batch (max_num_seqs) still saw the load: queued, not missing
    assert _reasons({**never, "in_server_requests_max": 4.0}) == []
    assert _reasons({**never, "metric_samples": 1}) == []  # too few samples to judge
    assert _reasons({"metric_samples": 5}) == []  # the server reported no gauge
    assert _reasons(never, load={"kind": "rate", "rate_rps": 4.0}) == []


def test_hit_rate_comes_from_the_counter_deltas():
    g = ServerCounters.from_measurements({"prefix_cache_queries": 200.0, "prefix_cache_hits": 50.0}, None, "done")
    assert g.prefix_cache_hit_rate == 0.25 and g.prefix_cache_reset == "done"
    assert ServerCounters.from_measurements({"prefix_cache_queries": 0.0, "prefix_cache_hits": 0.0}, None
                                            ).prefix_cache_hit_rate is None
    assert ServerCounters.from_measurements({"generation_tokens": 3.0}, None).prefix_cache_hit_rate is None


# ------------------------------------------------------------------ the runner


def test_points_get_disjoint_prompts_stable_across_runs():
    plan = _plan("http://x", [RANDOM], concurrency=(1, 2))
    a, b = plan.points
    assert workload_seed(0, a) == workload_seed(0, a) != workload_seed(0, b)
    assert workload_seed(0, a) != workload_seed(1, a)
    pa = make_workload(a.workload, 32000, workload_seed(0, a)).prompts(4)
    pb = make_workload(b.workload, 32000, workload_seed(0, b)).prompts(4)
    assert not {tuple(p.token_ids[:16]) for p in pa} & {tuple(p.token_ids[:16]) for p in pb}
    fixed = make_workload({**RANDOM, "seed": 7}, 32000, workload_seed(0, a)).prompts(2)
    assert fixed == make_workload({**RANDOM, "seed": 7}, 32000, workload_seed(0, b)).prompts(2)  # its own seed wins


@pytest.mark.slow
def test_run_resets_the_cache_records_hit_rates_and_writes_server_metrics(tmp_path):
    with FakeServer(TIMED) as srv:  # windows of a few SCRAPE_S samples
        # two random points on one server: with the same prompts and no reset the 2nd would hit
        result = execute(_plan(srv.base_url, [RANDOM, SHARED], concurrency=(1, 2)), tmp_path / "run", _env())
        totals = parse_metrics(srv.metrics_text())
    assert [p.status for p in result.points] == ["ok"] * 4
    rand, shared = result.points[:2], result.points[2:]
    for p in result.points:
        assert p.server.prefix_cache_reset == "done"
        assert p.server.metric_samples is not None and p.server.running_requests_max is not None
        assert p.server.metric_interval_s == SCRAPE_S  # the run environment's interval, not the 0.5 s default
    for p in rand:
        assert p.server.prefix_cache_hit_rate == 0.0
        assert not any("prefix cache" in r for r in p.invalid_reasons)
    for p in shared:  # 9 requests share one 64-token prefix: 8 of them hit it (of 80 tokens each)
        assert p.server.prefix_cache_hit_rate == pytest.approx(8 * 64 / (9 * 80))
        assert not any("prefix cache" in r for r in p.invalid_reasons)
    assert totals["prefix_cache_hits"] == 2 * 8 * 64
    stored = read_summary(tmp_path / "run")
    assert stored.points[2].server.prefix_cache_hit_rate == shared[0].server.prefix_cache_hit_rate
    assert stored.extra["server_metrics_file"] == SERVER_METRICS_FILE
    frame = pd.read_parquet(tmp_path / "run" / SERVER_METRICS_FILE)
    assert list(frame.columns) == ["config_id", "point_id", "t_s", "metric", "value"]
    assert set(frame["point_id"]) == {p.point_id for p in result.points}
    one = frame[(frame["point_id"] == rand[1].point_id) & (frame["metric"] == "running_requests")]
    assert one["value"].max() == 2 and one["t_s"].is_monotonic_increasing

    from bench.analysis.report import run_report

    rep = run_report(tmp_path / "run", tmp_path / "report")
    drawn = {t.meta["series"] for t in rep.figures["server_metrics"].data if t.meta["kind"] == "server_metrics"}
    assert drawn == {"running requests", "waiting requests", "KV-cache usage (%)"}
    png = next(p for p in rep.plots if p.path.name == "server_metrics_over_time.png")
    assert png.path.is_file() and png.n_series == 3
    text = rep.path.read_text()
    assert "prefix_cache_hit_rate" in text and "server_metrics_over_time.png" in text


@pytest.mark.slow
def test_same_prompts_without_a_reset_are_flagged(tmp_path):
    """A random workload with its own seed repeats its prompts in every point: on a server
    without a reset the second point is served from the cache and marked invalid."""
    with FakeServer(FakeServerConfig(ttft_s=0.01, itl_s=0.004, dev_mode=False)) as srv:
        result = execute(_plan(srv.base_url, [{**RANDOM, "seed": 3}], concurrency=(1, 2)), tmp_path / "run", _env())
    first, second = result.points
    assert first.server.prefix_cache_reset == second.server.prefix_cache_reset == "unavailable"
    assert first.server.prefix_cache_hit_rate == 0.0
    assert second.server.prefix_cache_hit_rate > 0.5
    assert any(r.startswith("prefix cache hits inflate a random workload: hit rate") for r in second.invalid_reasons)


@pytest.mark.slow
def test_preemptions_and_a_server_that_never_saw_the_load_invalidate_the_point(tmp_path):
    cfg = FakeServerConfig(ttft_s=TIMED.ttft_s, itl_s=TIMED.itl_s, preempt_every=2)
    with FakeServer(cfg) as srv:
        result = execute(_plan(srv.base_url, [RANDOM], concurrency=(2,), n_requests=12), tmp_path / "run", _env())
    (p,) = result.points
    assert p.server.preemptions_in_window >= 1
    assert any(r.startswith("preemptions during the window: ") for r in p.invalid_reasons)
    # the gauge the server reports is what counts: one that capped its batch at 1 still queued the other
    with FakeServer(FakeServerConfig(ttft_s=TIMED.ttft_s, itl_s=TIMED.itl_s, max_num_seqs=1)) as srv:
        result = execute(_plan(srv.base_url, [RANDOM], concurrency=(2,), n_requests=8), tmp_path / "run2", _env())
    (p,) = result.points
    assert p.server.running_requests_max == 1 and p.server.in_server_requests_max == 2
    assert not any("never had the target" in r for r in p.invalid_reasons)


@pytest.mark.slow
def test_resume_keeps_the_server_metrics_of_points_already_measured(tmp_path):
    with FakeServer(FAST) as srv:
        plan = _plan(srv.base_url, [RANDOM], concurrency=(1, 2))
        execute(plan, tmp_path / "run", _env())
        frame = pd.read_parquet(tmp_path / "run" / SERVER_METRICS_FILE)
        summary = read_summary(tmp_path / "run")
        from bench.results import write_summary

        summary.points = summary.points[:1]  # as if the run had stopped after its first point
        summary.status = "interrupted"
        write_summary(tmp_path / "run", summary)
        execute(plan, tmp_path / "run", _env(), resume=True)
    after = pd.read_parquet(tmp_path / "run" / SERVER_METRICS_FILE)
    first = plan.points[0].point_id
    assert after[after["point_id"] == first].reset_index(drop=True).equals(
        frame[frame["point_id"] == first].reset_index(drop=True))
    assert set(after["point_id"]) == {p.point_id for p in plan.points}


@pytest.mark.slow
def test_server_metrics_travel_with_the_run_through_the_store(tmp_path):
    from bench.store import pull, upload

    with FakeServer(TIMED) as srv:
        execute(_plan(srv.base_url, [RANDOM], concurrency=(2,)), tmp_path / "run", _env())
    [done] = upload([tmp_path / "run"], str(tmp_path / "store"))
    assert done.status == "published"
    [local] = pull(str(tmp_path / "store"), tmp_path / "cache")
    assert (local / SERVER_METRICS_FILE).read_bytes() == (tmp_path / "run" / SERVER_METRICS_FILE).read_bytes()
