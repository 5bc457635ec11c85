"""Precisions: the one place their names, labels, byte widths and the precision label live.

- Names are what an engine configuration holds (vLLM's `--dtype`, `--quantization`,
  `--kv-cache-dtype` values); labels are the short forms of sweep files and tables ("bf16").
- Byte widths: preflight (memory fit), the duration estimate and the roofline all call
  `bytes_per_param` / `kv_bytes_per_elem`, so they cannot disagree. `dtype: auto` is the
  model's own `torch_dtype` (what vLLM loads with `--dtype auto`), not a fixed 2 bytes.
- The precision label of a configuration (`precision_label`): the weights' precision, then
  the KV cache's when it has its own, e.g. "bf16", "fp8", "bf16+fp8-kv", "fp8+fp8-kv". The
  run's tables, the shared cost table and the plan all print this one label.
- A sweep's precision name ("bf16+fp8-kv") and the fields it sets: `precision_fields`, and
  back: `precision_name`.
`cfg` is anything with `dtype`, `quantization` and `kv_cache_dtype` (an EngineConfig).
"""

from __future__ import annotations

from typing import Any, Literal, TypedDict

from bench.errors import ConfigError

DTYPES = ("auto", "bfloat16", "float16", "float32")  # what a configuration's `dtype` (and --dtype) takes
QUANTIZATIONS = ("fp8",)  # weight quantizations (--quantization): fp8 weights, W8A8
KV_CACHE_DTYPES = ("auto", "fp8")  # --kv-cache-dtype; vLLM also takes fp8_e4m3 / fp8_e5m2 through a sweep
MATRIX_PRECISIONS = ("bf16", "fp16", "fp8", "fp4")  # the catalog's tflops keys (hardware/*.yaml)

# names -> labels; "half" and "float" are torch's aliases, which a model's torch_dtype may hold
DTYPE_LABELS = {"auto": "auto", "bfloat16": "bf16", "float16": "fp16", "half": "fp16", "float32": "fp32",
                "float": "fp32"}
_LABEL_NAMES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
DTYPE_BYTES = {"bfloat16": 2.0, "float16": 2.0, "float32": 4.0, "half": 2.0, "float": 4.0}
_DEFAULT_DTYPE = "bfloat16"  # a model without a torch_dtype
_MATRIX_BY_BYTES = {2.0: "bf16", 1.0: "fp8", 0.5: "fp4"}


class PrecisionFields(TypedDict, total=False):
    """The EngineConfig fields a precision name sets (those it leaves out stay unset)."""

    dtype: str
    quantization: str
    kv_cache_dtype: str


PrecisionField = Literal["dtype", "quantization", "kv_cache_dtype"]

# A sweep's precision name is parts joined by "+"; each part sets fields of the configuration.
PRECISION_PARTS: dict[str, dict[PrecisionField, str]] = {
    "auto": {"dtype": "auto"},
    **{label: {"dtype": name} for label, name in _LABEL_NAMES.items()},
    **{name: {"dtype": name} for name in _LABEL_NAMES.values()},
    **{q: {"quantization": q} for q in QUANTIZATIONS},
    "fp8-kv": {"kv_cache_dtype": "fp8"},
}


def is_fp8(name: str | None) -> bool:
    """An fp8 quantization or KV-cache dtype (fp8, fp8_e4m3, fp8_e5m2)."""
    return str(name or "").startswith("fp8")


def dtype_label(dtype: str) -> str:
    """"bfloat16" -> "bf16" (torch's "torch.bfloat16" too); a name without a label as it is."""
    name = str(dtype).removeprefix("torch.")
    return DTYPE_LABELS.get(name, name)


def dtype_name(dtype: str) -> str:
    """The torch name of a label or name ("bf16" or "bfloat16" -> "bfloat16"); ConfigError otherwise."""
    if dtype in _LABEL_NAMES:
        return _LABEL_NAMES[dtype]
    if dtype in _LABEL_NAMES.values():
        return dtype
    raise ConfigError(f"unknown dtype '{dtype}' (known: {', '.join([*_LABEL_NAMES, *_LABEL_NAMES.values()])})")


def dtype_bytes(dtype: str, model: Any = None) -> float:
    """Bytes of one element of `dtype`; "auto" resolves to the model's torch_dtype
    (bfloat16 when the model has none). Unknown names count 2 bytes."""
    if dtype == "auto":
        dtype = getattr(getattr(model, "config", None), "torch_dtype", None) or _DEFAULT_DTYPE
    return DTYPE_BYTES.get(str(dtype).removeprefix("torch."), 2.0)


def bytes_per_param(cfg: Any, model: Any = None) -> float:
    """Bytes per weight: 1 for fp8 weights, else the activation dtype's."""
    if is_fp8(cfg.quantization):
        return 1.0
    return dtype_bytes(cfg.dtype, model)


def kv_bytes_per_elem(cfg: Any, model: Any = None) -> float:
    """Bytes per KV-cache element: 1 for an fp8 KV cache (fp8, fp8_e4m3, fp8_e5m2), else the dtype's."""
    if is_fp8(cfg.kv_cache_dtype or "auto"):
        return 1.0
    return dtype_bytes(cfg.dtype, model)


def matrix_precision(bytes_per_weight: float) -> str:
    """The matrix precision (a tflops key) that weights of this width run at (4-byte weights: bf16)."""
    return _MATRIX_BY_BYTES.get(float(bytes_per_weight), "bf16")


def precision_label(dtype: str | None = "auto", quantization: str | None = None,
                    kv_cache_dtype: str | None = "auto") -> str:
    """The precision of a configuration as one label: the weights' precision (the quantization
    when the weights are quantized, else the dtype's label), then "+<kv>-kv" when the KV cache
    has a dtype of its own. bf16 weights quantized to fp8 with an fp8 KV cache: "fp8+fp8-kv".
    The compute dtype of quantized weights is not in the label (the `dtype` column has it)."""
    weights = quantization or dtype_label(dtype or "auto")
    kv = kv_cache_dtype or "auto"
    return weights if kv == "auto" else f"{weights}+{kv}-kv"


def precision_fields(name: str) -> PrecisionFields:
    """EngineConfig fields of a precision name: "bf16", "fp8", "fp8-kv", or parts joined
    by "+" such as "bf16+fp8-kv" (bf16 weights and activations, fp8 KV cache)."""
    fields: PrecisionFields = {}
    for part in name.lower().split("+"):
        if part not in PRECISION_PARTS:
            raise ConfigError(f"unknown precision '{name}' (known parts: {', '.join(PRECISION_PARTS)})")
        for key, value in PRECISION_PARTS[part].items():
            if key in fields and fields[key] != value:
                raise ConfigError(f"precision '{name}' sets {key} twice")
            fields[key] = value
    return fields


def precision_name(dtype: str | None = None, quantization: str | None = None, kv_cache_dtype: str | None = None) -> str:
    """The precision name that `precision_fields` reads back as exactly these fields (None: the
    default), e.g. ("bfloat16", "fp8", "fp8") -> "bfloat16+fp8+fp8-kv"."""
    parts = [dtype or "auto"]
    parts += [quantization] if quantization else []
    parts += ["fp8-kv"] if kv_cache_dtype == "fp8" else []
    return "+".join(parts)
