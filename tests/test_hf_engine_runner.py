"""The transformers engine behind the runner: static-batch sizing, facts, and one real run
of the catalog's tiny llama on CPU through `bench.run.runner.execute`."""

import pytest

from bench.engines.hf_engine import HfEngine, batch_facts, point_seed, static_batches
from bench.errors import ConfigError
from bench.load.records import RequestRecord
from bench.plan import PointSpec


def _point(load, n_warmup=2, n_requests=5, workload=None, repeat=0):
    return PointSpec(point_id="p", engine_config_id="c", load=load, n_warmup=n_warmup, n_requests=n_requests,
                     workload=workload or {"kind": "random", "input_len": 8, "output_len": 4}, repeat=repeat)


def test_static_batches_cover_every_request_in_full_batches():
    assert static_batches(_point({"kind": "concurrency", "concurrency": 2})) == (2, 1, 3)
    assert static_batches(_point({"kind": "offline", "batch": 4}, n_warmup=0, n_requests=8)) == (4, 0, 2)
    assert static_batches(_point({"kind": "offline", "batch": 3}, n_warmup=4, n_requests=1)) == (3, 2, 1)
    with pytest.raises(ConfigError, match="rate"):
        static_batches(_point({"kind": "rate", "rate_rps": 2.0}))


def test_batch_facts_span_the_measured_records_only():
    recs = [RequestRecord(0, "warmup", 8, 4, t_send=0.0, t_last=1.0),
            RequestRecord(1, "measured", 8, 4, t_send=2.0, t_last=3.5),
            RequestRecord(2, "measured", 8, 4, t_send=2.0, error="boom")]
    facts = batch_facts(recs, batch=2, window_t0_s=2.0, window_t1_s=3.0)
    assert facts["span_t0_s"] == 2.0 and facts["span_t1_s"] == 3.5
    assert (facts["window_t0_s"], facts["window_t1_s"]) == (2.0, 3.0)
    assert facts["max_in_flight"] == facts["target_concurrency"] == 2 and facts["target_reached"]
    assert facts["target_rate_rps"] is None and facts["achieved_rate_rps"] is None


def test_point_seed_prefers_the_workload_seed():
    assert point_seed(_point({"kind": "offline", "batch": 1}, repeat=3), None) == 3
    assert point_seed(_point({"kind": "offline", "batch": 1}, repeat=3), 10) == 10
    wl = {"kind": "random", "input_len": 8, "output_len": 4, "seed": 42}
    assert point_seed(_point({"kind": "offline", "batch": 1}, workload=wl), 10) == 42


def test_constructor_has_no_side_effects_and_variable_lengths_are_refused(tmp_path):
    from bench.catalog import get_model

    engine = HfEngine("unused", "tiny-llama", tmp_path / "e.log", model_spec=get_model("tiny-llama"))
    assert not engine.alive() and not (tmp_path / "e.log").exists()
    engine._model = object()  # refused before the model is touched
    wl = {"kind": "random", "input_len": 8, "output_len": 4, "output_len_range": [2, 4]}
    with pytest.raises(ConfigError, match="fixed-length"):
        engine.run_point(_point({"kind": "offline", "batch": 1}, workload=wl))


def test_real_weights_quantization_and_parallelism_are_refused_at_start(tmp_path):
    from bench.catalog import get_model
    from bench.plan import EngineConfig

    for bad in ({"weights": "meta-llama/Llama-3.1-8B"}, {"quantization": "fp8"}, {"tensor_parallel_size": 2}):
        cfg = EngineConfig(model="tiny-llama", engine="hf", **bad)
        engine = HfEngine("unused", "tiny-llama", tmp_path / "e.log", config=cfg, model_spec=get_model("tiny-llama"))
        with pytest.raises(ConfigError, match="hf engine"):
            engine.start()
        assert not engine.alive()


def test_hf_engine_runs_a_plan_through_the_runner(tmp_path, run_env):
    from bench.plan import plan_from_options
    from bench.results import read_requests, read_summary
    from bench.run.runner import execute

    plan = plan_from_options("tiny-llama", concurrency=[2], input_len=16, output_len=8, engine="hf",
                             n_requests=4, n_warmup=2, hardware=run_env.hardware, n_devices=1)
    assert [c.engine for c in plan.engine_configs] == ["hf"] and len(plan.points) == 1
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    execute(plan, run_dir, run_env)

    result = read_summary(run_dir)
    assert result.status == "complete"
    (point,) = result.points
    assert point.status == "ok", point.error
    assert point.n_requests == 4 and point.n_failed == 0
    m = point.metrics
    assert m["window_output_tokens"] == 4 * 8 and m["window_input_tokens"] == 4 * 16
    assert m["output_tok_s"] == pytest.approx(32 / point.window["window_s"])
    assert 0 < point.window["window_s"] <= point.window["span_s"]
    assert m["tpot_s_p50"] > 0 and m["ttft_s_p50"] > 0
    for key in ("energy_j", "energy_method", "avg_power_w", "j_per_output_token"):
        assert key in point.energy, key
    assert point.energy["energy_j"] > 0 and point.energy["avg_power_w"] > 0
    assert point.cost == {}  # cpu-host has no catalog prices; the formula still applies to this point:
    from bench.measure.cost import cost_for_point, make_scenario

    cost = cost_for_point(m, point.energy, make_scenario(name="t", kind="rental", rental_usd_per_gpu_hour=1.0), 1)
    assert cost["usd_per_mtok_output"] == pytest.approx(1e6 / (m["output_tok_s"] * 3600))
    records = read_requests(run_dir, point)
    assert [r.phase for r in records] == ["warmup"] * 2 + ["measured"] * 4
    assert all(r.token_source == "token_ids" and r.n_out == 8 and r.n_in == 16 for r in records)
    log = (run_dir / f"engine-{plan.engine_configs[0].config_id()}.log").read_text()
    assert "dtype float32" in log and "device cpu" in log and point.point_id in log
