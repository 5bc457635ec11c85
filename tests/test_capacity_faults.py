"""Capacity search tells a crash from a miss (issue 18, defect 5): a probe whose point failed
(engine died, client worker died) is retried, never counted as an SLO miss; a probe that keeps
failing stops the search without claiming a boundary, and the exit code follows the run status."""

from __future__ import annotations

import pytest

from bench.engines.base import EngineDied
from bench.measure.groups import Metrics
from bench.plan import EngineConfig, Plan, PointSpec
from bench.plan.capacity import CapacitySearch, parse_slo
from bench.results import PointResult
from bench.results.point import failed_point
from bench.run import capacity as cap
from bench.testing.fake_server import FakeServer, FakeServerConfig

FAST = FakeServerConfig(ttft_s=0.005, itl_s=0.001)


def _template(url: str = "http://127.0.0.1:9") -> tuple[EngineConfig, PointSpec]:
    cfg = EngineConfig(model="tiny-llama", engine="endpoint", endpoint_url=url)
    template = PointSpec(point_id=f"{cfg.config_id()}_rand-8-4_c1_r0", engine_config_id=cfg.config_id(),
                         workload={"kind": "random", "input_len": 8, "output_len": 4},
                         load={"kind": "concurrency", "concurrency": 1}, n_warmup=1, n_requests=20)
    return cfg, template


def _measured(spec: PointSpec, ttft_s_p95: float) -> PointResult:
    return PointResult(point_id=spec.point_id, engine_config_id=spec.engine_config_id, load=spec.load,
                       workload=spec.workload, status="ok", valid=True, metrics=Metrics(ttft_s_p95=ttft_s_p95))


def _drive(run: cap.CapacityRun, outcome) -> list[str]:
    """Feed the search as the runner does (one pending list, `more` after each probe); the ids measured."""
    pending, measured = run.first(), []
    while pending:
        spec = pending.pop(0)
        measured.append(spec.point_id)
        pending.extend(run.more(outcome(spec)))
    return measured


def _level(spec: PointSpec) -> int:
    return spec.load.concurrency


def _crashing_at(level: int, times: int):
    """Probes meet a 1 s ttft p95 SLO up to 10 in flight (ttft = 0.1 s x level); the probe at `level`
    fails as an engine death does, its first `times` attempts."""
    seen: dict[int, int] = {}

    def outcome(spec: PointSpec) -> PointResult:
        if _level(spec) == level and seen.setdefault(level, 0) < times:
            seen[level] += 1
            return failed_point(spec, "failed", "engine died: engine exited during point; log tail: killed")
        return _measured(spec, 0.1 * _level(spec))

    return outcome


def _search(**kw) -> CapacitySearch:
    return CapacitySearch(parse_slo("ttft_p95=1s"), kind="concurrency", **({"repeats": 1, "start": 2} | kw))


def test_a_probe_that_crashed_is_retried_and_the_true_boundary_is_found():
    _, template = _template()
    run = cap.CapacityRun(_search(), template)
    measured = _drive(run, _crashing_at(8, times=1))
    assert run.search.boundary == 10.0 and run.search.hi == 11.0  # base: the crash was a miss, boundary 7
    tags = [m.rsplit("_", 2)[-2:] for m in measured]
    assert ["capacity-c8", "r0"] in tags and ["capacity-c8", "r0-retry1"] in tags
    summary = run.summary()
    assert summary.boundary == 10.0 and summary.stopped is None
    step8 = next(s for s in summary.steps if s.level == 8.0)
    assert step8.passed and "retried" in step8.why  # the crash is told, never as a miss


def test_a_probe_that_keeps_crashing_stops_the_search_without_a_boundary():
    _, template = _template()
    run = cap.CapacityRun(_search(), template)
    measured = _drive(run, _crashing_at(8, times=99))
    c8 = [m for m in measured if "capacity-c8_" in m]
    assert len(c8) == 1 + cap.PROBE_RETRIES  # the stated number of retries, then no more
    assert measured[-1] == c8[-1]  # nothing measured after it
    summary = run.summary()
    assert summary.boundary is None  # base: 7 was reported as the boundary
    assert summary.last_passing == 4.0
    assert "capacity-c8_r0" in summary.stopped and "engine died" in summary.stopped
    assert all(s.level != 8.0 for s in summary.steps)  # no verdict from a probe that never measured


def test_a_resumed_search_reuses_the_retry_on_disk_and_measures_a_failed_probe_again():
    _, template = _template()
    first = cap.CapacityRun(_search(), template)
    results: dict[str, PointResult] = {}
    outcome = _crashing_at(8, times=1)

    def record(spec):
        results[spec.point_id] = outcome(spec)
        return results[spec.point_id]

    _drive(first, record)
    # on disk after a resume: what was measured ok (the runner drops failed points when resuming)
    done = {pid: pr for pid, pr in results.items() if pr.status == "ok"}
    again = cap.CapacityRun(_search(), template, done)
    assert again.first() == [] and again.search.boundary == 10.0  # everything reused, nothing measured
    # a failed probe handed in as "done" is measured again, never taken for a miss
    done_failed = {pid: pr for pid, pr in results.items() if "capacity-c8" not in pid or pr.status == "failed"}
    third = cap.CapacityRun(_search(), template, done_failed)
    todo = third.first()
    assert [p.point_id.rsplit("_", 2)[-2:] for p in todo] == [["capacity-c8", "r0"]]


