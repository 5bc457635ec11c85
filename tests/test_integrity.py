"""Accuracy layer 3, integrity on every perf point (docs/accuracy.md): outputs as long as
asked (MLPerf TEST09: mean within 10%), none empty; a point that fails is invalid with the reason."""

from __future__ import annotations

import pytest

from bench.load.records import RequestRecord
from bench.measure.integrity import integrity_reasons
from bench.plan import EngineConfig, Plan, PointSpec
from bench.run.environment import RunEnvironment
from bench.run.runner import execute
from bench.testing.fake_device import fake_device
from bench.testing.fake_server import FakeServer, FakeServerConfig


def _rec(i: int, n_out: int, asked: int = 100, error: str | None = None, phase: str = "measured") -> RequestRecord:
    return RequestRecord(i, phase, 8, asked, n_out=n_out, error=error)


def test_outputs_as_asked_pass():
    assert integrity_reasons([_rec(i, 100) for i in range(10)]) == []


def test_a_short_mean_is_flagged_with_the_figures():
    recs = [_rec(i, 85, error="fewer tokens than asked: 85 of 100") for i in range(10)]
    (reason,) = integrity_reasons(recs)
    assert reason == "integrity: mean output 85.0 tokens, asked 100.0 (-15%, over 10%)"


def test_within_ten_percent_passes_and_warmup_and_transport_failures_do_not_count():
    recs = [_rec(i, 92, error="fewer tokens than asked: 92 of 100") for i in range(10)]
    recs += [_rec(20, 0, phase="warmup"), _rec(21, 0, error="HTTP 500: injected failure")]
    assert integrity_reasons(recs) == []


def test_an_empty_output_is_flagged():
    recs = [_rec(i, 100) for i in range(9)] + [_rec(9, 0, error="fewer tokens than asked: 0 of 100")]
    assert integrity_reasons(recs) == ["integrity: 1 of 10 answered requests returned no token"]


def _plan(cfg: EngineConfig) -> Plan:
    point = PointSpec(point_id="p_c2", engine_config_id=cfg.config_id(),
                      workload={"kind": "random", "input_len": 8, "output_len": 20},
                      load={"kind": "concurrency", "concurrency": 2}, n_warmup=0, n_requests=6)
    return Plan(engine_configs=[cfg], points=[point], name="integrity", telemetry="none")


@pytest.mark.parametrize("share,reason", [
    (0.5, "integrity: mean output 10.0 tokens, asked 20.0 (-50%, over 10%)"),
    (1.0, "integrity: 6 of 6 answered requests returned no token"),
])
def test_a_server_that_stops_early_makes_the_point_invalid(tmp_path, share, reason):
    """The fake ends every stream with finish "stop" early (a broken kernel emitting EOS): the
    point is measured, kept, and invalid with the integrity reason."""
    with FakeServer(FakeServerConfig(ttft_s=0.002, itl_s=0.001, stop_early_share=share)) as srv:
        cfg = EngineConfig(model="tiny-llama", engine="endpoint", endpoint_url=srv.base_url)
        result = execute(_plan(cfg), tmp_path, RunEnvironment(device=fake_device("cpu", name="cpu")))
    point = result.points[0]
    assert point.n_requests == 6
    assert point.valid is False
    assert reason in point.invalid_reasons, point.invalid_reasons


def test_a_server_that_answers_in_full_has_no_integrity_reason(tmp_path):
    with FakeServer(FakeServerConfig(ttft_s=0.002, itl_s=0.001)) as srv:
        cfg = EngineConfig(model="tiny-llama", engine="endpoint", endpoint_url=srv.base_url)
        result = execute(_plan(cfg), tmp_path, RunEnvironment(device=fake_device("cpu", name="cpu")))
    point = result.points[0]
    assert point.n_failed == 0
    assert not [r for r in point.invalid_reasons if r.startswith("integrity")], point.invalid_reasons
