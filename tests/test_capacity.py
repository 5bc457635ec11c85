"""The SLO capacity search: its logic against latencies that are a known function of the load,
and the runner on the fake server (one engine start, probes on disk, resumable)."""

from __future__ import annotations

import numpy as np
import pytest

from bench.errors import ConfigError
from bench.plan.capacity import CapacitySearch, parse_slo, upper_bound
from bench.testing.fake_server import FakeServer, FakeServerConfig


def test_slo_text_parses_to_metric_keys_in_seconds():
    assert parse_slo("ttft_p95=2s, tpot_p95=100ms") == {"ttft_s_p95": 2.0, "tpot_s_p95": 0.1}
    assert parse_slo("e2e_sched_p99=1.5") == {"e2e_sched_s_p99": 1.5}
    for bad in ("ttft=2s", "latency_p95=1s", "ttft_p95=0", "", "ttft_p42=1s"):
        with pytest.raises(ConfigError):
            parse_slo(bad)


def test_the_upper_bound_is_the_value_alone_and_grows_with_spread():
    assert upper_bound([0.5]) == 0.5
    assert upper_bound([1.0, 1.0, 1.0]) == 1.0
    assert upper_bound([0.9, 1.0, 1.1]) == pytest.approx(1.0 + 2.920 * 0.1 / np.sqrt(3))


def _drive(search: CapacitySearch, ttft_p95_of, noise: float = 0.0, seed: int = 0) -> list[float]:
    rng = np.random.default_rng(seed)
    levels = []
    while (level := search.next_level()) is not None:
        levels.append(level)
        search.record(level, [{"ttft_s_p95": ttft_p95_of(level) * (1 + noise * rng.standard_normal())}
                              for _ in range(search.repeats)])
    return levels


@pytest.mark.parametrize("true_boundary,start", [(18.0, 1.0), (3.3, 1.0), (700.0, 5.0), (0.3, 4.0)])
def test_a_rate_search_finds_the_boundary_within_one_bisection_step(true_boundary, start):
    # ttft p95 rises linearly with the rate and crosses the 1 s SLO at `true_boundary` req/s
    search = CapacitySearch({"ttft_s_p95": 1.0}, kind="rate", repeats=3, start=start, tolerance=0.1)
    levels = _drive(search, lambda rate: 0.2 + 0.8 * rate / true_boundary)
    lo, hi = search.boundary, search.hi
    assert lo is not None and lo <= true_boundary < hi  # the bracket holds the truth
    assert hi - lo <= 0.1 * lo * 1.01  # converged to the stated tolerance: one bisection step
    assert len(levels) == len(set(levels)) and len(levels) <= 25
    assert [s["passed"] for s in search.summary()["steps"]] == [lvl <= true_boundary for lvl in levels]


def test_a_concurrency_search_ends_on_adjacent_integers():
    search = CapacitySearch({"ttft_s_p95": 1.0}, kind="concurrency", repeats=2)
    _drive(search, lambda c: 0.1 * c)  # meets the SLO up to 10 in flight
    assert (search.boundary, search.hi) == (10.0, 11.0)


def test_noisy_repeats_near_the_limit_do_not_pass():
    """At a level whose mean just meets the SLO, spread between repeats makes the upper bound fail it."""
    search = CapacitySearch({"ttft_s_p95": 1.0}, kind="rate", repeats=3, start=1.0)
    step = search.record(1.0, [{"ttft_s_p95": v} for v in (0.8, 0.95, 1.1)])
    assert not step.passed and "ttft_s_p95" in step.why
    step = search.record(0.5, [{"ttft_s_p95": v} for v in (0.5, 0.52, 0.55)])
    assert step.passed and search.boundary == 0.5


def test_a_level_that_always_fails_or_passes_ends_the_search():
    always_fail = CapacitySearch({"ttft_s_p95": 1.0}, kind="rate", repeats=1, start=1.0)
    _drive(always_fail, lambda r: 5.0)
    assert always_fail.boundary is None and len(always_fail.steps) == 9  # the start and 8 halvings
    always_pass = CapacitySearch({"ttft_s_p95": 1.0}, kind="concurrency", repeats=1, start=1, max_level=16)
    _drive(always_pass, lambda c: 0.0)
    assert always_pass.boundary == 16 and [s.level for s in always_pass.steps] == [1, 2, 4, 8, 16]


def _plan(url: str):
    from bench.plan import EngineConfig, Plan, PointSpec

    cfg = EngineConfig(model="tiny-llama", engine="endpoint", endpoint_url=url)
    template = PointSpec(point_id=f"{cfg.config_id()}_rand-8-4_c1_r0", engine_config_id=cfg.config_id(),
                         workload={"kind": "random", "input_len": 8, "output_len": 4},
                         load={"kind": "concurrency", "concurrency": 1}, n_warmup=1, n_requests=20)
    return Plan(engine_configs=[cfg], points=[template], name="capacity", n_devices=1, telemetry="none")


