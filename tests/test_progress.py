"""The live progress lines of a run (issue 12): the point, requests in flight, output tok/s so
far, and the sweep's time left, drawn by tqdm on a stream; events as bench.run.runner emits them."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from bench.cli.progress import Progress, duration_text, point_postfix, sweep_eta_s
from bench.results import read_summary
from bench.run.events import (
    EngineReady,
    EngineStarting,
    PointDone,
    PointStarting,
    RequestsDone,
    RequestsStalled,
    RunPrepared,
)

RESULTS = Path(__file__).resolve().parent.parent / "results" / "cpu-host"


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_point_postfix_shows_what_the_event_carries():
    done = RequestsDone(done=5, total=10, in_flight=4, output_tokens=320, elapsed_s=4.0)
    assert point_postfix(done) == "4 in flight, 80.0 out tok/s so far"
    assert point_postfix(done, stalled=2) == "4 in flight, 80.0 out tok/s so far, 2 stalled"
    assert point_postfix(RequestsDone(done=5, total=10)) == ""  # a load that says no more: nothing invented
    assert point_postfix(RequestsDone(done=1, in_flight=1, output_tokens=0, elapsed_s=0.0)) == "1 in flight"
    assert point_postfix(None, stalled=1) == "1 stalled"  # before the first request finished


def test_sweep_eta_extrapolates_the_pace_so_far():
    assert sweep_eta_s(60.0, 2, 5) == pytest.approx(90.0)
    assert sweep_eta_s(10.0, 0.5, 3) == pytest.approx(50.0)
    assert sweep_eta_s(60.0, 5, 5) == 0.0
    assert sweep_eta_s(60.0, 0, 5) is None and sweep_eta_s(60.0, 1, None) is None and sweep_eta_s(0.0, 1, 3) is None
    assert [duration_text(s) for s in (0, 44.6, 192, 3900)] == ["0s", "45s", "3m12s", "1h05m"]


def test_a_sweep_drives_both_bars_with_in_flight_tok_s_and_eta():
    out, clock = io.StringIO(), Clock()
    progress = Progress(n_points=3, disable=False, file=out, clock=clock)
    progress.on_event(EngineStarting("c0", "tiny-llama"))
    progress.on_event(EngineReady("c0", pid=1))
    progress.on_event(PointStarting("p0", 10))
    assert progress.run_bar.postfix in (None, "")  # no pace yet, no made-up ETA
    clock.t += 4.0
    progress.on_event(RequestsDone(done=5, total=10, in_flight=4, output_tokens=320, elapsed_s=4.0))
    assert progress.point_bar.n == 5
    assert progress.point_bar.postfix == "4 in flight, 80.0 out tok/s so far"
    # half a point in 4 s, 2.5 points left
    assert progress.run_bar.postfix == "~20s left at the pace so far"
    progress.on_event(RequestsStalled(2))
    assert progress.point_bar.postfix == "4 in flight, 80.0 out tok/s so far, 2 stalled"
    clock.t += 6.0
    run = read_summary(RESULTS / "20261124T002601Z_run-tiny-llama")
    progress.on_event(PointDone(run.points[0]))
    assert progress.point_bar is None and progress.run_bar.n == 1
    assert progress.run_bar.postfix == "~20s left at the pace so far"  # 10 s a point, 2 left
    progress.close()
    text = out.getvalue()
    assert "starting engine for tiny-llama (c0) ..." in text
    assert "4 in flight, 80.0 out tok/s so far" in text and "~20s left at the pace so far" in text
    assert f"{run.points[0].point_id}: ok" in text


def test_live_lines_are_redrawn_at_most_every_interval_but_the_last_request_always():
    out, clock = io.StringIO(), Clock()
    progress = Progress(n_points=1, disable=False, file=out, clock=clock)
    progress.on_event(PointStarting("p0", 3))
    clock.t += 0.01
    progress.on_event(RequestsDone(done=1, total=3, in_flight=2, output_tokens=8, elapsed_s=1.0))
    assert progress.point_bar.postfix in (None, "")  # too soon after the point_start draw
    clock.t += 0.01
    progress.on_event(RequestsDone(done=3, total=3, in_flight=0, output_tokens=24, elapsed_s=1.0))
    assert progress.point_bar.postfix == "0 in flight, 24.0 out tok/s so far"
    progress.close()


def test_disabled_progress_takes_the_new_keys_and_draws_nothing():
    out = io.StringIO()
    progress = Progress(n_points=2, file=out)  # a StringIO is no terminal: disabled
    assert progress.disable
    progress.on_event(PointStarting("p0", 4))
    progress.on_event(RequestsDone(done=1, total=4, in_flight=3, output_tokens=8, elapsed_s=0.5))
    progress.on_event(RequestsDone(done=2, total=4))
    progress.close()
    assert out.getvalue() == ""


def test_the_prepared_run_writes_its_header_and_sizes_the_run_bar():
    """The run bar is sized from the plan the library built; a capacity search has no known size."""
    from bench.plan import EngineConfig, Plan, PointSpec

    cfg = EngineConfig(model="tiny-llama")
    points = [PointSpec(point_id=f"p{i}", engine_config_id=cfg.config_id(), workload={"kind": "random",
              "input_len": 8, "output_len": 4}, load={"kind": "concurrency", "concurrency": 1}, n_warmup=0,
              n_requests=1) for i in range(3)]
    plan = Plan(engine_configs=[cfg], points=points)
    out = io.StringIO()
    progress = Progress(disable=False, file=out, header=lambda ready: f"{ready.note} / {len(ready.plan.points)}")
    assert progress.run_bar is None
    progress.on_event(RunPrepared("device: cpu", plan, hardware=None))
    assert progress.run_bar.total == 3 and "device: cpu / 3" in out.getvalue()
    progress.on_event(RunPrepared("again", plan, hardware=None, search=True))
    assert progress.run_bar is None and progress.n_points is None
    progress.close()
