"""An OpenAI-compatible server that is already running (SGLang, TGI, a remote vLLM)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.engines.base import EngineDied, parse_prometheus_counters, reset_prefix_cache
from bench.engines.process import http_get
from bench.engines.vllm_server import COUNTERS
from bench.errors import ConfigError


class Endpoint:
    """Benchmarks `base_url` without launching anything; start() only checks it answers."""

    name = "endpoint"
    kind = "server"

    def __init__(self, base_url: str, served_model: str, log_path: Path, n_gpus: int = 1):
        self.base_url = base_url.rstrip("/").removesuffix("/v1")
        self.served_model = served_model
        self.log_path = Path(log_path)
        self.n_gpus = n_gpus
        self._reset: str | None = None  # the last prefix-cache reset's outcome

    @classmethod
    def launch_args(cls, cfg: Any, device: str) -> dict[str, Any]:
        return {}

    @classmethod
    def from_config(cls, cfg: Any, *, model_path: str | None = None, model_spec: Any = None, log_path: Path,
                    device: str = "cuda", devices: list[int] | None = None, vendor: str | None = None,
                    startup_timeout_s: float = 600.0) -> Endpoint:
        """The server at `cfg.endpoint_url`, serving `cfg.weights` (or the catalog key for dummy)."""
        if not cfg.endpoint_url:
            raise ConfigError("engine 'endpoint' needs endpoint_url (--url)")
        served = cfg.weights if cfg.weights != "dummy" else cfg.model
        return cls(cfg.endpoint_url, served, log_path, n_gpus=cfg.n_gpus)

    def version(self) -> str:
        """What the server reports at /version (vLLM: {"version": "0.32.0"}), else "unknown"."""
        status, body = http_get(f"{self.base_url}/version", timeout_s=5.0)
        if status != 200:
            return "unknown"
        try:
            version = json.loads(body).get("version")
        except (ValueError, AttributeError):
            return "unknown"
        return str(version) if version else "unknown"

    def start(self) -> None:
        self.check_alive()

    def check_alive(self) -> None:
        status, reason = http_get(f"{self.base_url}/v1/models", timeout_s=10.0)
        if status != 200:
            raise EngineDied(f"endpoint {self.base_url} does not answer /v1/models (status {status}{', ' + reason if reason else ''})")

    def alive(self) -> bool:
        return http_get(f"{self.base_url}/v1/models", timeout_s=5.0)[0] == 200

    healthy = alive

    def stop(self) -> None:
        pass

    def log_tail(self, n: int = 20) -> str:
        return ""

    def server_counters(self) -> dict[str, float] | None:
        """vLLM-style token counters when the endpoint exposes them, else None."""
        status, body = http_get(f"{self.base_url}/metrics", timeout_s=5.0)
        if status != 200:
            return None
        return parse_prometheus_counters(body, COUNTERS) or None

    def reset_prefix_cache(self) -> str:
        """Reset a vLLM endpoint's prefix cache where it allows it (VLLM_SERVER_DEV_MODE=1); once
        "unavailable", not asked again."""
        if self._reset != "unavailable":
            self._reset = reset_prefix_cache(self.base_url)
        return self._reset
