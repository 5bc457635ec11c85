"""The catalog: `models.yaml` and `hardware/*.yaml` -> typed, validated objects.

Both live at the repository top level, next to the `bench` package; set
`BENCH_CATALOG_DIR` to read them from elsewhere. Unknown keys are errors that name the
key and the file. Model arithmetic (weight bytes, KV-cache bytes, FLOPs) lives on
`ModelSpec`; parameter counting from the architecture in `count_params`. The hardware
entries are defined in `bench.catalog.hardware` and re-exported here.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, NamedTuple

from pydantic import Field, ValidationError, field_validator, model_validator

from bench.catalog.configbase import Strict, catalog_dir, describe_error, read_yaml
from bench.catalog.hardware import (
    HARDWARE_DIR,
    TFLOPS_KEYS,
    HardwareSpec,
    PriceFigure,
    Prices,
    Scaleup,
    get_hardware,
    load_hardware,
)
from bench.errors import ConfigError

__all__ = [
    "HARDWARE_DIR", "MODELS_FILE", "TFLOPS_KEYS", "ArchConfig", "HardwareSpec", "MlaDims", "ModelSpec", "PriceFigure",
    "Prices", "Scaleup", "Slo", "catalog_dir", "count_params", "get_hardware", "get_model", "load_hardware",
    "load_models",
]

MODELS_FILE = "models.yaml"


def _count(value: Any) -> Any:
    """Accept 8.0e9 (a float, or the string YAML 1.1 leaves for unsigned exponents) as int."""
    if isinstance(value, str) and re.fullmatch(r"[0-9.]+[eE][+-]?[0-9]+", value.strip()):
        value = float(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


class MlaDims(NamedTuple):
    """The MLA (DeepSeek) attention dimensions, all set."""

    kv_lora_rank: int
    qk_nope_head_dim: int
    qk_rope_head_dim: int
    v_head_dim: int


class ArchConfig(Strict):
    """The HF config.json fields bench reads (HF names); `hf_extra` is copied verbatim."""

    architectures: list[str] = Field(min_length=1)
    model_type: str
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int | None = None
    head_dim: int | None = None
    vocab_size: int
    max_position_embeddings: int
    rope_theta: float
    rope_scaling: dict[str, Any] | None = None
    rms_norm_eps: float
    torch_dtype: str = "bfloat16"
    tie_word_embeddings: bool = False
    attention_bias: bool | None = None
    sliding_window: int | None = None
    layer_types: list[Literal["full_attention", "sliding_attention"]] | None = None
    # MoE: Qwen3-MoE names experts num_experts, Mixtral/gpt-oss num_local_experts,
    # DeepSeek n_routed_experts.
    num_experts: int | None = None
    num_local_experts: int | None = None
    n_routed_experts: int | None = None
    num_experts_per_tok: int | None = None
    moe_intermediate_size: int | None = None
    n_shared_experts: int | None = None
    decoder_sparse_step: int | None = None
    mlp_only_layers: list[int] | None = None
    norm_topk_prob: bool | None = None
    first_k_dense_replace: int | None = None
    moe_layer_freq: int | None = None
    # DeepSeek MLA and routing.
    kv_lora_rank: int | None = None
    q_lora_rank: int | None = None
    qk_nope_head_dim: int | None = None
    qk_rope_head_dim: int | None = None
    v_head_dim: int | None = None
    topk_method: str | None = None
    n_group: int | None = None
    topk_group: int | None = None
    routed_scaling_factor: float | None = None
    scoring_func: str | None = None
    hf_extra: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _complete(self) -> ArchConfig:
        if self.n_experts and not self.num_experts_per_tok:
            raise ValueError("an MoE config needs num_experts_per_tok")
        mla = ("qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim")
        if self.is_mla and any(getattr(self, k) is None for k in mla):
            raise ValueError(f"an MLA config (kv_lora_rank) needs {', '.join(mla)}")
        if self.layer_types is not None and len(self.layer_types) != self.num_hidden_layers:
            raise ValueError("layer_types needs one entry per layer")
        return self

    @property
    def is_mla(self) -> bool:
        return self.kv_lora_rank is not None

    @property
    def mla(self) -> MlaDims | None:
        """The MLA dimensions when kv_lora_rank is set (the validator asks for the rest), else None."""
        if (self.kv_lora_rank is None or self.qk_nope_head_dim is None or self.qk_rope_head_dim is None
                or self.v_head_dim is None):
            return None
        return MlaDims(self.kv_lora_rank, self.qk_nope_head_dim, self.qk_rope_head_dim, self.v_head_dim)

    @property
    def n_experts(self) -> int:
        """Routed experts per MoE layer (0 for a dense model)."""
        return self.num_experts or self.num_local_experts or self.n_routed_experts or 0

    @property
    def experts_per_token(self) -> int:
        """Routed experts chosen per token (the validator asks for it on an MoE model; 0 when unset)."""
        return self.num_experts_per_tok or 0

    @property
    def head_size(self) -> int:
        return self.head_dim or self.hidden_size // self.num_attention_heads

    @property
    def kv_heads(self) -> int:
        return self.num_key_value_heads or self.num_attention_heads

    def is_moe_layer(self, i: int) -> bool:
        if not self.n_experts:
            return False
        if self.first_k_dense_replace is not None:
            return i >= self.first_k_dense_replace and i % (self.moe_layer_freq or 1) == 0
        step = self.decoder_sparse_step or 1
        return (i + 1) % step == 0 and i not in (self.mlp_only_layers or [])

    @property
    def n_moe_layers(self) -> int:
        return sum(self.is_moe_layer(i) for i in range(self.num_hidden_layers))

    def is_sliding_layer(self, i: int) -> bool:
        if self.sliding_window is None:
            return False
        if self.layer_types is None:
            return True
        return self.layer_types[i] == "sliding_attention"

    @property
    def expert_params(self) -> int:
        """Parameters of one expert (gate, up, down projections; gpt-oss adds biases)."""
        ffn = self.moe_intermediate_size or self.intermediate_size
        bias = 2 * ffn + self.hidden_size if self.model_type == "gpt_oss" else 0
        return 3 * self.hidden_size * ffn + bias

    def attention_params(self) -> int:
        """Parameters of one attention block, projections plus their norms and biases."""
        h, nh = self.hidden_size, self.num_attention_heads
        mla = self.mla
        if mla is not None:
            qk = mla.qk_nope_head_dim + mla.qk_rope_head_dim
            if self.q_lora_rank:
                q = h * self.q_lora_rank + self.q_lora_rank + self.q_lora_rank * nh * qk
            else:
                q = h * nh * qk
            kv_a = h * (mla.kv_lora_rank + mla.qk_rope_head_dim) + mla.kv_lora_rank
            kv_b = mla.kv_lora_rank * nh * (mla.qk_nope_head_dim + mla.v_head_dim)
            return q + kv_a + kv_b + nh * mla.v_head_dim * h
        hd, kv = self.head_size, self.kv_heads
        qkv_out = nh * hd + 2 * kv * hd
        n = h * qkv_out + nh * hd * h
        if self.attention_bias or self.model_type == "qwen2":
            n += qkv_out
        if self.attention_bias:
            n += h + nh  # o_proj bias, gpt-oss attention sinks
        if self.model_type in ("qwen3", "qwen3_moe"):
            n += 2 * hd  # q_norm, k_norm
        return n


def count_params(cfg: ArchConfig) -> tuple[int, int]:
    """(total, active) parameters computed from the architecture, embeddings included.

    Active = everything but the routed experts not chosen for a token (top-k of them
    count, shared experts always). Small terms (router biases) may be missing: expect a
    few per cent against published totals.
    """
    h = cfg.hidden_size
    embed = cfg.vocab_size * h * (1 if cfg.tie_word_embeddings else 2)
    total = active = embed + h  # + final norm
    for i in range(cfg.num_hidden_layers):
        base = cfg.attention_params() + 2 * h
        if cfg.is_moe_layer(i):
            shared = (cfg.n_shared_experts or 0) * cfg.expert_params
            router = h * cfg.n_experts
            base += shared + router
            total += base + cfg.n_experts * cfg.expert_params
            active += base + cfg.experts_per_token * cfg.expert_params
        else:
            dense = 3 * h * cfg.intermediate_size
            total += base + dense
            active += base + dense
    return total, active


class Slo(Strict):
    """Latency limits a request must meet to count as goodput."""

    ttft_s: float = Field(gt=0)
    tpot_s: float = Field(gt=0)
    source: str


class AccuracyFloor(Strict):
    """The share of a task's questions a correct deployment of the model answers at least
    (docs/accuracy.md): the gate passes when the score's 95% Wilson lower bound clears it."""

    floor: float = Field(ge=0, le=1)
    source: str


