"""Pure pieces of the engine and runner: argument mapping, Prometheus parsing, GPU indices,
process-group stop, and the log tail quoted when a server dies."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from bench.engines.base import engine_args_to_cli, parse_prometheus_counters
from bench.engines.process import ChildProcess, log_tail
from bench.engines.vllm_server import COUNTERS, VllmServer
from bench.errors import ConfigError, EngineError
from bench.plan import EngineConfig
from bench.run.runner import RunEnvironment, server_args, visible_gpu_indices


def test_engine_args_to_cli():
    args = {"max_num_seqs": 8, "enforce_eager": True, "enable_prefix_caching": False, "skip": None,
            "compilation_config": {"level": 0}}
    assert engine_args_to_cli(args) == [
        "--max-num-seqs", "8", "--enforce-eager", "--no-enable-prefix-caching",
        "--compilation-config", '{"level": 0}',
    ]


def test_prometheus_counters_sum_over_labels_and_ignore_other_series():
    text = """# HELP vllm:generation_tokens_total Number of generation tokens processed.
# TYPE vllm:generation_tokens_total counter
vllm:generation_tokens_total{engine="0",model_name="m"} 120.0
vllm:generation_tokens_total{engine="1",model_name="m"} 30.0
vllm:generation_tokens_created{engine="0",model_name="m"} 1.7e9
vllm:prompt_tokens_total{engine="0",model_name="m"} 4.5e2
"""
    assert parse_prometheus_counters(text, COUNTERS) == {"generation_tokens": 150.0, "prompt_tokens": 450.0}
    assert parse_prometheus_counters("", COUNTERS) == {}


def test_server_args_for_dummy_fp8_kv_and_passthrough():
    cfg = EngineConfig(model="tiny-llama", dtype="bfloat16", kv_cache_dtype="fp8", max_num_seqs=4,
                       extra_args={"enforce_eager": True})
    gpu = RunEnvironment(device={"vendor": "nvidia", "count": 1})
    assert server_args(cfg, gpu) == {
        "dtype": "bfloat16", "tensor_parallel_size": 1, "load_format": "dummy", "kv_cache_dtype": "fp8",
        "max_num_seqs": 4, "enforce_eager": True,
    }
    pre = EngineConfig(model="llama-3.1-8b", weights="org/x-FP8", quantization="fp8", weights_prequantized=True)
    assert "quantization" not in server_args(pre, gpu) and "load_format" not in server_args(pre, gpu)
    cpu = RunEnvironment(device={"vendor": "cpu", "count": 1})
    assert "tensor_parallel_size" not in server_args(cfg, cpu)


def test_visible_gpu_indices():
    assert visible_gpu_indices(4, visible="") == [0, 1, 2, 3]
    assert visible_gpu_indices(8, visible="2,5") == [2, 5]
    assert visible_gpu_indices(2, visible="GPU-3f2a,GPU-99") == [0, 1]  # UUIDs: NVML order


def test_fp8_weights_refused_on_cpu_before_anything_starts(tmp_path):
    server = VllmServer("/nonexistent", "m", tmp_path / "log", engine_args={"quantization": "fp8"}, device="cpu")
    with pytest.raises(ConfigError, match="fp8 .* does not run on CPU"):
        server.start()
    assert not (tmp_path / "log").exists()


def test_child_process_group_is_stopped_and_log_kept(tmp_path):
    code = ("import subprocess, sys, time; p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
            "print(p.pid, flush=True); time.sleep(60)")
    child = ChildProcess([sys.executable, "-c", code], tmp_path / "child.log")
    child.start()
    deadline = time.monotonic() + 10
    while not log_tail(tmp_path / "child.log") and time.monotonic() < deadline:
        time.sleep(0.05)
    grandchild = int(log_tail(tmp_path / "child.log"))
    assert child.alive()
    child.stop(grace_s=2)
    assert not child.alive()
    state = (Path(f"/proc/{grandchild}/stat").read_text().rsplit(")", 1)[1].split()[0]
             if Path(f"/proc/{grandchild}").exists() else "gone")
    assert state in ("Z", "gone")  # the grandchild went with the group
    assert (tmp_path / "child.log").read_text().splitlines()[0] == str(grandchild)  # the log is kept


def test_server_that_exits_at_start_quotes_its_log(tmp_path, monkeypatch):
    server = VllmServer("m", "m", tmp_path / "engine.log", device="cuda", startup_timeout_s=30)
    monkeypatch.setattr(server, "argv", lambda: [sys.executable, "-c",
                        "import sys; print('loading'); print('ValueError: bad flag --x', file=sys.stderr); sys.exit(2)"])
    with pytest.raises(EngineError, match=r"exited with code 2 during start.*ValueError: bad flag --x"):
        server.start()


def test_server_out_of_memory_at_start_means_does_not_fit(tmp_path, monkeypatch):
    from bench.engines.base import EngineDoesNotFit

    server = VllmServer("m", "m", tmp_path / "engine.log", device="cuda", startup_timeout_s=30)
    monkeypatch.setattr(server, "argv", lambda: [sys.executable, "-c",
                        "import sys; print('torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB'); sys.exit(1)"])
    with pytest.raises(EngineDoesNotFit, match="does not fit"):
        server.start()


def test_a_failed_summary_write_keeps_the_previous_file(tmp_path, monkeypatch):
    from bench import atomicio as results
    from bench.errors import ResultError

    path = tmp_path / "run.json"
    results.atomic_write_text(path, '{"v": 1}\n')

    def disk_full(fd, *a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(results.os, "fsync", disk_full)
    with pytest.raises(ResultError, match="No space left on device; the previous version of the file is kept"):
        results.atomic_write_text(path, '{"v": 2}\n')
    assert path.read_text() == '{"v": 1}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"]  # no temporary file left behind
