"""The offline vLLM engine: the worker protocol's outputs, start failures, and one real
worker (CPU, tiny llama, dummy weights) shared by the module's integration tests."""

import os
import signal
import sys
import time

import pytest

from bench.engines.base import EngineDied, EngineDoesNotFit
from bench.engines.offline_worker import JobAnswer, JobRequest
from bench.engines.vllm_offline import VllmOffline, batch_output
from bench.errors import EngineError
from bench.load.static import records_from_batch, run_static_point
from bench.load.types import Prompt
from bench.load.workload import make_workload
from bench.plan import PointSpec

TINY = "tiny-llama"


def _prompts(n, n_in=4, n_out=3):
    return [Prompt(n_in, n_out, token_ids=list(range(10, 10 + n_in))) for _ in range(n)]


def _records(prompts, answer, id0, phase):
    return records_from_batch(prompts, batch_output(JobAnswer.model_validate(answer)), id0, phase)


def test_records_carry_engine_times_as_two_chunks():
    answer = {"job": 1, "t_send": 10.0, "t_done": 12.0, "results": [
        {"n_in": 4, "n_out": 3, "t_first": 10.5, "t_last": 11.5},
        {"n_in": 4, "n_out": 2, "t_first": 10.5, "t_last": 11.0},
    ]}
    a, b = _records(_prompts(2), answer, id0=5, phase="measured")
    assert (a.request_id, b.request_id) == (5, 6)
    assert a.ok and a.token_source == "token_ids" and a.t_send == 10.0
    assert a.chunk_t == [10.5, 11.5] and a.chunk_tokens == [1, 2]
    assert a.ttft_s == 0.5 and a.tpot_s == 0.5 and a.itl_s == [0.5]
    assert a.e2e_s - a.ttft_s == pytest.approx(sum(i * k for i, k in zip(a.itl_s, a.chunk_tokens[1:])))
    assert b.error == "returned 2 tokens, asked for 3" and b.n_out == 2


def test_records_without_engine_metrics_end_at_the_batch_end():
    answer = {"job": 1, "t_send": 10.0, "t_done": 12.0,
              "results": [{"n_in": 4, "n_out": 3, "t_first": None, "t_last": None}]}
    (r,) = _records(_prompts(1), answer, 0, "warmup")
    assert r.ok and r.t_first is None and r.t_last == 12.0
    assert r.chunk_t == [12.0] and r.chunk_tokens == [3]


def test_a_failed_job_fails_each_request():
    recs = _records(_prompts(3), {"job": 2, "error": "ValueError: prompt too long"}, 0, "measured")
    assert [r.error for r in recs] == ["ValueError: prompt too long"] * 3
    assert all(r.n_out == 0 and r.t_last is None for r in recs)


class _Scripted(VllmOffline):
    """The engine with a stand-in worker script: start-failure handling without vLLM."""

    def __init__(self, script, tmp_path, **kw):
        super().__init__("unused", TINY, tmp_path / "engine.log", device="cpu", **kw)
        self.script = script

    def argv(self):
        return [sys.executable, "-c", self.script]


def test_out_of_memory_while_loading_means_does_not_fit(tmp_path):
    script = "import sys; print('torch.OutOfMemoryError: CUDA out of memory', file=sys.stderr); sys.exit(1)"
    engine = _Scripted(script, tmp_path)
    with pytest.raises(EngineDoesNotFit, match="does not fit"):
        engine.start()
    assert not engine.alive()


def test_a_worker_that_exits_while_loading_is_an_engine_death_with_its_log(tmp_path):
    engine = _Scripted("import sys; print('KeyError: bad config', file=sys.stderr); sys.exit(3)", tmp_path)
    with pytest.raises(EngineDied, match=r"exit code 3.*KeyError: bad config"):
        engine.start()


@pytest.mark.slow
def test_a_worker_never_ready_times_out_and_is_stopped(tmp_path):
    engine = _Scripted("import time; time.sleep(60)", tmp_path, startup_timeout_s=1.0)
    t0 = time.monotonic()
    with pytest.raises(EngineError, match="not ready after 1 s"):
        engine.start()
    assert not engine.alive() and time.monotonic() - t0 < 30