class ModelSpec(Strict):
    """One models.yaml entry. Param counts left out are computed from the architecture."""

    key: str
    hf_repo: str | None = None
    fp8_repo: str | None = None
    total_params: int | None = None
    active_params: int | None = None
    max_context: int
    slo: Slo | None = None
    tiny: bool = False
    notes: list[str] = Field(default_factory=list)
    config: ArchConfig
    # accuracy gate (docs/accuracy.md): per lm-eval task name, the floor and where it comes from
    accuracy: dict[str, AccuracyFloor] = Field(default_factory=dict)

    @field_validator("total_params", "active_params", mode="before")
    @classmethod
    def _norm_counts(cls, v: Any) -> Any:
        return _count(v)

    @model_validator(mode="after")
    def _fill_counts(self) -> ModelSpec:
        if self.total_params is None or self.active_params is None:
            total, active = count_params(self.config)
            self.total_params = self.total_params or total
            self.active_params = self.active_params or active
        if self.active_params > self.total_params:
            raise ValueError("active_params exceeds total_params")
        return self

    @property
    def n_total_params(self) -> int:
        """total_params, which validation always sets (from the architecture when left out)."""
        if self.total_params is None:
            raise AssertionError("ModelSpec.total_params is set by validation")
        return self.total_params

    @property
    def n_active_params(self) -> int:
        """active_params, which validation always sets (from the architecture when left out)."""
        if self.active_params is None:
            raise AssertionError("ModelSpec.active_params is set by validation")
        return self.active_params

    @property
    def sparsity(self) -> float:
        """Active / total parameters (1.0 for a dense model)."""
        return self.n_active_params / self.n_total_params

    @property
    def is_moe(self) -> bool:
        return self.config.n_experts > 0

    def weight_bytes(self, bytes_per_param: float) -> float:
        """All weights, bytes."""
        return self.n_total_params * bytes_per_param

    def decode_weight_bytes(self, batch: int, bytes_per_param: float) -> float:
        """Weight bytes read by one decode step serving `batch` tokens.

        Dense: all weights. MoE: non-expert weights (shared experts included) plus, per
        MoE layer, the expected number of distinct routed experts touched under uniform
        routing, E * (1 - (1 - k/E)^batch).
        """
        if not self.is_moe:
            return self.weight_bytes(bytes_per_param)
        cfg = self.config
        e, k = cfg.n_experts, cfg.experts_per_token
        routed_all = cfg.n_moe_layers * e * cfg.expert_params
        non_expert = max(self.n_total_params - routed_all, 0)
        touched = e * (1.0 - (1.0 - k / e) ** max(batch, 1))
        routed = cfg.n_moe_layers * touched * cfg.expert_params
        return (non_expert + routed) * bytes_per_param

    def kv_bytes_per_token(self, bytes_per_elem: float, context_len: int | None = None) -> float:
        """KV-cache bytes per token of context, all layers.

        Standard attention 2 x kv_heads x head_dim per layer; MLA (kv_lora_rank +
        qk_rope_head_dim) per layer. Sliding-window layers count in full (an upper
        bound) unless `context_len` is given: then they count min(window, context) /
        context of a full layer.
        """
        cfg = self.config
        mla = cfg.mla
        if mla is not None:
            return (mla.kv_lora_rank + mla.qk_rope_head_dim) * cfg.num_hidden_layers * bytes_per_elem
        per_layer = 2 * cfg.kv_heads * cfg.head_size * bytes_per_elem
        window = cfg.sliding_window  # is_sliding_layer is False when it is None
        layers = 0.0
        for i in range(cfg.num_hidden_layers):
            if context_len and window is not None and cfg.is_sliding_layer(i):
                layers += min(window, context_len) / context_len
            else:
                layers += 1.0
        return per_layer * layers

    def flops_per_token(self, context_len: int) -> float:
        """FLOPs for one token at `context_len` tokens of context.

        2 x active params (embeddings counted: an approximation) + attention scores and
        values, 2 x heads x (qk_dim + v_dim) x attended tokens per layer (4 x heads x
        head_dim x context for standard attention; MLA in its non-absorbed form;
        sliding layers attend min(window, context) tokens).
        """
        cfg = self.config
        nh = cfg.num_attention_heads
        mla = cfg.mla
        if mla is not None:
            dims = mla.qk_nope_head_dim + mla.qk_rope_head_dim + mla.v_head_dim
        else:
            dims = 2 * cfg.head_size
        window = cfg.sliding_window  # is_sliding_layer is False when it is None
        attn = 0.0
        for i in range(cfg.num_hidden_layers):
            span = min(window, context_len) if window is not None and cfg.is_sliding_layer(i) else context_len
            attn += 2 * nh * dims * span
        return 2.0 * self.n_active_params + attn

    def config_json(self) -> dict[str, Any]:
        """An HF config.json for a dummy-weight run: fields set in YAML (nulls kept), plus
        torch_dtype, then `hf_extra`."""
        cfg = self.config
        out = cfg.model_dump(exclude_unset=True, exclude={"hf_extra"})
        out["torch_dtype"] = cfg.torch_dtype
        out["tie_word_embeddings"] = cfg.tie_word_embeddings
        out.update(cfg.hf_extra)
        return out


