"""Bytes per weight and per KV-cache element of an engine configuration on a model.

The one place a precision becomes a byte width: preflight (memory fit), the duration
estimate and the roofline all call these, so they cannot disagree. `dtype: auto` is the
model's own `torch_dtype` (what vLLM loads with `--dtype auto`), not a fixed 2 bytes.
`cfg` is anything with `dtype`, `quantization` and `kv_cache_dtype` (an EngineConfig).
"""

from __future__ import annotations

from typing import Any

DTYPE_BYTES = {"bfloat16": 2.0, "float16": 2.0, "float32": 4.0, "half": 2.0, "float": 4.0}
_DEFAULT_DTYPE = "bfloat16"


def dtype_bytes(dtype: str, model: Any = None) -> float:
    """Bytes of one element of `dtype`; "auto" resolves to the model's torch_dtype
    (bfloat16 when the model has none). Unknown names count 2 bytes."""
    if dtype == "auto":
        dtype = getattr(getattr(model, "config", None), "torch_dtype", None) or _DEFAULT_DTYPE
    return DTYPE_BYTES.get(str(dtype).removeprefix("torch."), 2.0)


def bytes_per_param(cfg: Any, model: Any = None) -> float:
    """Bytes per weight: 1 for fp8 weights, else the activation dtype's."""
    if str(cfg.quantization or "").startswith("fp8"):
        return 1.0
    return dtype_bytes(cfg.dtype, model)


def kv_bytes_per_elem(cfg: Any, model: Any = None) -> float:
    """Bytes per KV-cache element: 1 for an fp8 KV cache (fp8, fp8_e4m3, fp8_e5m2), else the dtype's."""
    if str(cfg.kv_cache_dtype or "auto").startswith("fp8"):
        return 1.0
    return dtype_bytes(cfg.dtype, model)
