"""An OpenAI-compatible server that is already running (SGLang, TGI, a remote vLLM)."""

from __future__ import annotations

from pathlib import Path

from bench.engines.base import EngineDied, parse_prometheus_counters
from bench.engines.process import http_get
from bench.engines.vllm_server import COUNTERS


class Endpoint:
    """Benchmarks `base_url` without launching anything; start() only checks it answers."""

    def __init__(self, base_url: str, served_model: str, log_path: Path, n_gpus: int = 1, **_ignored):
        self.base_url = base_url.rstrip("/").removesuffix("/v1")
        self.served_model = served_model
        self.log_path = Path(log_path)
        self.n_gpus = n_gpus

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
