"""What every engine offers the runner, and helpers shared by the server engines."""

from __future__ import annotations

import re
from typing import Any, Protocol

from bench.errors import ConfigError, EngineError


class Engine(Protocol):
    """An engine the runner can start once and run load points against.

    Server engines expose `base_url` and `served_model` and are driven by the streaming
    client; in-process engines (transformers) implement `run_point` themselves.
    """

    n_gpus: int
    log_path: Any

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def alive(self) -> bool: ...
    def log_tail(self, n: int = 20) -> str: ...
    def server_counters(self) -> dict[str, float] | None: ...


class EngineDied(EngineError):
    """The engine process exited while it was expected to serve."""


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


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+([-+0-9.eEinfaN]+)")


def parse_prometheus_counters(text: str, names: dict[str, str]) -> dict[str, float]:
    """Sum Prometheus samples over their labels: {"vllm:generation_tokens_total": "generation_tokens"}."""
    out = {short: 0.0 for short in names.values()}
    found = set()
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if m and m.group(1) in names:
            out[names[m.group(1)]] += float(m.group(3))
            found.add(m.group(1))
    return {names[n]: out[names[n]] for n in found}


# The KV cache space vLLM's CPU backend reserves, in GiB, unless the user set it.
CPU_KVCACHE_SPACE_GIB = "2"


def vllm_child_env(device: str, engine_args: dict[str, Any], env: dict[str, str]) -> dict[str, str]:
    """Extra environment of a vLLM child process; refuses what cannot run on this device."""
    if device == "cpu" and str(engine_args.get("quantization") or "").startswith("fp8"):
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