@lru_cache(maxsize=8)
def _load_models(path: str, _mtime_ns: int) -> dict[str, ModelSpec]:
    p = Path(path)
    data = read_yaml(p)
    if not isinstance(data, dict):
        raise ConfigError(f"{p.name}: expected a mapping of model key -> entry")
    models = {}
    for key, entry in data.items():
        if not isinstance(entry, dict):
            raise ConfigError(f"{p.name}: model '{key}': expected a mapping")
        if "key" in entry:
            raise ConfigError(f"{p.name}: model '{key}': unknown field 'key' (the mapping key is the key)")
        try:
            models[key] = ModelSpec.model_validate({**entry, "key": key})
        except ValidationError as e:
            raise ConfigError(f"{p.name}: model '{key}': {describe_error(e)}") from None
    return models


def load_models(path: str | Path | None = None) -> dict[str, ModelSpec]:
    """All models of models.yaml, by key (cached until the file changes)."""
    p = Path(path) if path else catalog_dir() / MODELS_FILE
    try:
        mtime = p.stat().st_mtime_ns
    except FileNotFoundError:
        raise ConfigError(f"{p}: file not found") from None
    return _load_models(str(p.resolve()), mtime)


def get_model(key: str, path: str | Path | None = None) -> ModelSpec:
    """One model by key; ConfigError naming the known keys when absent."""
    models = load_models(path)
    if key not in models:
        raise ConfigError(f"unknown model '{key}' (known: {', '.join(sorted(models))})")
    return models[key]
