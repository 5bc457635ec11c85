"""The SGLang server (`python -m sglang.launch_server`) as a child process.

The same ServerEngine protocol as the vLLM server (bench.engines.base): `start()` spawns the
server in its own process group and waits for `/health`, `server_counters()` reads SGLang's
token counters (bench.engines.sglang_metrics), `reset_prefix_cache()` empties its radix cache
(`/flush_cache`), `version()` is what the server reports (`/server_info`), else the installed
package's. Arguments are SGLang 0.5.23's own flags (sglang/srt/server_args.py); the test suite
parses the argv this module builds with that parser (tests/test_sglang.py, .venv-sglang).

SGLang does not run on the CPU of this project's CI box: its lifecycle is tested against a
faithful fake (bench.testing.fake_sglang), which is launched the same way (`SERVER_MODULE`).
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from pathlib import Path
from typing import Any, ClassVar

from bench.catalog.engines import installed_version
from bench.engines.base import (
    OOM_PATTERNS,
    EngineCounters,
    EngineDied,
    EngineDoesNotFit,
    device_env,
    engine_args_to_cli,
    last_error_line,
    quote_log,
)
from bench.engines.process import ChildProcess, free_port, http_get, http_post, log_tail, wait_healthy
from bench.engines.sglang_metrics import PROMPT_TOKENS, SGLANG_COUNTERS
from bench.engines.vllm_metrics import parse_page
from bench.errors import ConfigError, EngineError

SERVER_MODULE = "sglang.launch_server"
# bench's KV-cache dtype names -> SGLang's --kv-cache-dtype choices (it has no bare "fp8")
KV_CACHE_DTYPES = {"fp8": "fp8_e4m3"}
FLUSH_CACHE_PATH = "/flush_cache"
SERVER_INFO_PATHS = ("/server_info", "/get_server_info")  # the second: SGLang before /server_info


def sglang_launch_args(cfg: Any, device: str) -> dict[str, Any]:
    """SGLang's arguments (ServerArgs field names) besides model, served name, host and port.
    `cfg.extra_args` (SGLang's own names) wins over every derived value."""
    if getattr(cfg, "speculative", None) is not None:
        raise ConfigError("engine 'sglang': the speculative block is mapped to vLLM only; give SGLang's "
                          "speculative_algorithm / speculative_num_draft_tokens under engine_args.extra")
    if cfg.nnodes > 1:
        raise ConfigError("engine 'sglang': multi-node configurations (nnodes > 1) are vLLM only")
    args: dict[str, Any] = {"tp_size": cfg.tensor_parallel_size, "dtype": cfg.dtype, "enable_metrics": True}
    if cfg.pipeline_parallel_size > 1:
        args["pp_size"] = cfg.pipeline_parallel_size
    if cfg.data_parallel_size > 1:
        args["dp_size"] = cfg.data_parallel_size  # replicas of tp_size GPUs each (n_gpus = TP x PP x DP)
    if cfg.enable_expert_parallel:
        args["ep_size"] = cfg.tensor_parallel_size  # experts over each replica's TP group
    if cfg.weights == "dummy":
        args["load_format"] = "dummy"
    if cfg.quantization and not cfg.weights_prequantized:
        args["quantization"] = cfg.quantization
    if cfg.kv_cache_dtype != "auto":
        args["kv_cache_dtype"] = KV_CACHE_DTYPES.get(cfg.kv_cache_dtype, cfg.kv_cache_dtype)
    if cfg.max_num_seqs is not None:
        args["max_running_requests"] = cfg.max_num_seqs
    if cfg.max_model_len is not None:
        args["context_length"] = cfg.max_model_len
    if device == "cpu":
        args["device"] = "cpu"
    return {**args, **cfg.extra_args}


class SglangServer:
    """Start, health-check and stop `python -m sglang.launch_server`; nothing happens in the constructor."""

    name: ClassVar[str] = "sglang"
    kind: ClassVar[str] = "server"
    server_module: ClassVar[str] = SERVER_MODULE

    def __init__(self, model_path: str, served_model: str, log_path: Path, engine_args: dict[str, Any] | None = None,
                 n_gpus: int = 1, host: str = "127.0.0.1", port: int | None = None,
                 startup_timeout_s: float = 600.0, env: dict[str, str] | None = None):
        self.model_path = model_path
        self.served_model = served_model
        self.log_path = Path(log_path)
        self.engine_args = dict(engine_args or {})
        self.n_gpus = n_gpus
        self.host = host
        self.port = port
        self.startup_timeout_s = startup_timeout_s
        self.env = dict(env or {})
        self._child: ChildProcess | None = None
        self._reported_version: str | None = None

    @classmethod
    def launch_args(cls, cfg: Any, device: str) -> dict[str, Any]:
        return sglang_launch_args(cfg, device)

    @classmethod
    def from_config(cls, cfg: Any, *, model_path: str, model_spec: Any, log_path: Path, device: str,
                    devices: list[int] | None = None, vendor: str | None = None,
                    startup_timeout_s: float = 600.0) -> SglangServer:
        """The server for one EngineConfig, pinned to `devices` (None: every visible one)."""
        return cls(model_path, cfg.model, log_path, engine_args=cls.launch_args(cfg, device), n_gpus=cfg.n_gpus,
                   startup_timeout_s=startup_timeout_s, env=device_env(devices, vendor))

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def argv(self) -> list[str]:
        return [sys.executable, "-m", self.server_module, "--model-path", self.model_path,
                "--served-model-name", self.served_model, "--host", self.host, "--port", str(self.port),
                *engine_args_to_cli(self.engine_args)]

    def start(self) -> None:
        top = self.server_module.split(".", 1)[0]
        if importlib.util.find_spec(top) is None:
            raise EngineError(f"engine 'sglang': the package '{top}' is not installed in {sys.executable} "
                              "(pip install sglang, on a machine with a GPU it supports)")
        if self.port is None:
            self.port = free_port(self.host)
        child = self._child = ChildProcess(self.argv(), self.log_path, self.env)
        child.start()
        outcome = wait_healthy(child, f"{self.base_url}/health", self.startup_timeout_s)
        if outcome == "ready":
            self._reported_version = self._server_version()
            return
        if outcome == "exited":
            raise self._start_failure(f"SGLang server exited with code {child.returncode} during start")
        self.stop()
        raise EngineError(f"SGLang server not healthy after {self.startup_timeout_s:.0f} s; log: {self.log_path}"
                          + quote_log(self.log_tail(5)))

    def _start_failure(self, what: str) -> EngineError:
        tail = self.log_tail(40)
        if OOM_PATTERNS.search(tail):
            return EngineDoesNotFit(f"{what}: out of memory (does not fit); log: {self.log_path}"
                                    + quote_log(last_error_line(tail)))
        return EngineDied(f"{what}; log: {self.log_path}" + quote_log(last_error_line(tail)))

    def _server_version(self) -> str | None:
        """The `version` of SGLang's server info; None when the server gives none."""
        for path in SERVER_INFO_PATHS:
            status, body = http_get(self.base_url + path, timeout_s=10.0)
            if status == 200:
                try:
                    version = json.loads(body).get("version")
                except (ValueError, AttributeError):
                    return None
                return str(version)[:40] if isinstance(version, str) and version else None
        return None

    def version(self) -> str:
        """What the running server reported (/server_info), else the installed sglang's version."""
        return self._reported_version or installed_version(self.name)

    def alive(self) -> bool:
        return self._child is not None and self._child.alive()

    def healthy(self) -> bool:
        return self.alive() and http_get(f"{self.base_url}/health", timeout_s=5.0)[0] == 200

    def stop(self) -> None:
        if self._child is not None:
            self._child.stop()

    def log_tail(self, n: int = 20) -> str:
        return log_tail(self.log_path, n)

    def server_counters(self) -> EngineCounters | None:
        """Token and prefix-cache counters from `/metrics` (bench.engines.sglang_metrics); None if unreachable."""
        status, body = http_get(f"{self.base_url}/metrics", timeout_s=5.0)
        if status != 200:
            return None
        values = parse_page(body, SGLANG_COUNTERS)
        if "prefix_cache_hits" in values and PROMPT_TOKENS in values:
            values["prefix_cache_queries"] = values[PROMPT_TOKENS]  # every prompt token is looked up
        return EngineCounters.from_samples(values)

    def reset_prefix_cache(self, retry_s: float = 5.0) -> str:
        """POST /flush_cache: "done", "unavailable" (404/405) or "failed: why". SGLang refuses (400)
        while requests run or wait: retried for up to `retry_s`, as the last ones finish."""
        deadline = time.monotonic() + retry_s
        while True:
            status, body = http_post(self.base_url + FLUSH_CACHE_PATH, timeout_s=10.0)
            if status == 200:
                return "done"
            if status in (404, 405):
                return "unavailable"
            if status != 400 or time.monotonic() > deadline:
                return f"failed: HTTP {status}" + (f" {body[:120]}" if status == 0 else "")
            time.sleep(0.2)
