"""The adaptive point length (issue 22): after the minimum requests a concurrency point stops
when its headline figure's running interval is narrower than the stated share, else at its
maximum; the reason is recorded, validity is unchanged. Against the fake server, whose
latency is known (ttft + (n - 1) x itl, no jitter)."""

from __future__ import annotations

import math
import statistics

import pytest
from pydantic import ValidationError

from bench.load.adaptive import Convergence, interval_share
from bench.load.driver import run_point_sync
from bench.load.types import LoadJob
from bench.load.workload import make_workload
from bench.plan.adaptive import AdaptiveStop
from bench.run.runner import execute
from bench.testing.fake_server import FakeServer, FakeServerConfig
from tests.test_runner_fast import endpoint, make_env, make_plan

KNOWN = FakeServerConfig(ttft_s=0.01, itl_s=0.003)  # e2e = 0.01 + 7 x 0.003 s for 8 output tokens


@pytest.fixture(scope="module")
def server():
    with FakeServer(KNOWN) as srv:
        yield srv


def _job(server, n_requests, rule):
    workload = make_workload({"kind": "random", "input_len": 8, "output_len": 8}, vocab_size=32000, seed=1)
    return LoadJob(server.base_url, KNOWN.model, workload, {"kind": "concurrency", "concurrency": 2}, 2, n_requests,
                   workers=None, adaptive=rule)


def test_interval_share_is_the_student_t_half_width_over_the_mean():
    xs = [1.0, 1.2, 0.8, 1.1, 0.9]
    half = 2.7764451051977987 * statistics.stdev(xs) / math.sqrt(5)  # t(0.975, 4)
    assert interval_share(xs, 0.95) == pytest.approx(half / statistics.fmean(xs))
    assert interval_share([1.0], 0.95) is None and interval_share([], 0.95) is None
    assert interval_share([1.0] * 10, 0.95) == 0.0


def test_the_rule_is_checked_and_never_stops_before_the_minimum():
    from bench.load.records import RequestRecord

    recs = [RequestRecord(request_id=i, phase="measured", n_in_expected=1, n_out_expected=1, t_send=0.0,
                          t_last=1.0, t_done=1.0) for i in range(5)]
    now = [0.0]
    stop = Convergence(AdaptiveStop(min_requests=6, rel_half_width=0.05), recs, 0, clock=lambda: now[0])
    assert not stop()  # 5 finished < 6
    recs.append(RequestRecord(request_id=5, phase="measured", n_in_expected=1, n_out_expected=1, t_send=0.0,
                              t_last=1.0, t_done=1.0))
    assert not stop()  # checked again only CHECK_EVERY_S later
    now[0] = 1.0
    assert stop() and stop.converged and stop.share == 0.0
    with pytest.raises(ValidationError):
        AdaptiveStop(min_requests=1)
    with pytest.raises(ValidationError):
        AdaptiveStop(rel_half_width=1.5)


@pytest.mark.slow
def test_a_point_against_known_latency_stops_once_sure(server):
    run = run_point_sync(_job(server, 400, AdaptiveStop(min_requests=20, rel_half_width=0.2)))
    measured = run.measured
    assert run.stop_reason == "converged"
    assert 20 <= len(measured) < 400  # stopped after the minimum, well before the maximum
    assert all(r.ok for r in measured)  # requests not launched are not failures of the point
    e2e = [r.e2e_s for r in measured]
    assert interval_share(e2e, 0.95) < 0.2 + 0.1  # the recorded requests bear the rule out (a few more finished)


@pytest.mark.slow
def test_a_point_that_never_gets_sure_runs_to_its_maximum(server):
    run = run_point_sync(_job(server, 30, AdaptiveStop(min_requests=10, rel_half_width=1e-9)))
    assert run.stop_reason == "max_requests" and len(run.measured) == 30
    plain = run_point_sync(_job(server, 12, None))
    assert plain.stop_reason is None and len(plain.measured) == 12  # not asked for: nothing changes


@pytest.mark.slow
def test_the_stop_reason_is_recorded_and_validity_unchanged(tmp_path, server):
    from dataclasses import replace

    plan = make_plan([endpoint(server.base_url)], n_points=1, n_requests=300, telemetry="none")
    env = replace(make_env(), adaptive=AdaptiveStop(min_requests=20, rel_half_width=0.2))
    [point] = execute(plan, tmp_path, env).points
    assert point.status == "ok" and point.timing.stop_reason == "converged" and point.timing.n_planned == 300
    assert 20 <= point.n_requests < 300
    # the same rules judge it: fewer than validity's 100 measured requests is an unstable p99, whatever stopped it
    assert any("p99 unstable" in r for r in point.invalid_reasons)
