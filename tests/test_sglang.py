"""SGLang as a launched engine (issue 21 item 2). SGLang does not run on this CPU box, so: the
argv bench builds is parsed by SGLang's own parser (sglang/srt/server_args.py, in .venv-sglang
made by scripts/install.sh), and the lifecycle runs against a faithful fake launched the same
way (bench.testing.fake_sglang: SGLang's endpoints, metric names and labels)."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import urllib.request
from pathlib import Path

import pytest

from bench.engines import engine_class
from bench.engines.base import engine_args_to_cli
from bench.engines.sglang_metrics import SGLANG_COUNTERS
from bench.engines.sglang_server import SglangServer, sglang_launch_args
from bench.engines.vllm_metrics import parse_page
from bench.errors import ConfigError, EngineError
from bench.plan import EngineConfig, Plan, PointSpec

REPO = Path(__file__).resolve().parents[1]
FAKE_MODULE = "bench.testing.fake_sglang"


def sglang_python() -> str:
    path = os.environ.get("BENCH_SGLANG_PYTHON") or str(REPO / ".venv-sglang" / "bin" / "python")
    if not Path(path).is_file():
        pytest.fail(f"SGLang's parser venv is missing ({path}): scripts/install.sh creates .venv-sglang/ "
                    "(or set BENCH_SGLANG_PYTHON to a python with sglang installed)")
    return path


# SGLang's own parser: prepare_server_args(argv) is what `python -m sglang.launch_server` runs first.
PARSE = r"""
import json, sys
from sglang.srt.server_args import prepare_server_args
out = []
for argv in json.loads(sys.stdin.read()):
    a = prepare_server_args(argv)
    out.append({k: getattr(a, k) for k in ("model_path", "served_model_name", "host", "port", "tp_size", "dp_size",
                "pp_size", "ep_size", "dtype", "quantization", "kv_cache_dtype", "enable_metrics", "load_format",
                "context_length", "max_running_requests", "device")})
