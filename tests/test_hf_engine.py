"""The transformers engine on CPU with the catalog's tiny llama and a tiny batch (loads torch)."""

from pathlib import Path
from types import SimpleNamespace

import pytest

from bench.engines.hf import build_model, generate_batch, hf_config, resolve_dtype
from bench.engines.hf_engine import HfEngine
from bench.errors import ConfigError
from bench.load.static import records_from_batch, run_static_point
from bench.load.types import Prompt
from bench.load.workload import RandomPrompts
from bench.measure.metrics import summarize
from bench.plan import PointSpec

pytestmark = pytest.mark.torch


@pytest.fixture(scope="module")
def tiny():
    from bench.catalog import get_model

    return get_model("tiny-llama")


@pytest.fixture(scope="module")
def engine(tiny, tmp_path_factory):
    engine = HfEngine("unused", "tiny-llama", tmp_path_factory.mktemp("hf") / "engine.log", model_spec=tiny)
    engine.start()
    yield engine
    engine.stop()


def _point(batch, n_warmup, n_requests):
    return PointSpec(point_id="p", engine_config_id="c", n_warmup=n_warmup, n_requests=n_requests,
                     workload={"kind": "random", "input_len": 8, "output_len": 4},
                     load={"kind": "offline", "batch": batch})


def test_static_batches_become_token_exact_records(tiny, engine):
    workload = RandomPrompts(input_len=8, output_len=4, vocab_size=tiny.config_json()["vocab_size"], seed=1)
    records, facts = run_static_point(engine, _point(batch=2, n_warmup=2, n_requests=4), workload)
    t0, t1 = facts["window_t0_s"], facts["window_t1_s"]
    assert [r.phase for r in records] == ["warmup"] * 2 + ["measured"] * 4
    assert len({r.request_id for r in records}) == 6
    measured = [r for r in records if r.phase == "measured"]
    for r in measured:
        assert r.ok and r.token_source == "token_ids"
        assert r.n_out == 4 and r.n_in == 8 and r.chunk_tokens == [1, 1, 1, 1]
        assert r.t_send < r.t_first <= r.t_last and r.chunk_t == sorted(r.chunk_t)
        assert t0 <= r.t_send and r.t_last <= t1
        assert r.e2e_s - r.ttft_s == pytest.approx(sum(r.itl_s))
    assert t0 == measured[0].t_send and t1 == max(r.t_last for r in measured)
    m = summarize(records, window=(t0, t1), n_gpus=1)
    assert m.window_output_tokens == 16
    assert m.output_tok_s == pytest.approx(16 / (t1 - t0))
    assert "point p: 1 warm-up + 2 batches of 2" in engine.log_tail()


def test_model_is_random_initialised_in_fp32_on_cpu_without_touching_the_global_rng(tiny):
    import torch

    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a = build_model(tiny, "cpu", "auto", seed=7)
    assert torch.equal(torch.rand(3), expected)
    b = build_model(tiny, "cpu", None, seed=7)
    assert next(a.parameters()).dtype == torch.float32
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))
    assert sum(p.numel() for p in a.parameters()) == tiny.total_params


def test_config_sources_and_dtypes(tiny):
    from transformers import LlamaConfig

    cfg = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                      num_key_value_heads=1, vocab_size=128)
    assert hf_config(cfg) is cfg
    assert hf_config({"model_type": "llama", "hidden_size": 32, "num_attention_heads": 2}).hidden_size == 32
    assert hf_config(tiny).num_hidden_layers == tiny.config.num_hidden_layers
    with pytest.raises(ConfigError, match="no model_type"):
        hf_config({"hidden_size": 32})
    assert resolve_dtype("auto", "cuda") == "bfloat16" and resolve_dtype("fp16", "cuda") == "float16"
    with pytest.raises(ConfigError, match="unknown dtype 'int3'"):
        resolve_dtype("int3", "cpu")


def test_a_failing_generate_is_recorded_not_raised():
    import torch

    class OutOfMemory:
        config = SimpleNamespace(vocab_size=100)

        def generate(self, **kw):
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore detail")

    output = generate_batch(OutOfMemory(), torch.full((3, 4), 11), 2)
    assert output.error == "RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB" and output.sequences == []
    assert output.t_done >= output.t_send
    records = records_from_batch([Prompt(4, 2, token_ids=[11] * 4)] * 3, output, 0, "measured")
    assert len(records) == 3 and all(r.error == output.error for r in records)


def test_fp8_through_torchao_needs_a_gpu(tiny):
    from bench.engines.hf import quantize_fp8

    with pytest.raises(ConfigError, match="fp8 weights need a GPU"):
        quantize_fp8(build_model(tiny, "cpu", "auto", seed=0), "cpu")


def test_a_stopped_engine_cannot_generate(tiny, tmp_path):
    from bench.engines.base import BatchRequest, EngineDied

    engine = HfEngine("unused", "tiny-llama", Path(tmp_path) / "e.log", model_spec=tiny)
    with pytest.raises(EngineDied, match="before start"):
        engine.generate_batch([BatchRequest(2, [11, 12])])
