"""The runner without vLLM: the endpoint engine against the fake server, energy from a fake
8-GPU NVML host whose boards draw different power (issue 8, fast tier).

Board i draws WATTS[i] W, so the average power of a point tells which boards were measured."""

from __future__ import annotations

import json

import pytest

from bench.plan import EngineConfig, Plan, PointSpec
from bench.run.environment import RunEnvironment
from bench.run.events import PointDone, PointStarting, RequestsDone
from bench.run.runner import execute
from bench.telemetry.fake_nvml import FakeNvmlTelemetry
from bench.testing.fake_device import fake_device
from bench.testing.fake_server import FakeServer, FakeServerConfig

WATTS = [100.0, 110.0, 120.0, 130.0, 140.0, 150.0, 160.0, 170.0]
FAST = FakeServerConfig(ttft_s=0.01, itl_s=0.004)


def make_plan(configs: list[EngineConfig], n_points: int = 1, n_requests: int = 6, telemetry: str = "nvml") -> Plan:
    points = []
    for cfg in configs:
        for i in range(n_points):
            points.append(PointSpec(
                point_id=f"{cfg.config_id()}_w{i}_c2_r0", engine_config_id=cfg.config_id(),
                workload={"kind": "random", "input_len": 8, "output_len": 12}, load={"kind": "concurrency", "concurrency": 2},
                n_warmup=1, n_requests=n_requests))
    return Plan(engine_configs=configs, points=points, name="fast", n_devices=8, telemetry=telemetry)


def make_env(watts=WATTS, visible=None, hardware=None) -> RunEnvironment:
    return RunEnvironment(device=fake_device("nvidia", len(watts)), hardware=hardware,
                          telemetry_factory=FakeNvmlTelemetry(watts), idle_baseline_s=0.05,
                          visible=tuple(visible) if visible is not None else None)


def endpoint(url: str, **fields) -> EngineConfig:
    return EngineConfig(model="tiny-llama", engine="endpoint", endpoint_url=url, **fields)


def _power(point) -> float:
    energy = point.energy if isinstance(point.energy, dict) else point.energy.model_dump()
    return energy["avg_power_w"], energy


@pytest.fixture(scope="module")
def server():
    with FakeServer(FAST) as srv:
        yield srv


@pytest.mark.slow
def test_tp1_on_device_3_measures_device_3_only(server, tmp_path):
    cfg = endpoint(server.base_url, gpus=[3])
    result = execute(make_plan([cfg]), tmp_path, make_env())
    (point,) = result.points
    assert point.status == "ok", point.error
    power_w, energy = _power(point)
    assert power_w == pytest.approx(WATTS[3], rel=0.01)
    assert energy["devices"] == [3] and energy["n_devices"] == 1 and len(energy["per_gpu_energy_j"]) == 1
    assert result.config.engine_configs[cfg.config_id()].devices == [3]
    idle = result.extra["idle_baseline"][cfg.config_id()]
    assert idle["idle_power_w"] == pytest.approx(WATTS[3], rel=0.02)
    # the other seven boards are recorded beside, never added
    assert idle["other_devices"] == [0, 1, 2, 4, 5, 6, 7]
    assert idle["other_devices_idle_w"] == pytest.approx(sum(WATTS) - WATTS[3], rel=0.02)


@pytest.mark.slow
def test_tp2_on_devices_4_5_sums_those_two(server, tmp_path):
    cfg = endpoint(server.base_url, tensor_parallel_size=2, gpus=[4, 5])
    result = execute(make_plan([cfg]), tmp_path, make_env())
    power_w, energy = _power(result.points[0])
    assert power_w == pytest.approx(WATTS[4] + WATTS[5], rel=0.01)
    assert energy["devices"] == [4, 5] and energy["n_devices"] == 2


@pytest.mark.slow
def test_dp2_tp2_occupies_four_devices_and_is_measured_on_them(server, tmp_path):
    cfg = endpoint(server.base_url, tensor_parallel_size=2, data_parallel_size=2)
    result = execute(make_plan([cfg]), tmp_path, make_env())
    point = result.points[0]
    power_w, energy = _power(point)
    assert cfg.n_gpus == 4
    assert energy["devices"] == [0, 1, 2, 3]
    assert power_w == pytest.approx(sum(WATTS[:4]), rel=0.01)
    metrics = point.metrics if isinstance(point.metrics, dict) else point.metrics.model_dump()
    assert metrics["output_tok_s_per_gpu"] == pytest.approx(metrics["output_tok_s"] / 4)


@pytest.mark.slow
def test_automatic_devices_honour_cuda_visible_devices(server, tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "6,7")
    cfg = endpoint(server.base_url)
    result = execute(make_plan([cfg]), tmp_path, make_env())
    power_w, energy = _power(result.points[0])
    assert energy["devices"] == [6] and power_w == pytest.approx(WATTS[6], rel=0.01)


