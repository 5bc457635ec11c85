"""The engines against their protocols, for the type checker (mypy reads this module; nothing
imports it at run time). An engine that lacks a member of `ServerEngine` or `BatchEngine`, or
has one of another signature, fails `python3 -m mypy` here (tests/test_lint.py), instead of a
test listing method names. The registered engines only (bench.catalog.engines): a multi-node
engine wraps one of them and is made by the runner, never by the registry."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench.engines.base import BatchEngine, ServerEngine
    from bench.engines.endpoint import Endpoint
    from bench.engines.hf_engine import HfEngine
    from bench.engines.sglang_server import SglangServer
    from bench.engines.vllm_offline import VllmOffline
    from bench.engines.vllm_server import VllmServer

    def _servers(a: VllmServer, b: Endpoint, c: SglangServer) -> list[ServerEngine]:
        return [a, b, c]

    def _batches(a: VllmOffline, b: HfEngine) -> list[BatchEngine]:
        return [a, b]
