"""The transformers engine on CPU with the catalog's tiny llama and a tiny batch."""

from types import SimpleNamespace

import pytest

from bench.engines.hf import build_model, hf_config, resolve_dtype, run_hf_point
from bench.errors import ConfigError
from bench.measure.metrics import summarize


@pytest.fixture(scope="module")
def tiny():
    from bench.catalog import get_model

    return get_model("tiny-llama")


@pytest.fixture(scope="module")
def tiny_model(tiny):
    return build_model(tiny, "cpu", "auto", seed=0)


def test_static_batches_become_token_exact_records(tiny, tiny_model):
    records, t0, t1 = run_hf_point(tiny, batch_size=2, input_len=8, output_len=4, n_batches=2, device="cpu",
                                   dtype="auto", seed=1, model=tiny_model)
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
    assert m["window_output_tokens"] == 16
    assert m["output_tok_s"] == pytest.approx(16 / (t1 - t0))


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
    class OutOfMemory:
        config = SimpleNamespace(vocab_size=100)

        def generate(self, **kw):
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore detail")

    records, t0, t1 = run_hf_point(None, 3, 4, 2, 1, n_warmup_batches=0, model=OutOfMemory())
    assert len(records) == 3 and all(not r.ok for r in records)
    assert records[0].error == "RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB"
    assert t0 == records[0].t_send and t1 >= t0
    with pytest.raises(ConfigError, match=">= 1"):
        run_hf_point(None, 0, 4, 2, 1, model=OutOfMemory())
