"""Accuracy layer 2, agreement with the reference precision (docs/accuracy.md): a real run of
tiny-llama's dummy weights at bf16 and at fp32 on vLLM's CPU backend, one server after the
other; the fp32 configuration's top-1 agreement and mean KL against bf16 are stored in run.json."""

from __future__ import annotations

import pytest

from bench.plan import build_plan, sweep_from_dict
from bench.results import read_summary
from bench.run.runner import execute

pytestmark = pytest.mark.vllm


def test_bf16_and_fp32_dummy_weights_agree_through_two_real_servers(tmp_path, run_env):
    sweep = sweep_from_dict({
        "name": "agreement", "models": ["tiny-llama"], "precisions": ["bf16", "fp32"],
        "engine_args": {"max_model_len": 512, "extra": [{"enforce_eager": True}]},
        "workloads": [{"kind": "random", "input_len": 16, "output_len": 4}],
        "loads": [{"kind": "concurrency", "concurrency": [1]}], "n_requests": 2, "n_warmup": 0,
        "telemetry": "none", "accuracy": "agreement",
    })
    plan = build_plan(sweep, run_env.hardware, 1)
    execute(plan, tmp_path / "run", run_env)
    run = read_summary(tmp_path / "run")
    by_precision = {run.config.engine_config(cid).precision_label(): v for cid, v in run.accuracy.items()}
    assert set(by_precision) == {"fp32"}, run.accuracy  # the reference (bf16) has nothing to agree with
    (a,) = by_precision["fp32"]
    assert a.kind == "agreement" and a.reference is not None, a.reason
    assert a.reference.reference_precision == "bf16"
    print(f"\nfp32 vs bf16 dummy tiny-llama: {a.n} positions, top-1 agreement {a.reference.top1_agreement:.3f}, "
          f"mean KL {a.reference.mean_kl_nats:.4g} nats")
    assert a.n is not None and a.n > 100
    assert a.reference.top1_agreement is not None and 0 <= a.reference.top1_agreement <= 1
    assert a.reference.mean_kl_nats is not None and a.reference.mean_kl_nats >= 0