def _plan(url: str):
    cfg, template = _template(url)
    return Plan(engine_configs=[cfg], points=[template], name="capacity", n_devices=1, telemetry="none")


def _env():
    from bench.run.environment import RunEnvironment
    from bench.testing.fake_device import fake_device

    return RunEnvironment(device=fake_device("cpu", name="test"), idle_baseline_s=0.0, client_workers=1)


@pytest.mark.slow
def test_an_engine_killed_during_a_probe_is_restarted_and_the_probe_retried(tmp_path):
    """The fake server (the engine) is killed during the first probe (c4) and comes back on its
    port; the probe runs again on the restarted engine and the search ends at the true boundary
    (every level meets a 1 s SLO on this server: the boundary is the maximum, 8)."""
    from bench.run.events import PointDone, PointStarting, RequestsDone
    from bench.run.runner import execute

    srv = FakeServer(FAST, mode="process").__enter__()
    port = srv.port
    state = {"killed": False, "revived": None}

    def on_event(event):
        if isinstance(event, PointStarting):
            state["point"] = event.point_id
        if (isinstance(event, RequestsDone) and event.done >= 20 and not state["killed"]
                and "capacity-c4_r0" in state.get("point", "")):
            state["killed"] = True
            srv.__exit__(None, None, None)
        if isinstance(event, PointDone) and event.point.status == "failed" and state["revived"] is None:
            state["revived"] = FakeServer(FAST, mode="process", port=port).__enter__()

    search = _search(start=4, max_level=8)
    try:
        result = execute(_plan(srv.base_url), tmp_path, _env(), search=search, on_event=on_event)
    finally:
        for s in (srv, state["revived"]):
            if s is not None:
                s.__exit__(None, None, None)
    (summary,) = result.extra["capacity"].values()
    by_id = {p.point_id.rsplit("_", 2)[-2] + "_" + p.point_id.rsplit("_", 1)[-1]: p for p in result.points}
    assert state["killed"] and by_id["capacity-c4_r0"].status == "failed"
    assert "engine died" in by_id["capacity-c4_r0"].error
    assert by_id["capacity-c4_r0-retry1"].status == "ok"  # measured again on the restarted engine (base: none)
    assert summary.get("stopped") is None
    # every verdict is the SLO and validity of a measured probe, never the crash
    step4 = next(s for s in summary["steps"] if s["level"] == 4.0)
    assert step4["passed"] == by_id["capacity-c4_r0-retry1"].valid
    if all(p.valid for p in result.points if p.status == "ok"):  # a loaded box can flag a probe (loop lag)
        assert summary["boundary"] == 8.0 and [s["level"] for s in summary["steps"]] == [4.0, 8.0]
    assert result.status == "partial"  # the failed attempt is kept, and said


def test_bench_capacity_exits_non_zero_and_claims_no_boundary_when_a_probe_keeps_failing(tmp_path, monkeypatch):
    """Every attempt of the first probe (c4) ends as an engine death (the runner's own path:
    EngineDied, restart, next point); the CLI says why there is no boundary and exits with the
    run's code: no probe measured, `failed`, 1."""
    from click.testing import CliRunner

    from bench.cli import cli
    from bench.run import engine_session

    real = engine_session.measure_point

    def dies_at_c4(point, *args, **kw):
        if point.load.concurrency == 4:
            raise EngineDied(f"engine exited during point {point.point_id}; log tail: Killed")
        return real(point, *args, **kw)

    monkeypatch.setattr(engine_session, "measure_point", dies_at_c4)
    with FakeServer(FAST, mode="thread") as srv:
        res = CliRunner().invoke(cli, [
            "capacity", "--engine", "endpoint", "--url", srv.base_url, "--slo", "ttft_p95=1s", "--load", "concurrency",
            "--start", "4", "--max", "8", "--repeats", "1", "--input-len", "8", "--output-len", "4",
            "--telemetry", "none", "--client-workers", "1", "--out", str(tmp_path)])
    assert res.exit_code == 1, res.output  # failed, as `bench run` and `bench sweep` exit (base: 0)
    assert not [ln for ln in res.output.splitlines() if ln.startswith("boundary:")]  # base: halved and found one
    assert "no boundary: the search stopped: probe" in res.output and "failed 3 times" in res.output


def test_a_probe_whose_every_request_failed_is_a_miss_not_a_crash():
    """Under overload every request can time out while the engine lives: the point is `failed`
    (no request succeeded, bench.run.status) but it was measured, so it is a verdict (a miss),
    not retried as a crash; the boundary is the level below it."""
    from bench.measure.groups import Metrics
    from bench.run.status import settle_point

    _, template = _template()
    run = cap.CapacityRun(_search(), template)

    def outcome(spec: PointSpec) -> PointResult:
        if _level(spec) < 8:
            return _measured(spec, 0.1 * _level(spec))
        pr = PointResult(point_id=spec.point_id, engine_config_id=spec.engine_config_id, load=spec.load,
                         workload=spec.workload, status="ok", valid=True, n_requests=20, n_failed=20,
                         error="timeout after 1 s", metrics=Metrics(n_measured=20, n_failed=20, error_rate=1.0))
        return settle_point(pr)

    measured = _drive(run, outcome)
    assert not any("retry" in m for m in measured)
    assert run.search.boundary == 7.0 and run.summary().stopped is None
