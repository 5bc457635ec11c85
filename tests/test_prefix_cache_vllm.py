"""Prefix-cache control on the real vLLM server (CPU, issue 10 part 4): the reset before each
point leaves a random workload cache-cold even when its prompts repeat, and a shared-prefix
workload reports the hits it gets. vLLM's CPU backend caches whole 128-token blocks."""

from __future__ import annotations

import pytest

from bench.plan import EngineConfig, Plan, PointSpec
from bench.results import read_summary
from bench.run.runner import execute

# 288 tokens: two whole 128-token blocks and the rest; a repeat of one would hit 256 of 288.
REPEATED_RANDOM = {"kind": "random", "input_len": 288, "output_len": 4, "seed": 11}  # the same prompts every point
SHARED = {"kind": "shared_prefix", "prefix_len": 256, "suffix_len": 32, "output_len": 4}


@pytest.mark.vllm
def test_reset_keeps_a_random_workload_cold_and_shared_prefix_hits_show(vllm_server, run_env, tmp_path):
    cfg = EngineConfig(model="tiny-llama", engine="endpoint", endpoint_url=vllm_server.base_url)
    points = [PointSpec(point_id=f"{cfg.config_id()}_{name}_c{c}_r0", engine_config_id=cfg.config_id(), workload=w,
                        load={"kind": "concurrency", "concurrency": c}, n_warmup=1, n_requests=6)
              for name, w, c in (("rand", REPEATED_RANDOM, 1), ("rand", REPEATED_RANDOM, 2), ("sp", SHARED, 2))]
    plan = Plan(engine_configs=[cfg], points=points, name="prefix-vllm", n_devices=1, telemetry="none")
    execute(plan, tmp_path / "run", run_env)

    first, again, shared = read_summary(tmp_path / "run").points
    rates = [p.server.prefix_cache_hit_rate for p in (first, again, shared)]
    print("prefix-cache hit rates (random, the same random prompts again, shared prefix):", rates)
    for p in (first, again, shared):
        assert p.status == "ok", p.error
        assert p.server.prefix_cache_reset == "done"
        assert p.server.counter_delta["prefix_cache_queries"] == 7 * 288
    # the second point sends exactly the first's prompts: only the reset keeps it cold
    assert first.server.prefix_cache_hit_rate < 0.01 and again.server.prefix_cache_hit_rate < 0.01
    assert not any("prefix cache" in r for r in first.invalid_reasons + again.invalid_reasons)
    # 7 requests share one 256-token prefix: the 6 after the first find it
    assert shared.server.prefix_cache_hit_rate == pytest.approx(6 * 256 / (7 * 288), abs=0.1)
    assert not any("prefix cache" in r for r in shared.invalid_reasons)
