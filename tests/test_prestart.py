"""`--prestart` (issue 22 item 2): the next configuration's engine starts on spare devices while
the current one measures. The device plan (examples and a property over many plans: two engines
alive at once never share a device), and whole sweeps on a fake 2-GPU host with fake SGLang
engines (real child processes whose start takes a known time, bench.testing.fake_sglang)."""

from __future__ import annotations

import json

import psutil
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.errors import ConfigError
from bench.plan import EngineConfig, Plan, PointSpec
from bench.results.timing import EngineStart, PointTiming, run_timing
from bench.run.devices import plan_devices
from bench.run.events import Notice, PointDone
from bench.run.prestart import prestart_devices
from bench.run.runner import execute

FAKE_MODULE = "bench.testing.fake_sglang"
START_S = 2.0  # the pre-started engine answers /health this long after its process starts
FIRST_START_S = 0.2  # the first engine's start (nothing runs beside it: no need to be long)


def _cfg(tp=1, gpus=None, tag=""):
    return EngineConfig(model="tiny-llama", tensor_parallel_size=tp, gpus=gpus, extra_args={"tag": tag} if tag else {})


def _plan_ahead(configs, visible):
    ahead = prestart_devices(configs, visible, plan_devices(configs, visible))
    return {c.extra_args["tag"]: ahead[c.config_id()] for c in configs if c.config_id() in ahead}


def test_two_tp1_configs_on_two_devices_the_second_starts_on_the_other():
    assert _plan_ahead([_cfg(tag="a"), _cfg(tag="b")], [0, 1]) == {"b": [1]}


def test_each_config_takes_what_the_one_before_leaves_free():
    configs = [_cfg(tag="a"), _cfg(tag="b"), _cfg(tag="c"), _cfg(2, tag="d")]
    # b beside a (on 0), c beside b (on 1), d (two devices) beside c: 1 and 2 of 0..3
    assert _plan_ahead(configs, [0, 1, 2, 3]) == {"b": [1], "c": [0], "d": [1, 2]}


def test_no_room_or_explicit_devices_in_use_means_no_prestart():
    assert _plan_ahead([_cfg(2, tag="a"), _cfg(2, tag="b")], [0, 1]) == {}  # the box is full
    assert _plan_ahead([_cfg(gpus=[0], tag="a"), _cfg(gpus=[0], tag="b")], [0, 1]) == {}  # its own gpus are busy
    assert _plan_ahead([_cfg(gpus=[0], tag="a"), _cfg(gpus=[1], tag="b")], [0, 1]) == {"b": [1]}  # kept
    batch = EngineConfig(model="tiny-llama", engine="vllm-offline", extra_args={"tag": "b"})
    assert _plan_ahead([_cfg(tag="a"), batch], [0, 1]) == {}  # loads inside bench's worker: never beside a measurement


def test_prestart_on_a_cpu_host_is_refused():
    with pytest.raises(ConfigError, match="--prestart needs GPUs"):
        prestart_devices([_cfg(tag="a"), _cfg(tag="b")], None, {})


@st.composite
def _plans(draw):
    n = draw(st.integers(1, 8))
    visible = sorted(draw(st.sets(st.integers(0, 9), min_size=n, max_size=n)))
    configs = []
    for i in range(draw(st.integers(1, 7))):
        tp = draw(st.sampled_from([1, 2, 4]))
        if tp > n:
            tp = 1
        gpus = sorted(draw(st.sets(st.sampled_from(visible), min_size=tp, max_size=tp))) if draw(st.booleans()) else None
        configs.append(_cfg(tp, gpus=gpus, tag=str(i)))
    return configs, visible


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(_plans())
def test_two_engines_alive_at_once_never_share_a_device(drawn):
    """Engines alive at once: configuration i and i+1 when i+1 is pre-started (i+2 starts only
    after i+1 is ready, when i has stopped). Their devices are disjoint, every device is visible,
    each has its configuration's count, and explicit gpus are kept."""
    configs, visible = drawn
    devices = plan_devices(configs, visible)
    ahead = prestart_devices(configs, visible, devices)
    held = {c.config_id(): ahead.get(c.config_id(), devices[c.config_id()]) for c in configs}
    for prev, cfg in zip(configs, configs[1:], strict=False):
        cid = cfg.config_id()
        if cid in ahead:
            assert not set(held[prev.config_id()]) & set(ahead[cid]), (prev, cfg, held)
            assert len(ahead[cid]) == cfg.n_gpus and set(ahead[cid]) <= set(visible)
            if cfg.gpus:
                assert ahead[cid] == list(cfg.gpus)
        elif not cfg.gpus and prev.n_gpus + cfg.n_gpus <= len(visible):
            pytest.fail(f"{cid} had room beside {prev.config_id()} and was not pre-started")


