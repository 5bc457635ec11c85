"""`bench plan` pricing (issue 22): estimates from earlier runs of the same model and hardware,
the stated fallback, budget trimming in its stated order or refusal, estimate vs actual."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from bench.catalog import get_hardware
from bench.errors import ConfigError
from bench.plan.budget import Budget, plan_seconds, trim_plan
from bench.plan.preflight import ENGINE_START_S, estimate_point_s
from bench.results.estimate import estimate_plan, priced_plan, read_history
from bench.run.runner import execute
from bench.testing.fake_server import FakeServer, FakeServerConfig
from tests.test_runner_fast import endpoint, make_env, make_plan

CPU = get_hardware("cpu-host")


def _two_config_plan(n_points=3):
    plan = make_plan([endpoint("http://127.0.0.1:1"), endpoint("http://127.0.0.1:2")], n_points=n_points)
    return plan.model_copy(update={"n_devices": 2})


def test_no_history_falls_back_to_the_stated_model():
    plan = _two_config_plan()
    est = estimate_plan(plan, CPU, [])
    assert set(est.basis.values()) == {"fallback"}
    assert est.start_s == {c.config_id(): ENGINE_START_S["cpu"] for c in plan.engine_configs}
    p = plan.points[0]
    from bench.catalog import get_model

    assert est.point_s[p.point_id] == estimate_point_s(p, plan.engine_configs[0], get_model("tiny-llama"), CPU)
    assert est.device_hours == pytest.approx(est.total_s / 3600 * 2)
    assert est.usd == pytest.approx(est.device_hours * 0.0864)
    assert estimate_plan(plan, CPU, [], usd_per_device_h=2.0).usd == pytest.approx(est.device_hours * 2.0)


def test_budget_drops_points_from_the_end_and_then_the_configuration_start():
    plan = _two_config_plan()
    first, second = (c.config_id() for c in plan.engine_configs)
    start_s = {first: 100.0, second: 100.0}
    point_s = {p.point_id: 60.0 for p in plan.points}  # whole plan: 200 + 6 x 60 = 560 s on 2 devices
    assert plan_seconds(plan, start_s, point_s) == 560.0
    h = 2 / 3600  # device-hours per second of this 2-device box
    kept = trim_plan(plan, Budget(device_hours=500 * h), start_s, point_s, usd_per_device_h=None)
    assert [p.point_id for p in kept.points] == [p.point_id for p in plan.points[:5]]  # the last point went
    kept = trim_plan(plan, Budget(device_hours=300 * h), start_s, point_s, usd_per_device_h=None)
    assert [p.engine_config_id for p in kept.points] == [first] * 3  # 100 + 3 x 60 = 280 s
    assert [c.config_id() for c in kept.engine_configs] == [first]
    assert [c.config_id() for c in kept.skipped_engine_configs] == [second]
    assert len(kept.skipped) == 3 and all(s.reason.startswith("over budget") for s in kept.skipped)
    usd = trim_plan(plan, Budget(usd=280 * h * 1.0), start_s, point_s, usd_per_device_h=1.0)
    assert len(usd.points) == 3
    assert trim_plan(plan, Budget(usd=1e9), start_s, point_s, usd_per_device_h=1.0) is plan
    with pytest.raises(ConfigError, match="not even the first point fits"):
        trim_plan(plan, Budget(device_hours=159 * h), start_s, point_s, usd_per_device_h=None)
    with pytest.raises(ConfigError, match="needs a rental price"):
        trim_plan(plan, Budget(usd=1.0), start_s, point_s, usd_per_device_h=None)


@pytest.mark.slow
def test_estimates_come_from_an_earlier_run_of_the_same_model_and_the_run_records_its_error(tmp_path):
    runs = tmp_path / "runs"
    env = make_env(hardware=CPU)
    with FakeServer(FakeServerConfig(ttft_s=0.02, itl_s=0.01)) as server:
        plan = make_plan([endpoint(server.base_url)], n_points=2, n_requests=6, telemetry="none")
        execute(plan, tmp_path / "warm", env)  # this process's first run pays its imports: not history
        first = execute(plan, runs / "20260101T000000Z_a", env)
        history = read_history(runs)
        assert [r.run_id for r in history] == [first.run_id]
        _, est = priced_plan(plan, CPU, history)
        assert set(est.basis.values()) == {"same load", "same model"}  # points by their load, the start by its model
        second = execute(plan, runs / "20260101T000100Z_b", env, estimate=est)
    check = second.timing.plan_check
    assert check.actual_s == second.timing.wall_s and check.estimate_s == pytest.approx(est.total_s)
    assert check.error == pytest.approx((est.total_s - check.actual_s) / check.actual_s)
    assert abs(check.error) < 0.5, check  # the same fake server, the same plan: the estimate is close
    other_hw = estimate_plan(plan, get_hardware("h100-sxm"), history)
    assert set(other_hw.basis.values()) == {"fallback"}  # another hardware's runs never price this one


def test_bench_plan_prints_the_price_and_refuses_a_budget_nothing_fits(tmp_path):
    from bench.cli import cli as main

    runner = CliRunner()
    ok = runner.invoke(main, ["plan", "sweeps/cpu-tiny.yaml", "--hardware", "cpu-host", "--history", str(tmp_path),
                              "--price-usd-h", "2"])
    assert ok.exit_code == 0, ok.output
    assert "device-h, $" in ok.output and "at 2 $/device-h" in ok.output and "fallback" in ok.output
    trimmed = runner.invoke(main, ["plan", "sweeps/cpu-tiny.yaml", "--hardware", "cpu-host", "--history",
                                   str(tmp_path), "--budget-h", "0.025"])
    assert trimmed.exit_code == 0, trimmed.output
    assert "over budget" in trimmed.output
    refused = runner.invoke(main, ["plan", "sweeps/cpu-tiny.yaml", "--hardware", "cpu-host", "--history",
                                   str(tmp_path), "--budget-usd", "0.000001"])
    assert refused.exit_code != 0 and "bench: error: over budget" in refused.output