def _point(batch, n_requests, input_len=16, output_len=16, n_warmup=None, pid="p"):
    return PointSpec(point_id=pid, engine_config_id="c", n_requests=n_requests,
                     n_warmup=batch if n_warmup is None else n_warmup,
                     workload={"kind": "random", "input_len": input_len, "output_len": output_len},
                     load={"kind": "offline", "batch": batch})


@pytest.fixture(scope="module")
def offline(tmp_path_factory):
    from bench.catalog import get_model
    from bench.catalog.prepare import prepare_model

    spec = get_model(TINY)
    path = prepare_model(spec, tmp_path_factory.mktemp("models"))
    engine = VllmOffline(
        str(path), TINY, tmp_path_factory.mktemp("offline") / "engine.log",
        engine_args={"load_format": "dummy", "dtype": "bfloat16", "max_model_len": 256, "enforce_eager": True},
        device="cpu", startup_timeout_s=300,
    )
    assert not engine.log_path.exists()  # the constructor does nothing
    engine.start()
    try:
        yield engine, spec
    finally:
        engine.stop()


def _run(engine, spec, point):
    workload = make_workload(point.workload, vocab_size=spec.config_json()["vocab_size"], seed=0)
    return run_static_point(engine, point, workload)


@pytest.mark.vllm
def test_an_offline_batch_is_token_exact_inside_its_window(offline):
    from bench.measure.metrics import summarize

    engine, spec = offline
    records, facts = _run(engine, spec, _point(batch=8, n_requests=8, n_warmup=2))
    assert [r.phase for r in records] == ["warmup"] * 8 + ["measured"] * 8  # warm-up: one full batch
    measured = [r for r in records if r.phase == "measured"]
    t0, t1 = facts["window_t0_s"], facts["window_t1_s"]
    assert 0 < t1 - t0 < 60 and abs(t0 - time.perf_counter()) < 120  # perf_counter seconds, this clock
    for r in measured:
        assert r.ok and r.token_source == "token_ids" and r.n_in == 16 and r.n_out == 16
        assert t0 == r.t_send < r.t_first <= r.t_last <= t1
    assert (facts["span_t0_s"], facts["span_t1_s"]) == (t0, t1)
    assert facts["max_in_flight"] == facts["target_concurrency"] == 8 and facts["target_reached"]
    m = summarize(records, window=(t0, t1), n_gpus=1)
    assert m.window_output_tokens == 8 * 16 and m.window_input_tokens == 8 * 16
    assert m.output_tok_s == pytest.approx(128 / (t1 - t0))
    assert engine.alive() and engine.version() == engine.vllm_version


@pytest.mark.vllm
def test_the_engine_serves_job_after_job(offline):
    engine, spec = offline
    records, facts = _run(engine, spec, _point(batch=3, n_requests=5, input_len=5, output_len=7, n_warmup=0))
    assert len(records) == 6 and all(r.phase == "measured" for r in records)  # two full batches of 3
    assert [r.request_id for r in records] == list(range(6))
    assert all(r.ok and r.n_in == 5 and r.n_out == 7 for r in records)
    first, second = records[0].t_send, records[3].t_send
    assert facts["window_t0_s"] == first < second < facts["window_t1_s"]
    answer = engine.generate([JobRequest(prompt_token_ids=[11, 12, 13], max_tokens=2)])
    assert [(x.n_in, x.n_out) for x in answer.results] == [(3, 2)]
    assert "bench: point p" in engine.log_tail(50)


@pytest.mark.vllm
def test_a_killed_worker_is_an_engine_death(offline):
    """Runs last in this module: it ends the shared worker."""
    engine, spec = offline
    os.kill(engine._child.proc.pid, signal.SIGKILL)
    with pytest.raises(EngineDied, match="offline worker"):
        _run(engine, spec, _point(batch=2, n_requests=2))
    assert not engine.alive()
