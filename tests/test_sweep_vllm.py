"""Sweeps on the real vLLM server (CPU): interrupt and resume, an engine killed mid-point,
and an FP8 point skipped with its reason."""

from __future__ import annotations

import os
import signal

import pytest

from bench.errors import BenchError
from bench.plan import build_plan, sweep_from_dict
from bench.results import read_summary
from bench.run.events import EngineReady, PointDone, PointStarting, RequestsDone
from bench.run.runner import execute

pytestmark = pytest.mark.vllm  # every test here starts the real vLLM server

BASE = {
    "models": ["tiny-llama"],
    "weights": "dummy",
    "engine_args": {"max_model_len": 256, "extra": {"enforce_eager": True}},
    "workloads": [{"input_len": 16, "output_len": 8}],
    "n_requests": 4,
    "n_warmup": 1,
}


def _plan(env, **changes):
    sweep = sweep_from_dict({**BASE, **changes}, {}, source="test")
    return build_plan(sweep, env.hardware, 1)


def test_interrupted_sweep_resumes_without_repeating_points(run_env, tmp_path):
    plan = _plan(run_env, precisions=["auto", "fp8"], loads=[{"concurrency": [1, 2, 3]}],
                 engine_args={**BASE["engine_args"], "max_num_seqs": [4, 8]})
    assert len(plan.engine_configs) == 2 and len(plan.points) == 6
    # fp8 weights cannot run on this CPU host: skipped with the reason, never started
    assert plan.skipped and all("fp8" in s.reason for s in plan.skipped)

    finished = []

    def stop_after_two(event):
        if isinstance(event, PointDone) and event.point.status == "ok":
            finished.append(event.point_id)
            if len(finished) == 2:
                raise KeyboardInterrupt

    run_dir = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        execute(plan, run_dir, run_env, on_event=stop_after_two)
    first = read_summary(run_dir)
    assert first.status == "interrupted"
    assert [p.point_id for p in first.points if p.status == "ok"] == finished
    skipped = [p for p in first.points if p.status == "skipped"]
    assert len(skipped) == len(plan.skipped) and all("fp8" in p.error for p in skipped)

    with pytest.raises(BenchError, match="already holds a run"):
        execute(plan, run_dir, run_env)  # never overwrites a run by accident

    started = []
    resumed = execute(plan, run_dir, run_env, resume=True,
                      on_event=lambda e: started.append(e.point_id) if isinstance(e, PointStarting) else None)
    assert resumed.status == "partial"  # preflight skipped the fp8 points (bench.run.status)
    assert set(started) == {p.point_id for p in plan.points} - set(finished)  # nothing measured twice
    final = read_summary(run_dir)
    ok = [p.point_id for p in final.points if p.status == "ok"]
    assert sorted(ok) == sorted(p.point_id for p in plan.points) and len(ok) == len(set(ok))
    assert len(final.extra["resumed_utc"]) == 1


def test_engine_killed_mid_point_is_recorded_and_the_sweep_finishes(run_env, tmp_path):
    plan = _plan(run_env, loads=[{"concurrency": [1, 2]}], n_requests=12,
                 workloads=[{"input_len": 16, "output_len": 64}])
    pids = []

    def kill_mid_point(event):
        if isinstance(event, EngineReady):
            pids.append(event.pid)
        if isinstance(event, RequestsDone) and event.done == 4 and len(pids) == 1:
            os.killpg(pids[0], signal.SIGKILL)

    result = execute(plan, tmp_path / "run", run_env, on_event=kill_mid_point)
    assert result.status == "partial"  # a point failed: never "complete" (issue 11 defect 6)
    first, second = result.points
    assert first.status == "failed" and first.error.startswith("engine died")
    assert second.status == "ok" and second.metrics.n_failed == 0
    assert len(pids) == 2  # restarted once
    assert read_summary(tmp_path / "run").points[0].error == first.error
