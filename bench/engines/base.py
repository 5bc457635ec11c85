"""What every engine offers the runner (the Engine protocol and its two kinds), the plain
outputs of batch engines, and helpers shared by the vLLM engines."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

from bench.catalog.dtypes import is_fp8
from bench.errors import ConfigError, EngineError


class Engine(Protocol):
    """Everything the runner uses of an engine. `kind` says which of the two shapes below it
    has ("server": ServerEngine, "batch": BatchEngine); the registry
    (`bench.catalog.engines`) declares the same kind for its name.

    Nothing happens in the constructor; `start()` loads the model (raises EngineDoesNotFit
    when it runs out of memory, EngineError otherwise), `stop()` may be called at any time.
    """

    name: ClassVar[str]
    kind: ClassVar[str]
    n_gpus: int
    log_path: Path

    @classmethod
    def from_config(cls, cfg: Any, *, model_path: str, model_spec: Any, log_path: Path, device: str,
                    devices: list[int] | None = None, vendor: str | None = None,
                    startup_timeout_s: float = 600.0) -> Engine:
        """The engine for one plan EngineConfig; raises ConfigError for what it cannot run."""
        ...

    @classmethod
    def launch_args(cls, cfg: Any, device: str) -> dict[str, Any]:
        """The engine arguments `cfg` starts this engine with (recorded in provenance)."""
        ...

    def version(self) -> str:
        """This engine's own version (its distribution's, or what its server reports)."""
        ...

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def alive(self) -> bool: ...
    def log_tail(self, n: int = 20) -> str: ...


class ServerEngine(Engine, Protocol):
    """kind "server": an OpenAI-compatible server the streaming client drives."""

    @property
    def base_url(self) -> str:
        """http://host:port of the server (no /v1)."""
        ...

    @property
    def served_model(self) -> str:
        """The model name requests carry."""
        ...

    def healthy(self) -> bool:
        """Alive and answering its health check."""
        ...

    def server_counters(self) -> EngineCounters | None:
        """The server's cumulative counters now; None if it exposes none."""
        ...

    def reset_prefix_cache(self) -> str:
        """Empty the server's prefix cache: "done", "unavailable" (the server has no reset) or "failed: why"."""
        ...


@dataclass(frozen=True)
class EngineCounters:
    """Cumulative counters a server exposes (vLLM's /metrics), summed over their labels; None
    where the server does not expose one. Tokens are tokens; preemptions are preemptions."""

    generation_tokens: float | None = None
    prompt_tokens: float | None = None
    prefix_cache_queries: float | None = None  # tokens looked up in the prefix cache
    prefix_cache_hits: float | None = None  # tokens found there
    preemptions: float | None = None
    # speculative decoding (issue 21): drafts proposed, tokens drafted, tokens accepted
    spec_drafts: float | None = None
    spec_draft_tokens: float | None = None
    spec_accepted_tokens: float | None = None

    @classmethod
    def from_samples(cls, values: dict[str, float]) -> EngineCounters | None:
        """From {field name: summed value} (a parser's output); None when it names none."""
        known = {k: float(v) for k, v in values.items() if k in cls.__dataclass_fields__}
        return cls(**known) if known else None

    def since(self, before: EngineCounters) -> EngineCounters:
        """The increase since `before` (a counter `before` lacks counts from 0)."""
        return EngineCounters(**{k: None if v is None else v - (getattr(before, k) or 0.0)
                                 for k, v in self.as_dict().items()})

    def as_dict(self) -> dict[str, float]:
        """The counters the server exposed, by name (what a result records as `counter_delta`)."""
        return {k: getattr(self, k) for k in self.__dataclass_fields__ if getattr(self, k) is not None}


@dataclass
class BatchRequest:
    """One sequence of a static batch: prompt token ids (or text) and exact output tokens."""

    max_tokens: int
    token_ids: list[int] | None = None
    text: str | None = None


@dataclass
class GeneratedSequence:
    """What a batch engine returns for one sequence. Times are perf_counter seconds:
    `t_first`/`t_last` the first and last output token (None: not known), `chunk_t[i]`
    when `chunk_tokens[i]` tokens reached the host."""

    n_in: int | None = None
    n_out: int = 0
    t_first: float | None = None
    t_last: float | None = None
    chunk_t: list[float] = field(default_factory=list)
    chunk_tokens: list[int] = field(default_factory=list)
    error: str | None = None


@dataclass
class BatchOutput:
    """One static batch: submitted at `t_send`, finished at `t_done` (perf_counter seconds).
    `error` set: the whole batch failed and `sequences` is empty."""

    t_send: float
    t_done: float
    sequences: list[GeneratedSequence] = field(default_factory=list)
    error: str | None = None