@pytest.mark.slow
def test_nominal_meter_counts_the_engine_devices_only(server, tmp_path):
    from bench.catalog import get_hardware

    hw = get_hardware("h100-sxm")
    cfg = endpoint(server.base_url, tensor_parallel_size=2, gpus=[2, 3])
    result = execute(make_plan([cfg], telemetry="nominal"), tmp_path, make_env(hardware=hw))
    power_w, energy = _power(result.points[0])
    assert energy["energy_method"] == "nominal" and energy["n_devices"] == 2
    assert power_w == pytest.approx(2 * hw.power_w)


def test_device_index_missing_on_the_box_is_refused(server, tmp_path):
    from bench.errors import ConfigError

    cfg = endpoint(server.base_url, gpus=[7])
    with pytest.raises(ConfigError, match=r"\[7\] do not exist"):
        execute(make_plan([cfg]), tmp_path, make_env(watts=WATTS[:4]))


@pytest.mark.slow
def test_engine_death_mid_point_is_recorded_and_the_engine_restarted(tmp_path):
    """The server process dies during the first point; the point is failed with the reason,
    the engine is restarted (the server comes back on the same port) and the next point runs."""
    srv = FakeServer(FAST, mode="process").__enter__()
    port = srv.port
    cfg = endpoint(srv.base_url)
    plan = make_plan([cfg], n_points=2, n_requests=20)
    state = {"killed": False, "revived": None}

    def on_event(event):
        if isinstance(event, RequestsDone) and event.done >= 4 and not state["killed"]:
            state["killed"] = True
            srv.__exit__(None, None, None)
        if isinstance(event, PointDone) and event.point.status == "failed" and state["revived"] is None:
            state["revived"] = FakeServer(FAST, mode="process", port=port).__enter__()

    try:
        result = execute(plan, tmp_path, make_env(), on_event=on_event)
    finally:
        if state["revived"] is not None:
            state["revived"].__exit__(None, None, None)
    first, second = result.points
    assert first.status == "failed" and "engine died" in first.error
    # issue 11 defect 5: the requests that finished before the death are on disk with the failed point
    from bench.results import read_requests

    kept = read_requests(tmp_path, first)
    assert sum(1 for r in kept if r.ok) >= 3 and any(not r.ok for r in kept)
    assert first.n_requests == sum(1 for r in kept if r.phase == "measured") and first.n_failed >= 1
    assert second.status == "ok", second.error
    assert len(result.extra["idle_baseline"]) == 1  # re-measured after the restart, same config key
    on_disk = json.loads((tmp_path / "run.json").read_text())
    assert [p["status"] for p in on_disk["points"]] == ["failed", "ok"]


@pytest.mark.slow
def test_resume_runs_only_the_missing_points(server, tmp_path):
    cfg = endpoint(server.base_url)
    plan = make_plan([cfg], n_points=2)
    seen = []

    def stop_after_first(event):
        if isinstance(event, PointDone):
            seen.append(event.point_id)
            raise KeyboardInterrupt

    import pandas as pd

    with pytest.raises(KeyboardInterrupt):
        execute(plan, tmp_path, make_env(), on_event=stop_after_first)
    assert json.loads((tmp_path / "run.json").read_text())["status"] == "interrupted"
    first_power = pd.read_parquet(tmp_path / "power.parquet")
    result = execute(plan, tmp_path, make_env(), resume=True, on_event=lambda e: seen.append(e.point_id) if isinstance(e, PointDone) else None)
    assert result.status == "complete"
    assert [p.point_id for p in result.points] == [p.point_id for p in plan.points]
    assert seen == [plan.points[0].point_id, plan.points[1].point_id]  # the first point ran once
    power = pd.read_parquet(tmp_path / "power.parquet")  # the first session's samples are kept
    assert len(power) > len(first_power) > 0
    assert power.iloc[:len(first_power)].reset_index(drop=True).equals(first_power)


