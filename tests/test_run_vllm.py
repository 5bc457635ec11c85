"""`bench run` on the real vLLM server (CPU): result files, exact token accounting, energy
and cost fields, and the one-line errors of bad input."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from bench.cli import cli
from bench.plan import plan_from_options
from bench.results import read_requests, read_summary
from bench.run.runner import execute


def _endpoint_plan(server, env, concurrency, n_requests=6, n_warmup=2, **kw):
    return plan_from_options(
        "tiny-llama", concurrency=concurrency, input_len=32, output_len=16, hardware=env.hardware,
        n_devices=1, engine="endpoint", endpoint_url=server.base_url, n_requests=n_requests,
        n_warmup=n_warmup, **kw,
    )


@pytest.mark.vllm
def test_two_levels_give_a_valid_result_and_exact_token_counts(vllm_server, run_env, tmp_path):
    plan = _endpoint_plan(vllm_server, run_env, [1, 3])
    before = vllm_server.server_counters()
    result = execute(plan, tmp_path / "run", run_env)
    after = vllm_server.server_counters()

    stored = read_summary(tmp_path / "run")
    assert stored.status == "complete"
    assert [p.status for p in stored.points] == ["ok", "ok"]
    assert [p.load.concurrency for p in stored.points] == [1, 3]
    client_out = client_in = 0
    for point in stored.points:
        records = read_requests(tmp_path / "run", point)
        assert len(records) == 6 + 2
        assert all(r.ok and r.n_out == 16 and r.n_in == 32 for r in records)
        # per point: the server's own counter delta equals what the client counted, exactly
        assert point.server.counter_delta["generation_tokens"] == sum(r.n_out for r in records)
        assert point.server.counter_delta["prompt_tokens"] == sum(r.n_in for r in records)
        assert not any("token mismatch" in r for r in point.invalid_reasons)
        m = point.metrics
        assert m.n_measured == 6 and m.n_failed == 0
        assert 0 < m.ttft_s_p50 <= m.e2e_s_p50
        assert m.output_tok_s > 0 and m.tok_s_per_gpu == pytest.approx(m.total_tok_s)
        client_out += sum(r.n_out for r in records)
        client_in += sum(r.n_in for r in records)
    assert after.generation_tokens - before.generation_tokens == client_out
    assert after.prompt_tokens - before.prompt_tokens == client_in
    assert result.harness.version and stored.provenance.engine_version


@pytest.mark.vllm
def test_energy_is_nominal_and_flagged_and_cost_recomputes(vllm_server, run_env, tmp_path):
    plan = _endpoint_plan(vllm_server, run_env, [2])
    execute(plan, tmp_path / "run", run_env)
    point = read_summary(tmp_path / "run").points[0]
    e = point.energy
    assert e.energy_method == "nominal" and e.measured is False
    assert e.avg_power_w == pytest.approx(run_env.hardware.power_w)
    assert e.j_per_output_token == pytest.approx(e.energy_j / point.metrics.window_output_tokens)

    out = CliRunner().invoke(cli, ["cost", str(tmp_path / "run"), "--rental-usd-h", "3.6", "--utilization", "0.5", "--json"])
    assert out.exit_code == 0, out.output
    rows = json.loads(out.output)
    # hand calculation: $3.6 per GPU-hour at 50% load over the measured output tokens per GPU-second
    expected = 3.6 / (point.metrics.output_tok_s * 0.5 * 3600 / 1e6)
    assert rows[0]["usd_per_mtok_output"] == pytest.approx(expected, rel=1e-9)


def test_unknown_model_is_one_line_and_writes_nothing(tmp_path):
    out = CliRunner().invoke(cli, ["run", "--model", "no-such-model", "--out", str(tmp_path)])
    assert out.exit_code != 0
    assert out.output.strip().splitlines() == [
        line for line in out.output.strip().splitlines() if "unknown model 'no-such-model'" in line
    ]
    assert not any(tmp_path.iterdir())


def test_unknown_hardware_is_one_line(tmp_path):
    out = CliRunner().invoke(cli, ["run", "--hardware", "tpu-v9", "--out", str(tmp_path)])
    assert out.exit_code != 0
    assert "unknown hardware 'tpu-v9'" in out.output and len(out.output.strip().splitlines()) == 1
    assert not any(tmp_path.iterdir())


@pytest.mark.vllm
def test_engine_that_exits_at_start_is_one_line_and_the_run_is_not_complete(tmp_path):
    out = CliRunner().invoke(cli, ["run", "--concurrency", "1", "--requests", "2", "--out", str(tmp_path),
                                   "--engine-arg", "no_such_engine_flag=1"])
    assert out.exit_code == 3
    last = out.output.strip().splitlines()[-1]
    assert last.startswith("bench: error: vLLM server exited with code") and "no-such-engine-flag" in last
    (run_dir,) = tmp_path.iterdir()
    stored = read_summary(run_dir)
    assert stored.status == "failed" and "exited" in stored.error
    assert not stored.points