def test_a_prestarted_start_counts_once_on_the_critical_path_and_old_files_read():
    points = [PointTiming(window_s=10.0)]
    starts = [EngineStart(config_id="a", start_s=10.0), EngineStart(config_id="b", start_s=9.0,
                                                                    prestart_during="a", hidden_s=7.0)]
    t = run_timing(points, wall_s=32.0, hardware=None, n_devices=2, engine_starts=starts)
    assert t.prestart_hidden_s == 7.0 and t.start_s == 12.0  # 10 + (9 - 7)
    assert t.other_s == pytest.approx(32.0 - 12.0 - 10.0)
    old = EngineStart.model_validate({"config_id": "a", "start_s": 5.0})  # a file from before --prestart
    assert old.hidden_s is None and run_timing([], wall_s=6.0, hardware=None, n_devices=1,
                                               engine_starts=[old]).start_s == 5.0


# -- whole runs: fake SGLang engines on a fake 2-GPU host ------------------------------------

def _env(model_cache):
    from bench.run.environment import RunEnvironment
    from bench.telemetry.fake_nvml import FakeNvmlTelemetry
    from bench.testing.fake_device import fake_device

    return RunEnvironment(device=fake_device("nvidia", 2), hardware=None, cache_dir=model_cache,
                          telemetry_factory=FakeNvmlTelemetry([100.0, 200.0]), idle_baseline_s=0.05,
                          startup_timeout_s=60.0)


def _sweep(configs, n_points=2, n_requests=8):
    """Points of about 0.1 s of load each (fake_sglang: 10 ms to the first token, then 2 ms each):
    what is tested is where they fall against the next engine's START_S start, not their length."""
    points = [PointSpec(point_id=f"{c.config_id()}_w{i}_c2_r0", engine_config_id=c.config_id(),
                        workload={"kind": "random", "input_len": 8, "output_len": 16},
                        load={"kind": "concurrency", "concurrency": 2}, n_warmup=1, n_requests=n_requests)
              for c in configs for i in range(n_points)]
    return Plan(engine_configs=configs, points=points, name="prestart", n_devices=2, telemetry="nvml")


@pytest.fixture
def fake_sglang(monkeypatch):
    from bench.engines.sglang_server import SglangServer

    monkeypatch.setattr(SglangServer, "server_module", FAKE_MODULE)


def _two(fail_second=False):
    """a starts at once; b, pre-started beside a's points, takes START_S, or fails at once
    (fake_sglang's flags)."""
    a = EngineConfig(model="tiny-llama", engine="sglang", max_num_seqs=4, extra_args={"fake_startup_s": FIRST_START_S})
    b_start = {"fake_startup_s": FIRST_START_S, "fake_fail_start": True} if fail_second else {"fake_startup_s": START_S}
    b = EngineConfig(model="tiny-llama", engine="sglang", max_num_seqs=8, extra_args=b_start)
    return a, b


def _engines_left(run_dir) -> list:
    """Fake engines still running below this process, and engine records left in the run folder."""
    alive = [p for p in psutil.Process().children(recursive=True)
             if FAKE_MODULE in " ".join(_cmdline(p)) and p.status() != psutil.STATUS_ZOMBIE]
    return alive + sorted(run_dir.glob(".*.proc.json"))


def _cmdline(p) -> list[str]:
    try:
        return p.cmdline()
    except psutil.Error:
        return []