@pytest.mark.slow
def test_a_locked_run_folder_refuses_a_second_process_and_a_free_one_is_stale(server, tmp_path):
    """Issue 11 defect 2: one process per run folder; a `running` run whose lock is free is stale."""
    import subprocess
    import sys

    from bench.run.lock import RunLocked, run_state

    cfg = endpoint(server.base_url)
    plan = make_plan([cfg])
    hold = ("import sys, time; from bench.run.lock import RunLock; RunLock(sys.argv[1]).acquire(); "
            "print('held', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", hold, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert run_state(tmp_path, "running") == "running"
        with pytest.raises(RunLocked, match=rf"in use by pid {holder.pid} on "):
            execute(plan, tmp_path, make_env(), resume=True)
    finally:
        holder.kill()
        holder.wait()
    assert run_state(tmp_path, "running") == "stale (process gone)"
    # a run.json left "running" by a process that died is resumable, and says so
    (tmp_path / "run.json").unlink(missing_ok=True)
    first = execute(plan, tmp_path, make_env())
    on_disk = json.loads((tmp_path / "run.json").read_text())
    on_disk["status"] = "running"
    (tmp_path / "run.json").write_text(json.dumps(on_disk))
    again = execute(plan, tmp_path, make_env(), resume=True)
    assert first.status == "complete" and again.status == "complete"
    assert again.extra["resumed_from"] == ["stale (process gone)"]


@pytest.mark.slow
def test_engine_death_in_the_last_point_ends_partial_not_complete(tmp_path):
    """Issue 11 defect 6: a real engine death in the last point must not end `complete` / exit 0."""
    from bench.run.status import exit_code

    srv = FakeServer(FAST, mode="process").__enter__()
    cfg = endpoint(srv.base_url)
    plan = make_plan([cfg], n_points=2, n_requests=20)
    seen = []

    def kill_in_last_point(event):
        if isinstance(event, PointStarting):
            seen.append(event.point_id)
        if isinstance(event, RequestsDone) and len(seen) == 2 and event.done >= 4 and srv.pids:
            srv.__exit__(None, None, None)

    try:
        result = execute(plan, tmp_path, make_env(), on_event=kill_in_last_point)
    finally:
        srv.__exit__(None, None, None)
    assert [p.status for p in result.points] == ["ok", "failed"]
    assert result.status == "partial" and "1 ok, 1 failed" in result.error
    assert exit_code(result.status) == 4
    assert json.loads((tmp_path / "run.json").read_text())["status"] == "partial"


def test_final_status_and_exit_codes():
    from types import SimpleNamespace as P

    from bench.run.status import exit_code, final_status

    assert final_status([P(status="ok"), P(status="ok")]) == ("complete", None)
    assert final_status([P(status="ok"), P(status="skipped")])[0] == "partial"
    assert final_status([P(status="failed"), P(status="skipped")])[0] == "failed"
    assert final_status([])[0] == "failed"
    assert [exit_code(s) for s in ("complete", "partial", "failed", "interrupted")] == [0, 4, 1, 130]


@pytest.mark.slow
def test_report_shows_a_dead_writers_run_as_stale(server, tmp_path):
    """Issue 11 defect 2: `bench report` tells a live run from one whose process is gone."""
    from click.testing import CliRunner

    from bench.cli import cli

    execute(make_plan([endpoint(server.base_url)]), tmp_path, make_env())
    on_disk = json.loads((tmp_path / "run.json").read_text())
    on_disk["status"] = "running"  # what a SIGKILLed run leaves behind
    (tmp_path / "run.json").write_text(json.dumps(on_disk))
    res = CliRunner().invoke(cli, ["report", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "status stale (process gone)" in res.output


def test_an_engine_with_only_the_protocols_members_runs_through_the_engine_session(server, tmp_path, monkeypatch):
    """Replaces a test that read the runner's source for `hasattr(`: an engine that has exactly
    the ServerEngine protocol's members (no process id, no request headers) is started,
    measured and stopped by the engine session, its missing process id told as None."""
    from bench.engines.base import ServerEngine
    from bench.run import engine_session
    from bench.run.events import EngineReady

    class Bare:  # the protocol's members only (bench.engines.base.ServerEngine)
        name, kind, n_gpus, log_path = "bare", "server", 1, tmp_path / "bare.log"
        base_url, served_model = server.base_url, FAST.model
        stopped = False

        def version(self) -> str:
            return "bare-1"

        def start(self) -> None: ...
        def alive(self) -> bool: return True
        def healthy(self) -> bool: return True
        def server_counters(self): return None
        def reset_prefix_cache(self) -> str: return "not supported"
        def log_tail(self, n: int = 20) -> str: return ""

        def stop(self) -> None:
            Bare.stopped = True

    engine: ServerEngine = Bare()  # a type checker holds Bare to the protocol
    monkeypatch.setattr(engine_session, "start_engine", lambda cfg, env, run_dir, devices=None: (engine, None))
    events = []
    result = execute(make_plan([endpoint(server.base_url)], telemetry="none"), tmp_path, make_env(), on_event=events.append)
    assert [p.status for p in result.points] == ["ok"], result.points[0].error
    assert [e.pid for e in events if isinstance(e, EngineReady)] == [None] and Bare.stopped
    assert next(iter(result.extra["engine_version"].values())) == "bare-1"