def _env():
    from bench.run.environment import RunEnvironment
    from bench.testing.fake_device import fake_device

    return RunEnvironment(device=fake_device("cpu", name="test"), idle_baseline_s=0.0, client_workers=1)


def _steps(summary) -> str:
    """Each step's level and why it failed: what an assertion shows."""
    return "; ".join(f"{s['level']:g}: {'pass' if s['passed'] else s['why']}" for s in summary["steps"])


def _loop_lag_left_to_its_own_tests(monkeypatch) -> None:
    """Probes judged by every validity rule but the event-loop lag limit. The client's loop lag is
    the one figure the host alone decides: with three busy processes on this 2-core box a probe
    at 1 in flight (client 5-8 % busy) showed a lag p99 of 16-40 ms against the 10 ms limit and
    failed its level: the search went [4, 2, 1] (a fast-tier run: [4, 8, 16, 12, 14, 15]). The
    rule itself is tested in test_metrics; here its limit is 1 s."""
    from bench.measure import validity

    check, relaxed = validity.check_validity, validity.Thresholds(max_loop_lag_s=1.0)
    monkeypatch.setattr(validity, "check_validity", lambda *a, **kw: check(*a, **{**kw, "thresholds": relaxed}))


@pytest.mark.slow
def test_the_runner_searches_on_one_engine_and_resumes_without_measuring_again(tmp_path, monkeypatch):
    from bench.results import read_summary
    from bench.run.events import EngineStarting
    from bench.run.runner import execute

    _loop_lag_left_to_its_own_tests(monkeypatch)
    # probes follow the plan rule (>= 100 requests in the window): a probe that is invalid fails its level
    events = []
    with FakeServer(FakeServerConfig(ttft_s=0.005, itl_s=0.001), mode="thread") as srv:
        search = CapacitySearch(parse_slo("ttft_p95=2ms"), kind="concurrency", repeats=2, start=2, max_level=8)
        result = execute(_plan(srv.base_url), tmp_path, _env(), search=search,
                         on_event=events.append)
        (summary,) = result.extra["capacity"].values()
        # the server's TTFT is 5 ms at any load: the start fails, the search halves down to 1, which fails too
        assert [s["level"] for s in summary["steps"]] == [2.0, 1.0] and summary["boundary"] is None
        assert sum(isinstance(e, EngineStarting) for e in events) == 1 and len(result.points) == 4
        assert {p.point_id.rsplit("_", 2)[-2] for p in result.points} == {"capacity-c2", "capacity-c1"}

        # 30 s is 6000x the fake's TTFT: every level passes, whatever else runs on the box (the
        # fake answers from a thread of this process: at 16 in flight on a busy 2-core box its TTFT
        # p95 reached 2.7 s, which failed a 1 s SLO)
        again = CapacitySearch(parse_slo("ttft_p95=30s"), kind="concurrency", repeats=2, start=4, max_level=16)
        run2 = tmp_path / "run2"
        run2.mkdir()
        result = execute(_plan(srv.base_url), run2, _env(), search=again)
        (summary,) = result.extra["capacity"].values()
        assert [s["level"] for s in summary["steps"]] == [4.0, 8.0, 16.0] and summary["boundary"] == 16.0, \
            _steps(summary)
        fig = summary["at_boundary"]
        assert fig["tok_s_per_gpu"]["n"] == 2 and fig["tok_s_per_gpu"]["mean"] > 0
        assert fig["goodput_output_tok_s"]["mean"] > 0  # the SLO is the probes' goodput SLO too

        # resumed: every probe is on disk, nothing is measured again, the same verdicts
        n_before = len(read_summary(run2).points)
        n_requests = srv.counters()["n_requests"]
        resumed = execute(_plan(srv.base_url), run2, _env(), resume=True, search=CapacitySearch(
            parse_slo("ttft_p95=30s"), kind="concurrency", repeats=2, start=4, max_level=16))
        assert srv.counters()["n_requests"] == n_requests  # the server saw no request
    assert len(resumed.points) == n_before == 6
    (summary,) = resumed.extra["capacity"].values()
    assert summary["boundary"] == 16.0 and len(summary["steps"]) == 3


def test_bench_capacity_needs_an_slo():
    from click.testing import CliRunner

    from bench.cli import cli

    res = CliRunner().invoke(cli, ["capacity", "--engine", "endpoint", "--url", "http://127.0.0.1:9"])
    assert res.exit_code != 0 and "needs --slo" in res.output