@pytest.mark.slow
def test_the_second_engine_starts_while_the_first_measures_on_the_other_device(tmp_path, model_cache, fake_sglang):
    a, b = _two()
    plan = _sweep([a, b])
    result = execute(plan, tmp_path, _env(model_cache), prestart=True)
    assert [p.status for p in result.points] == ["ok"] * 4, [p.error for p in result.points]
    on_disk = json.loads((tmp_path / "run.json").read_text())
    rec = on_disk["extra"]["prestart"][b.config_id()]
    assert rec["devices"] == [1] and rec["during"] == a.config_id() and rec["ready_utc"] >= rec["started_utc"]
    a_points = [p for p in on_disk["points"] if p["engine_config_id"] == a.config_id()]
    b_points = [p for p in on_disk["points"] if p["engine_config_id"] == b.config_id()]
    # launched before a's last point ended, from the recorded stamps (one perf_counter clock)
    assert rec["launch_t_s"] < a_points[-1]["window"]["t1_s"]
    assert rec["ready_t_s"] - rec["launch_t_s"] >= START_S
    # never two engines on one device: a on 0, b on 1; energy and idle power follow
    assert [p["energy"]["devices"] for p in a_points] == [[0], [0]]
    assert [p["energy"]["devices"] for p in b_points] == [[1], [1]]
    assert on_disk["config"]["engine_configs"][b.config_id()]["devices"] == [1]
    idle = on_disk["extra"]["idle_baseline"][a.config_id()]
    assert "other_devices" not in idle  # device 1 holds b's start: not an idle device beside a
    # the points that shared the host with b's start say so (and stay valid for that reason)
    for p in a_points:
        w = p["window"]
        overlapped = rec["launch_t_s"] < w["t1_s"] and rec["ready_t_s"] > w["t0_s"]
        assert p.get("engine_starting_beside") == (b.config_id() if overlapped else None)
    assert a_points[0]["engine_starting_beside"] == b.config_id()  # b's start takes START_S: a's first window
    assert all("engine_starting_beside" not in p for p in b_points)
    # the time breakdown: b's start, launch to healthy, with the part hidden behind a's measurement
    t = result.timing
    b_start = next(s for s in t.engine_starts if s.config_id == b.config_id())
    assert b_start.prestart_during == a.config_id() and 0 < b_start.hidden_s <= b_start.start_s
    assert t.prestart_hidden_s == pytest.approx(b_start.hidden_s)
    assert t.start_s == pytest.approx(sum(s.start_s for s in t.engine_starts) - b_start.hidden_s)
    assert _engines_left(tmp_path) == []


@pytest.mark.slow
def test_a_failed_prestart_fails_only_its_configuration_with_the_usual_reason(tmp_path, model_cache, fake_sglang):
    a, b = _two(fail_second=True)
    result = execute(_sweep([a, b]), tmp_path, _env(model_cache), prestart=True)
    by_config = {c.config_id(): [p for p in result.points if p.engine_config_id == c.config_id()] for c in (a, b)}
    assert [p.status for p in by_config[a.config_id()]] == ["ok", "ok"]
    assert [p.status for p in by_config[b.config_id()]] == ["failed", "failed"]
    assert all(p.error.startswith("engine failed to start: SGLang server exited with code 1")
               for p in by_config[b.config_id()])
    assert result.status == "partial"
    assert "exited with code 1" in result.extra["prestart"][b.config_id()]["error"]
    assert _engines_left(tmp_path) == []


@pytest.mark.slow
@pytest.mark.parametrize("when", ["mid_start", "after_first_point"])
@pytest.mark.parametrize("raised", [KeyboardInterrupt, RuntimeError])
def test_ctrl_c_or_an_error_mid_run_leaves_no_engine(tmp_path, model_cache, fake_sglang, when, raised):
    """Raised from the run's watcher: while b's engine is starting (just launched), or after a's
    first point (b starting or ready, never taken). Every measured point is kept, no engine is left."""
    a, b = _two()

    def on_event(event):
        if when == "mid_start" and isinstance(event, Notice) and event.text.startswith("pre-starting"):
            raise raised("stop here")
        if when == "after_first_point" and isinstance(event, PointDone):
            raise raised("stop here")

    with pytest.raises(raised):
        execute(_sweep([a, b]), tmp_path, _env(model_cache), on_event=on_event, prestart=True)
    on_disk = json.loads((tmp_path / "run.json").read_text())
    assert on_disk["status"] == ("interrupted" if raised is KeyboardInterrupt else "failed")
    assert b.config_id() in on_disk["extra"]["prestart"]
    if when == "after_first_point":
        assert [p["status"] for p in on_disk["points"]] == ["ok"]
    assert _engines_left(tmp_path) == []


def test_the_sweep_key_prestart_turns_it_on():
    from pathlib import Path

    from bench.plan.request import RunRequest

    sweep = Path(__file__).resolve().parents[1] / "sweeps" / "cpu-tiny.yaml"
    assert not RunRequest.from_file(sweep).wants_prestart
    assert RunRequest.from_file(sweep, {"prestart": True}).wants_prestart
    assert RunRequest.from_file(sweep, prestart=True).wants_prestart
