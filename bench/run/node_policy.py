"""What a node agent accepts in a start request (docs/fleet.md, "What an agent accepts").

The request is typed (unknown keys refused) and every field that reaches the follower's vLLM
command line is checked here, by the agent, against its own catalog, its own model cache, the
head's addresses and its own allow-list of engine arguments. The agent then builds the command
line itself (bench.engines.multinode.follower_argv): nothing in the request is a command line.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from bench.engines.node_wire import Rendezvous, StartRequest
from bench.errors import ConfigError, one_line

# vLLM 0.32 serve options a head may pass through `extra_args` without the operator's leave:
# scheduling, memory and kernel knobs that take a number, a boolean or a fixed word. None reads
# a file, imports a module, fetches a model or names an address. (A test checks each is a vLLM
# option.) `bench node serve --allow-arg NAME` adds more.
DEFAULT_ALLOWED_ARGS = frozenset({
    "gpu_memory_utilization", "kv_cache_memory_bytes", "num_gpu_blocks_override", "block_size", "cpu_offload_gb",
    "max_num_batched_tokens", "enable_chunked_prefill", "long_prefill_token_threshold", "enable_prefix_caching",
    "scheduling_policy", "async_scheduling", "enforce_eager", "max_cudagraph_capture_size",
    "disable_custom_all_reduce", "disable_cascade_attn", "disable_sliding_window", "enable_eplb", "all2all_backend",
    "seed", "max_logprobs", "disable_log_stats",
})

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
# A string that reaches vLLM's command line as a value: never a flag, no whitespace or control characters.
_PLAIN = re.compile(r"^[A-Za-z0-9_.:/+=@,{}\[\]\"-]{1,256}$")


class NotAllowed(ConfigError):
    """A well-formed request this agent will not run (HTTP 403)."""

    http_status = 403


def arg_name(name: str) -> str:
    """An engine argument's EngineArgs name: "--chat-template" / "chat-template" -> "chat_template";
    ConfigError for anything that is not a plain option name."""
    norm = str(name).lstrip("-").replace("-", "_")
    if not _NAME.match(norm):
        raise NotAllowed(f"{str(name)[:80]!r} is not an engine argument name")
    return norm


@dataclass(frozen=True)
class CheckedStart:
    cfg: Any  # EngineConfig
    node_rank: int
    rendezvous: Rendezvous
    device: str
    weights: str  # "dummy", a catalog repo id, or a folder under the agent's cache


def start_request(body: Any) -> StartRequest:
    """A start request's parsed JSON body as a StartRequest; ConfigError (HTTP 400, one line) naming
    the first bad field."""
    return _typed(StartRequest, body, "start request")


def check_start(req: StartRequest, *, heads: set[str], allowed_args: frozenset[str], cache_dir: Path) -> CheckedStart:
    """The start request, checked; ConfigError (HTTP 400) when malformed, NotAllowed (403) when
    outside what this agent runs. Messages are one line."""
    from bench import __version__
    from bench.catalog import get_model
    from bench.plan import EngineConfig

    if req.bench_version != __version__:
        raise ConfigError(f"head runs bench {req.bench_version[:40]}, this node {__version__}: "
                          "install the same version on every node")
    cfg = _typed(EngineConfig, req.config, "config")
    if not req.node_rank < cfg.nnodes:
        raise ConfigError(f"node_rank {req.node_rank} outside the followers 1..{cfg.nnodes - 1} of nnodes {cfg.nnodes}")
    if req.rendezvous.head_addr not in heads:
        raise NotAllowed(f"rendezvous {req.rendezvous.head_addr[:80]} is not the head ({', '.join(sorted(heads))})")
    spec = get_model(cfg.model)  # ConfigError: not in this node's catalog
    for field in ("dtype", "quantization", "kv_cache_dtype"):
        value = getattr(cfg, field)
        if value is not None and not _plain(value):
            raise NotAllowed(f"{field} {str(value)[:80]!r} is not a plain value")
    for key, value in cfg.extra_args.items():
        name = arg_name(key)
        if name not in allowed_args:
            raise NotAllowed(f"engine argument {name} is not allowed on this node (not on its allow-list, docs/fleet.md; "
                             f"its operator may add it: `bench node serve --allow-arg {name.replace('_', '-')}`)")
        _check_value(name, value)
    weights = _check_weights(cfg.weights, spec, Path(cache_dir))
    return CheckedStart(cfg, req.node_rank, req.rendezvous, req.device, weights)


def _typed(model: type[BaseModel], data: Any, what: str):
    try:
        return model.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or what
        raise ConfigError(one_line(f"bad {what}: {where}: {first['msg']}")) from None


def _plain(value: Any) -> bool:
    return isinstance(value, str) and bool(_PLAIN.match(value)) and not value.startswith("-")


def _check_value(name: str, value: Any) -> None:
    """A value whose argv elements after its flag can never be taken for another flag
    (bench.engines.base.engine_args_to_cli: a list gives one element per item)."""
    if value is None or isinstance(value, dict):  # a dict is one JSON element, starting with "{"
        return
    items = value if isinstance(value, list) else [value]
    if all(isinstance(v, (bool, int, float)) or _plain(v) for v in items):
        return
    raise NotAllowed(f"engine argument {name}: value {str(value)[:80]!r} is not a number, boolean or plain word (or a list of them)")


def _check_weights(weights: str, spec: Any, cache_dir: Path) -> str:
    if weights == "dummy" or weights in {spec.hf_repo, spec.fp8_repo} - {None}:
        return weights
    if weights.startswith("/"):
        root = cache_dir.resolve()
        if Path(weights).resolve().is_relative_to(root):
            return weights
        raise NotAllowed(f"weights {weights[:120]!r} is not under this node's model cache ({root})")
    raise NotAllowed(f"weights {weights[:120]!r} is neither 'dummy', the catalog's repo of {spec.key}, "
                     f"nor a folder under this node's model cache ({cache_dir})")


def allow_list(extra: Iterable[str] = ()) -> frozenset[str]:
    """The default allow-list widened by the operator's `--allow-arg` names."""
    return DEFAULT_ALLOWED_ARGS | {arg_name(n) for n in extra}
