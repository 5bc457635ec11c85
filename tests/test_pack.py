"""`--pack` (issue 8): waves of disjoint device sets, the packed-vs-solo check, and four TP=2
configurations run at the same time against fake servers on a fake 8-GPU host."""

from __future__ import annotations

import json

import pytest
from test_runner_fast import FAST, WATTS, endpoint, make_env, make_plan

from bench.errors import ConfigError
from bench.plan import EngineConfig
from bench.run.pack import PACK_TOLERANCE, pack_waves, packed_disagreement
from bench.testing.fake_server import FakeServer

EIGHT = list(range(8))


def _cfg(tp=1, gpus=None, tag=""):
    return EngineConfig(model="tiny-llama", tensor_parallel_size=tp, gpus=gpus, extra_args={"tag": tag} if tag else {})


def _waves(configs, visible=EIGHT):
    from bench.run.devices import plan_devices

    waves = pack_waves(configs, visible, plan_devices(configs, visible))
    return [[(c.config_id(), d) for c, d in w] for w in waves]


def test_eight_tp1_configs_fill_eight_devices_in_one_wave():
    configs = [_cfg(tag=str(i)) for i in range(8)]
    (wave,) = _waves(configs)
    assert [d for _, d in wave] == [[i] for i in range(8)]


def test_two_tp4_then_a_third_waits_for_the_next_wave():
    configs = [_cfg(4, tag="a"), _cfg(4, tag="b"), _cfg(4, tag="c")]
    waves = _waves(configs)
    assert [[d for _, d in w] for w in waves] == [[[0, 1, 2, 3], [4, 5, 6, 7]], [[0, 1, 2, 3]]]


def test_explicit_gpus_that_overlap_go_to_separate_waves():
    configs = [_cfg(2, gpus=[0, 1], tag="a"), _cfg(2, gpus=[1, 2], tag="b"), _cfg(1, tag="c")]
    waves = _waves(configs)
    assert [[d for _, d in w] for w in waves] == [[[0, 1], [2]], [[1, 2]]]


def test_pack_on_cpu_is_refused():
    with pytest.raises(ConfigError, match="needs GPUs"):
        pack_waves([_cfg()], None, {})


def _point(tok_s, tpot, jpt):
    """A real PointResult (typed groups), so the check cannot silently miss a field."""
    from bench.results import PointResult

    return PointResult(point_id="p", load={"kind": "concurrency", "concurrency": 2},
                       metrics={"output_tok_s": tok_s, "tpot_s_p50": tpot}, energy={"j_per_output_token": jpt})


def test_packed_point_within_tolerance_agrees():
    assert packed_disagreement(_point(1000.0, 0.020, 0.5), _point(1030.0, 0.0205, 0.51)) == []


def test_packed_point_outside_tolerance_disagrees_with_reasons():
    reasons = packed_disagreement(_point(900.0, 0.020, 0.6), _point(1000.0, 0.020, 0.5))
    assert len(reasons) == 2
    assert reasons[0].startswith("packed point disagrees with the same config alone: output tok/s")
    assert "J/output token" in reasons[1] and f"> {PACK_TOLERANCE:.0%}" in reasons[1]
    (tpot,) = packed_disagreement(_point(1000.0, 0.030, 0.5), _point(1000.0, 0.020, 0.5))
    assert "TPOT p50 0.03 vs 0.02" in tpot


def test_a_disagreeing_packed_point_is_marked_invalid_and_others_are_untouched():
    from bench.run.pack import _mark_packed

    solo = _point(1000.0, 0.020, 0.5)
    packed = _mark_packed(_point(800.0, 0.020, 0.5), solo)
    assert packed.valid is False and packed.invalid_reasons[-1].startswith("packed point disagrees")
    other = _point(800.0, 0.020, 0.5).model_copy(update={"point_id": "q"})
    assert _mark_packed(other, solo) is other


@pytest.mark.slow
def test_four_tp2_configs_run_packed_and_every_point_lands_on_disk(tmp_path):
    from bench.run.runner import execute

    servers = [FakeServer(FAST).__enter__() for _ in range(4)]
    try:
        configs = [endpoint(s.base_url, tensor_parallel_size=2) for s in servers]
        plan = make_plan(configs, n_points=2)
        result = execute(plan, tmp_path, make_env(), pack=True)
    finally:
        for s in servers:
            s.__exit__(None, None, None)
    assert result.status == "complete"
    on_disk = json.loads((tmp_path / "run.json").read_text())
    assert sorted(p["point_id"] for p in on_disk["points"]) == sorted(p.point_id for p in plan.points)
    assert all(p["status"] == "ok" for p in on_disk["points"]), [p["error"] for p in on_disk["points"]]
    ids = [c.config_id() for c in configs]
    packing = on_disk["extra"]["packing"]
    for i, cid in enumerate(ids):
        assert packing[cid]["devices"] == [2 * i, 2 * i + 1]
        assert sorted(packing[cid]["packed_with"]) == sorted(set(ids) - {cid})
    for p in on_disk["points"]:
        i = ids.index(p["engine_config_id"])
        assert p["energy"]["devices"] == [2 * i, 2 * i + 1]
        assert sorted(p["packed_with"]) == sorted(set(ids) - {p["engine_config_id"]})  # per point, too
        assert p["energy"]["avg_power_w"] == pytest.approx(WATTS[2 * i] + WATTS[2 * i + 1], rel=0.01)
    ref = on_disk["extra"]["pack_reference"]
    assert ref["point_id"] == plan.points[0].point_id and ref["devices"] == [0, 1]
    assert ref["point"]["packed_with"] is None  # the solo reference ran alone
    assert (tmp_path / ref["point"]["requests_file"]).is_file()  # kept apart from the packed run's file
    (packed_twin,) = [p for p in on_disk["points"] if p["point_id"] == ref["point_id"]]
    assert (tmp_path / packed_twin["requests_file"]).is_file()
    assert ref["point"]["requests_file"] != packed_twin["requests_file"]


@pytest.mark.parametrize("flag", ["--pack", "--prestart"])  # --prestart: bench.run.prestart
def test_bench_sweep_pack_on_a_cpu_host_is_one_line_and_starts_nothing(tmp_path, flag):
    from pathlib import Path

    from click.testing import CliRunner

    from bench.cli import cli

    sweep = Path(__file__).resolve().parents[1] / "sweeps" / "cpu-tiny.yaml"
    result = CliRunner().invoke(cli, ["sweep", str(sweep), "--hardware", "cpu-host", flag, "--out", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert f"bench: error: {flag} needs GPUs" in result.output
    assert not list(tmp_path.rglob("run.json")) and not list(tmp_path.rglob("engine-*.log"))