print(json.dumps(out))
"""

CONFIGS = [
    dict(model="tiny-llama"),
    dict(model="tiny-qwen3-moe", tensor_parallel_size=2, data_parallel_size=2, enable_expert_parallel=True,
         dtype="bfloat16", quantization="fp8", kv_cache_dtype="fp8", max_num_seqs=64, max_model_len=4096),
    dict(model="tiny-llama", pipeline_parallel_size=2, dtype="float16", weights="real"),
]


def _argv(cfg: EngineConfig, device: str = "cuda") -> list[str]:
    server = SglangServer("/models/x", cfg.model, Path("/tmp/x.log"), engine_args=sglang_launch_args(cfg, device),
                          port=30001)
    argv = server.argv()
    assert argv[1:3] == ["-m", "sglang.launch_server"]
    return argv[3:]


@pytest.mark.torch  # SGLang's parser imports torch (in its own process): about 20-80 s on the 2-core box
def test_sglangs_own_parser_reads_the_argv_bench_builds():
    cfgs = [EngineConfig(**c) for c in CONFIGS]
    argvs = [_argv(c) for c in cfgs] + [_argv(cfgs[0], "cpu")]
    done = subprocess.run([sglang_python(), "-c", PARSE], input=json.dumps(argvs), capture_output=True, text=True,
                          timeout=180, cwd="/")
    assert done.returncode == 0, done.stderr[-2000:]
    plain, moe, pp, cpu = json.loads(done.stdout.strip().splitlines()[-1])
    assert plain["model_path"] == "/models/x" and plain["host"] == "127.0.0.1" and plain["port"] == 30001
    assert plain["served_model_name"] == "tiny-llama" and plain["enable_metrics"] is True
    assert plain["tp_size"] == 1 and plain["dp_size"] == 1 and plain["load_format"] == "dummy"
    assert moe["tp_size"] == 2 and moe["dp_size"] == 2 and moe["ep_size"] == 2
    assert moe["dtype"] == "bfloat16" and moe["quantization"] == "fp8" and moe["kv_cache_dtype"] == "fp8_e4m3"
    assert moe["max_running_requests"] == 64 and moe["context_length"] == 4096
    assert pp["pp_size"] == 2 and pp["dtype"] == "float16" and pp["load_format"] == "auto"
    assert cpu["device"] == "cpu"


def test_what_sglang_cannot_take_is_refused_by_name():
    with pytest.raises(ConfigError, match="speculative block is mapped to vLLM only"):
        sglang_launch_args(EngineConfig(model="tiny-llama", speculative={"method": "ngram", "num_speculative_tokens": 2}),
                           "cuda")
    server = SglangServer("/m", "m", Path("/tmp/x.log"))
    server.server_module = "no_such_sglang_module.launch_server"
    with pytest.raises(EngineError, match="'no_such_sglang_module' is not installed"):
        server.start()


def test_sglang_metrics_page_reads_as_counters():
    page = (REPO / "tests" / "data" / "sglang_0.5.23_metrics.txt").read_text()
    values = parse_page(page, SGLANG_COUNTERS)
    # is_streaming true + false, and cache_source device + host, summed
    assert values == {"prompt_tokens": 1500.0, "generation_tokens": 820.0, "prefix_cache_hits": 96.0, "preemptions": 1.0}
    from bench.telemetry.server_metrics import parse_metrics

    gauges = parse_metrics(page)
    assert gauges["running_requests"] == 5 and gauges["waiting_requests"] == 2  # two DP ranks summed
    assert gauges["kv_cache_usage"] == 0.25  # the fuller DP rank


class _Fake(SglangServer):
    server_module = FAKE_MODULE


def _stream(base_url: str, model: str, n: int) -> None:
    body = json.dumps({"model": model, "prompt": "one two three four", "max_tokens": n, "stream": True,
                       "stream_options": {"include_usage": True}}).encode()
    req = urllib.request.Request(base_url + "/v1/completions", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        r.read()


def _wait_running(engine: SglangServer, timeout_s: float = 10.0) -> None:
    """Until SGLang's gauge shows a running request (bounded)."""
    import time

    from bench.telemetry.server_metrics import parse_metrics

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with urllib.request.urlopen(engine.base_url + "/metrics", timeout=5) as r:
            if parse_metrics(r.read().decode()).get("running_requests", 0) >= 1:
                return
    raise AssertionError(f"no running request within {timeout_s} s")


