"""vLLM engine arguments from a plan EngineConfig, shared by the server and offline engines.

Keys are EngineArgs field names (vLLM 0.32): the server turns them into CLI flags
(`--pipeline-parallel-size 2`), the offline worker passes them to `LLM(**kwargs)`.
"""

from __future__ import annotations

from typing import Any

# EngineConfig fields -> EngineArgs keys, passed when set away from their default.
_PARALLEL = (
    ("pipeline_parallel_size", "pipeline_parallel_size", 1),
    ("data_parallel_size", "data_parallel_size", 1),
    ("enable_expert_parallel", "enable_expert_parallel", False),
)


def vllm_launch_args(cfg: Any, device: str) -> dict[str, Any]:
    """The arguments vLLM starts with besides model and served name (host and port for the
    server). `cfg.extra_args` wins over every derived value."""
    args: dict[str, Any] = {"dtype": cfg.dtype, "tensor_parallel_size": cfg.tensor_parallel_size}
    for field_name, key, default in _PARALLEL:
        value = getattr(cfg, field_name)
        if value != default:
            args[key] = value
    if cfg.weights == "dummy":
        args["load_format"] = "dummy"
    if cfg.quantization and not cfg.weights_prequantized:
        args["quantization"] = cfg.quantization
    if cfg.kv_cache_dtype != "auto":
        args["kv_cache_dtype"] = cfg.kv_cache_dtype
    for key in ("max_num_seqs", "max_model_len"):
        if getattr(cfg, key) is not None:
            args[key] = getattr(cfg, key)
    if getattr(cfg, "speculative", None) is not None:  # speculative decoding (issue 21): --speculative-config JSON
        args["speculative_config"] = cfg.speculative.vllm_config()
    if device == "cpu" and args["tensor_parallel_size"] == 1:
        args.pop("tensor_parallel_size")
    return {**args, **cfg.extra_args}