class BatchEngine(Engine, Protocol):
    """kind "batch": generates a whole static batch in one call (`bench.load.static` runs a
    point's batches and turns the outputs into RequestRecords)."""

    def generate_batch(self, requests: list[BatchRequest]) -> BatchOutput:
        """Every request at once, each forced to exactly `max_tokens` outputs. Raises
        EngineDied when the engine is gone, ConfigError for requests it cannot run."""
        ...

    def note(self, line: str) -> None:
        """Append one line to the engine log."""
        ...


def device_env(devices: list[int] | None, vendor: str | None = "nvidia") -> dict[str, str]:
    """Environment pinning a child process to `devices`, NVML / amdsmi indices
    (CUDA_VISIBLE_DEVICES on NVIDIA, in PCI bus order as NVML counts; HIP_VISIBLE_DEVICES on
    AMD); {} for None (every visible device) or the CPU."""
    if devices is None or vendor == "cpu":
        return {}
    listed = ",".join(str(int(d)) for d in devices)
    if vendor == "amd":
        return {"HIP_VISIBLE_DEVICES": listed}
    return {"CUDA_VISIBLE_DEVICES": listed, "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}


class EngineDied(EngineError):
    """The engine process exited while it was expected to serve."""

    # the point's requests that finished first (measure_point): bench.load.records.RequestRecord,
    # named here as Any because load comes after engines in the flow
    records: list[Any] | None = None


class EngineDoesNotFit(EngineError):
    """The engine ran out of memory while loading: this configuration does not fit."""


OOM_PATTERNS = re.compile(
    r"out of memory|OutOfMemoryError|No available memory for the cache blocks|"
    r"insufficient memory|larger than the available KV cache memory|Cannot allocate memory",
    re.IGNORECASE,
)


def engine_args_to_cli(args: dict[str, Any]) -> list[str]:
    """{"max_num_seqs": 8, "enforce_eager": True} -> ["--max-num-seqs", "8", "--enforce-eager"]."""
    out: list[str] = []
    for key, value in args.items():
        if value is None:
            continue
        flag = "--" + key.replace("_", "-")
        if value is True:
            out.append(flag)
        elif value is False:
            out.append("--no-" + key.replace("_", "-"))
        elif isinstance(value, (list, tuple)):
            out += [flag, *map(str, value)]
        elif isinstance(value, dict):
            import json

            out += [flag, json.dumps(value)]
        else:
            out += [flag, str(value)]
    return out


RESET_PREFIX_CACHE_PATH = "/reset_prefix_cache"  # vLLM, only with VLLM_SERVER_DEV_MODE=1


def reset_prefix_cache(base_url: str, retry_s: float = 5.0, post=None) -> str:
    """POST `base_url`/reset_prefix_cache: "done", "unavailable" (404/405: no such endpoint)
    or "failed: why". vLLM answers {"success": false} while blocks are still held (requests
    finishing, KV transfers): retried for up to `retry_s`."""
    import json
    import time

    if post is None:
        from bench.engines.process import http_post as post
    deadline = time.monotonic() + retry_s
    while True:
        status, body = post(base_url.rstrip("/") + RESET_PREFIX_CACHE_PATH, timeout_s=10.0)
        if status in (404, 405):
            return "unavailable"
        if status != 200:
            return f"failed: HTTP {status}{' ' + body[:120] if status == 0 else ''}"
        try:
            success = json.loads(body).get("success", True) if body.strip() else True
        except (ValueError, AttributeError):
            success = True  # a 200 without the JSON vLLM writes: the server says it did
        if success:
            return "done"
        if time.monotonic() > deadline:
            return f"failed: the server refused the reset for {retry_s:g} s (blocks still held)"
        time.sleep(0.2)


# The KV cache space vLLM's CPU backend reserves, in GiB, unless the user set it.
CPU_KVCACHE_SPACE_GIB = "2"


def vllm_child_env(device: str, engine_args: dict[str, Any], env: dict[str, str]) -> dict[str, str]:
    """Extra environment of a vLLM child process; refuses what cannot run on this device."""
    if device == "cpu" and is_fp8(engine_args.get("quantization")):
        raise ConfigError("fp8 weight quantization does not run on CPU; use bf16/fp32 here, fp8 on a GPU")
    env = dict(env)
    if device == "cpu":
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", CPU_KVCACHE_SPACE_GIB)
    return env


def last_error_line(tail: str) -> str:
    """The most telling line of a log tail: the last one naming an error, else the last line."""
    lines = [ln.strip() for ln in tail.splitlines() if ln.strip()]
    for ln in reversed(lines):
        if "Error" in ln or "error" in ln or "Exception" in ln:
            return ln
    return lines[-1] if lines else ""


def quote_log(text: str) -> str:
    """`: line | line` (at most 400 characters) for a one-line error message; '' for no text."""
    text = " | ".join(t for t in text.splitlines() if t.strip())
    return f": {text[-400:]}" if text else ""
