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


def lora_launch_args(cfg: Any, model_spec: Any, model_path: str) -> dict[str, Any]:
    """`--enable-lora --max-loras --max-lora-rank --lora-modules name=path ...` for `cfg.lora`
    ({} without one). An adapter without a path gets random weights, built once beside the
    dummy-weight model folder (bench.catalog.lora); real weights need every adapter's path."""
    lora = getattr(cfg, "lora", None)
    if lora is None:
        return {}
    from pathlib import Path

    from bench.catalog.lora import prepare_adapter
    from bench.errors import ConfigError

    paths: dict[str, str] = {}
    for a in lora.adapters:
        if a.path is not None:
            paths[a.name] = a.path
        elif cfg.weights != "dummy":
            raise ConfigError(f"LoRA adapter '{a.name}' has no path: random adapters are made for dummy weights only")
        else:
            paths[a.name] = str(prepare_adapter(model_spec, Path(model_path).parent, a.name, a.rank, a.seed))
    return lora.launch_args(paths)
