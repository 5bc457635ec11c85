"""Physical limit: hand-checked bounds on a stand-in model, then the real catalog."""

from types import SimpleNamespace

import pytest

from bench.measure.roofline import point_roofline
from bench.telemetry.types import ProbeFigures


class _Model:
    """1 GB of weights read per step, 1e5 KV bytes per token, 1 GFLOP per token."""

    def __init__(self, kv_bytes=1e5):
        self.kv = kv_bytes

    def decode_weight_bytes(self, batch, bytes_per_param):
        return 0.5e9 * bytes_per_param

    def kv_bytes_per_token(self, bytes_per_elem, context_len=None):
        return self.kv * bytes_per_elem / 2

    def flops_per_token(self, context_len):
        return 1e9


HW = SimpleNamespace(bandwidth_tbs=1.0, tflops={"bf16": 100.0, "fp16": 100.0, "fp8": None, "fp4": None})


def test_data_parallel_replicas_each_read_their_weights():
    """DP=2 x TP=2 (4 GPUs): each replica reads its own 1 GB of weights per step, so a step
    moves 2e9 of weights + 2e9 of KV over 4 GPUs' bandwidth, not 1e9 + 2e9."""
    kw = dict(batch=20, context_len=1000, bytes_per_param=2, kv_bytes_per_elem=2, n_gpus=4,
              measured_output_tok_s=None)
    dp = point_roofline(_Model(), HW, replicas=2, **kw)
    assert dp.weight_bytes_per_step == pytest.approx(2e9) and dp.replicas == 2
    assert dp.bandwidth_bound_tok_s == pytest.approx(20 * 4e12 / 4e9)
    assert point_roofline(_Model(), HW, **kw).bandwidth_bound_tok_s > dp.bandwidth_bound_tok_s


def test_decode_is_bandwidth_bound_with_kv_reads():
    r = point_roofline(_Model(), HW, batch=10, context_len=1000, bytes_per_param=2, kv_bytes_per_elem=2,
                       n_gpus=1, measured_output_tok_s=2500.0)
    # bytes/step = 1e9 weights + 10 x 1000 x 1e5 KV = 2e9 -> 10 tokens per 2 ms
    assert r.bytes_per_step == pytest.approx(2e9)
    assert r.bandwidth_bound_tok_s == pytest.approx(5000.0)
    assert r.compute_bound_tok_s == pytest.approx(1e5)
    assert r.bound_kind == "bandwidth" and r.bound_tok_s == pytest.approx(5000.0)
    assert r.roofline_efficiency == pytest.approx(0.5)
    assert r.bandwidth_source == "catalog" and r.flops_source == "catalog"


def test_large_batch_without_kv_is_compute_bound_and_scales_with_gpus():
    r = point_roofline(_Model(kv_bytes=0), HW, batch=1000, context_len=10, bytes_per_param=2,
                       kv_bytes_per_elem=2, n_gpus=4, measured_output_tok_s=None)
    assert r.bandwidth_bound_tok_s == pytest.approx(1000 * 4e12 / 1e9)
    assert r.compute_bound_tok_s == pytest.approx(4e5)
    assert r.bound_kind == "compute" and r.roofline_efficiency is None


def test_probe_figures_replace_catalog_figures():
    probe = ProbeFigures(bandwidth_tbs=0.8, tflops={"bf16": 60.0})
    r = point_roofline(_Model(), HW, batch=10, context_len=1000, bytes_per_param=2, kv_bytes_per_elem=2,
                       n_gpus=1, measured_output_tok_s=2000.0, probe=probe)
    assert r.bandwidth_source == "probe" and r.bandwidth_bound_tok_s == pytest.approx(4000.0)
    assert r.flops_source == "probe" and r.compute_bound_tok_s == pytest.approx(6e4)
    assert r.roofline_efficiency == pytest.approx(0.5)


def test_fp8_weights_without_fp8_math_use_bf16_flops():
    r = point_roofline(_Model(), HW, batch=1, context_len=100, bytes_per_param=1, kv_bytes_per_elem=1,
                       n_gpus=1, measured_output_tok_s=100.0)
    assert r.flops_dtype == "bf16" and r.weight_bytes_per_step == pytest.approx(0.5e9)


def test_real_catalog_llama_8b_on_h100_batch_1():
    from bench.catalog import get_hardware, get_model

    m, h = get_model("llama-3.1-8b"), get_hardware("h100-sxm")
    r = point_roofline(m, h, batch=1, context_len=1024, bytes_per_param=2, kv_bytes_per_elem=2, n_gpus=1,
                       measured_output_tok_s=150.0)
    step = m.total_params * 2 + 1024 * m.kv_bytes_per_token(2, 1024)
    assert r.bandwidth_bound_tok_s == pytest.approx(3.35e12 / step)
    assert 150 < r.bound_tok_s < 250  # ~16 GB of weights over 3.35 TB/s
    assert r.bound_kind == "bandwidth"
    fp8 = point_roofline(m, h, batch=1, context_len=1024, bytes_per_param=1, kv_bytes_per_elem=1, n_gpus=1,
                         measured_output_tok_s=None)
    assert fp8.flops_dtype == "fp8" and fp8.tflops == 1979
