"""The static-batch loop (bench.load.static) and the transformers engine behind the runner:
batch sizing, facts, refusals before loading, and one real run of the catalog's tiny llama on
CPU through `bench.run.runner.execute` (that one loads torch)."""

import pytest

from bench.engines.base import BatchOutput, BatchRequest, GeneratedSequence
from bench.engines.hf_engine import HfEngine
from bench.errors import ConfigError
from bench.load.records import RequestRecord
from bench.load.static import (
    batch_facts,
    records_from_batch,
    run_static_point,
    static_batches,
)
from bench.load.types import Prompt
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


class _Scripted:
    """A batch engine answering every batch from a clock that advances 1 s per token."""

    name, kind = "scripted", "batch"

    def __init__(self):
        self.now = 100.0
        self.batches: list[list[BatchRequest]] = []
        self.notes: list[str] = []

    def generate_batch(self, requests):
        self.batches.append(requests)
        t_send = self.now
        n = requests[0].max_tokens
        times = [t_send + 1.0 + i for i in range(n)]
        self.now = times[-1] + 0.5
        seqs = [GeneratedSequence(n_in=len(r.token_ids), n_out=n, t_first=times[0], t_last=times[-1],
                                  chunk_t=list(times), chunk_tokens=[1] * n) for r in requests]
        return BatchOutput(t_send=t_send, t_done=times[-1], sequences=seqs)

    def note(self, line):
        self.notes.append(line)


class _Workload:
    def prompts(self, n):
        return [Prompt(3, 2, token_ids=[10 + i, 11, 12]) for i in range(n)]


def test_the_static_loop_turns_batch_outputs_into_records_and_a_window():
    engine = _Scripted()
    records, facts = run_static_point(engine, _point({"kind": "concurrency", "concurrency": 2}, n_warmup=1,
                                                     n_requests=3), _Workload())
    assert [len(b) for b in engine.batches] == [2, 2, 2]  # 1 warm-up batch, 2 measured, all full
    assert [r.phase for r in records] == ["warmup"] * 2 + ["measured"] * 4
    assert [r.request_id for r in records] == list(range(6))
    assert engine.batches[1][0].token_ids == [12, 11, 12] and engine.batches[1][0].max_tokens == 2
    assert (facts["window_t0_s"], facts["window_t1_s"]) == (102.5, 107.0)  # measured submit .. last done
    assert all(r.ok and r.n_out == 2 and r.ttft_s == 1.0 and r.itl_s == [1.0] for r in records)
    assert len(engine.notes) == 1 and engine.notes[0].startswith("point p: 1 warm-up + 2 batches of 2, window 4.500 s")


def test_short_and_failed_sequences_are_failed_records():
    prompts = [Prompt(3, 4, token_ids=[1, 2, 3])] * 2
    out = BatchOutput(1.0, 2.0, [GeneratedSequence(n_in=3, n_out=4, t_first=1.5, t_last=2.0, chunk_t=[1.5, 2.0],
                                                   chunk_tokens=[1, 3]),
                                 GeneratedSequence(n_in=3, n_out=2, t_first=1.5, t_last=1.7)])
    ok, short = records_from_batch(prompts, out, 7, "measured")
    assert ok.ok and ok.request_id == 7 and ok.tpot_s == pytest.approx(0.5 / 3)
    assert short.error == "returned 2 tokens, asked for 4"
    failed = records_from_batch(prompts, BatchOutput(1.0, 1.2, error="RuntimeError: boom"), 0, "warmup")
    assert [r.error for r in failed] == ["RuntimeError: boom"] * 2 and all(r.t_send == 1.0 for r in failed)


def test_constructor_has_no_side_effects_and_variable_lengths_are_refused(tmp_path):
    from bench.catalog import get_model

    engine = HfEngine("unused", "tiny-llama", tmp_path / "e.log", model_spec=get_model("tiny-llama"))
    assert not engine.alive() and not (tmp_path / "e.log").exists()
    engine._model = object()  # refused before the model is touched
    with pytest.raises(ConfigError, match="fixed-length"):
        engine.generate_batch([BatchRequest(4, [11, 12]), BatchRequest(4, [11, 12, 13])])
    with pytest.raises(ConfigError, match="fixed-length"):
        engine.generate_batch([BatchRequest(4, None, "some text")])


def test_real_weights_quantization_and_parallelism_are_refused_at_start(tmp_path):
    from bench.catalog import get_model
    from bench.plan import EngineConfig

    for bad in ({"weights": "meta-llama/Llama-3.1-8B"}, {"quantization": "fp8"}, {"tensor_parallel_size": 2},
                {"kv_cache_dtype": "fp8"}):
        cfg = EngineConfig(model="tiny-llama", engine="hf", **bad)
        engine = HfEngine("unused", "tiny-llama", tmp_path / "e.log", config=cfg, model_spec=get_model("tiny-llama"))
        with pytest.raises(ConfigError, match="hf engine"):
            engine.start()
        assert not engine.alive()


@pytest.mark.torch
def test_hf_engine_runs_a_plan_through_the_runner(tmp_path, run_env):
    from importlib import metadata

    from bench.analysis.report import provenance_rows
    from bench.plan import plan_from_options
    from bench.results import read_requests, read_summary
    from bench.run.runner import execute
    from bench.store.rows import engine_version_of

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
    assert m.window_output_tokens == 4 * 8 and m.window_input_tokens == 4 * 16
    assert m.output_tok_s == pytest.approx(32 / point.window.window_s)
    assert 0 < point.window.window_s <= point.window.span_s
    assert m.tpot_s_p50 > 0 and m.ttft_s_p50 > 0
    for key in ("energy_j", "energy_method", "avg_power_w", "j_per_output_token"):
        assert getattr(point.energy, key) is not None, key
    assert point.energy.energy_j > 0 and point.energy.avg_power_w > 0
    records = read_requests(run_dir, point)
    assert [r.phase for r in records] == ["warmup"] * 2 + ["measured"] * 4
    assert all(r.token_source == "token_ids" and r.n_out == 8 and r.n_in == 16 for r in records)
    log = (run_dir / f"engine-{plan.engine_configs[0].config_id()}.log").read_text()
    assert "dtype float32" in log and "device cpu" in log and point.point_id in log

    # Defect 5: the run records the transformers engine's own version, never vLLM's.
    hf_version = f"transformers {metadata.version('transformers')}, torch {metadata.version('torch')}"
    cid = plan.engine_configs[0].config_id()
    assert result.config.engine_configs[cid].engine_version == hf_version
    assert result.config.engine_version == result.provenance.engine_version == hf_version
    assert result.extra["engine_version"][cid] == hf_version
    assert engine_version_of(result, cid) == hf_version
    assert provenance_rows([("r", result)])[0]["engine"] == f"hf {hf_version}"  # what `bench compare` shows