@pytest.mark.slow
def test_lifecycle_against_the_fake_sglang(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_FAKE_SGLANG_STARTUP_S", "1.0")  # /health answers 503 first, as SGLang starting
    cfg = EngineConfig(model="tiny-llama", max_num_seqs=4)
    engine = _Fake.from_config(cfg, model_path=str(tmp_path), model_spec=None, log_path=tmp_path / "engine.log",
                               device="cuda", devices=[0], vendor="nvidia")
    try:
        engine.start()
        assert engine.healthy() and engine.version() == "0.5.23"  # from /server_info
        # /health was checked every HEALTH_POLL_S (0.1 s) of the 1 s start, so the ready server was
        # seen within about 0.1 s of turning healthy (base: every 0.5 s, at most 3 checks answered 503)
        with urllib.request.urlopen(engine.base_url + "/server_info", timeout=10) as r:
            assert json.loads(r.read())["fake_health_503s"] >= 5
        before = engine.server_counters()
        _stream(engine.base_url, engine.served_model, 7)
        _stream(engine.base_url, engine.served_model, 7)
        delta = engine.server_counters().since(before)
        assert delta.generation_tokens == 14 and delta.prompt_tokens == 8
        assert delta.prefix_cache_queries == delta.prompt_tokens  # SGLang: every prompt token is looked up
        assert engine.reset_prefix_cache() == "done"
        slow = threading.Thread(target=_stream, args=(engine.base_url, engine.served_model, 500))
        slow.start()  # >= 1 s of streaming (500 x 2 ms, longer on a busy box): /flush_cache answers 400 while it runs
        try:
            _wait_running(engine)
            assert engine.reset_prefix_cache(retry_s=0.3) == "failed: HTTP 400"
        finally:
            slow.join(timeout=30)
        assert engine.reset_prefix_cache() == "done"
    finally:
        engine.stop()
    assert not engine.alive()
    assert "fake SGLang 0.5.23 serving" in engine.log_tail()


@pytest.mark.slow
def test_a_run_with_engine_sglang_goes_through_the_registry_like_vllm(tmp_path, monkeypatch, model_cache):
    """No runner special case: the registry resolves 'sglang', the runner starts it, measures the
    point from its counters and gauges, resets its cache (/flush_cache) and records its version."""
    from bench.results import read_summary
    from bench.run.environment import RunEnvironment
    from bench.run.runner import execute
    from bench.testing.fake_device import fake_device

    assert engine_class("sglang") is SglangServer
    monkeypatch.setattr(SglangServer, "server_module", FAKE_MODULE)
    monkeypatch.setenv("BENCH_FAKE_SGLANG_STARTUP_S", "0.2")
    cfg = EngineConfig(model="tiny-llama", engine="sglang")
    point = PointSpec(point_id=f"{cfg.config_id()}_w_c2_r0", engine_config_id=cfg.config_id(),
                      workload={"kind": "random", "input_len": 16, "output_len": 8},
                      load={"kind": "concurrency", "concurrency": 2}, n_warmup=1, n_requests=8)
    plan = Plan(engine_configs=[cfg], points=[point], name="sglang", n_devices=1, telemetry="none")
    env = RunEnvironment(device=fake_device("cpu", 0), hardware=None, idle_baseline_s=0.0, cache_dir=model_cache)
    result = execute(plan, tmp_path / "run", env)
    (p,) = result.points
    assert p.status == "ok", p.error
    # the server's token counters agree with the client's; only the small sample is a reason
    assert [r for r in p.invalid_reasons if "p99 unstable" not in r] == []
    assert p.server.prefix_cache_reset == "done"
    assert p.server.counter_delta["generation_tokens"] == p.server.client_counts["generation_tokens"] == 9 * 8
    assert p.server.preemptions_in_window == 0.0  # SGLang's retracted-requests counter, sampled around the window
    import pandas as pd

    series = pd.read_parquet(tmp_path / "run" / "server_metrics.parquet")
    assert {"running_requests", "waiting_requests", "kv_cache_usage"} <= set(series["metric"])
    run = read_summary(tmp_path / "run")
    assert run.extra["engine_version"][cfg.config_id()] == "0.5.23"


def test_one_model_on_both_engines_plans_two_configurations():
    from bench.catalog import get_hardware
    from bench.plan import build_plan, load_sweep

    plan = build_plan(load_sweep(REPO / "sweeps" / "gpu-vllm-vs-sglang.yaml"), get_hardware("h100-sxm"), 1)
    engines = [c.engine for c in plan.engine_configs]
    assert engines == ["vllm", "vllm", "sglang", "sglang"] and {c.model for c in plan.engine_configs} == {"llama-3.1-8b"}
    argv = engine_args_to_cli(SglangServer.launch_args(plan.engine_configs[3], "cuda"))
    assert argv[argv.index("--quantization") + 1] == "fp8" and "--enable-metrics" in argv
    assert argv[argv.index("--context-length") + 1] == "10240"


def test_a_model_entrys_engine_must_be_registered(tmp_path):
    from bench.plan import load_sweep

    path = tmp_path / "s.yaml"
    path.write_text(json.dumps({"models": [{"key": "tiny-llama", "engine": "sglangg"}],
                                "workloads": [{"kind": "random", "input_len": 8, "output_len": 8}],
                                "loads": [{"kind": "concurrency", "concurrency": 1}]}))
    with pytest.raises(ConfigError, match="unknown engine 'sglangg'; did you mean 'sglang'"):
        load_sweep(path)
