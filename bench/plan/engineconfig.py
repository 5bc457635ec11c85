"""One engine start: the model, its weights, precision, parallelism and engine arguments.

`config_id()` names it (stable across harness versions: fields at their default do not
enter the hash); `n_gpus` is the devices it occupies, TP x PP x DP, over `nnodes` machines
(`n_gpus_local` on each: vLLM's multi-node launch, bench.engines.multinode).
"""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from bench.catalog.configbase import safe_id
from bench.catalog.dtypes import precision_label
from bench.plan.lora import LoraConfig
from bench.plan.speculative import SpeculativeSpec
from bench.plan.sweepfile import gpus_problem


class EngineConfig(BaseModel):
    """One engine start: the model, its weights, precision and engine arguments."""

    model_config = ConfigDict(extra="forbid")

    model: str  # catalog key (models.yaml)
    weights: str = "dummy"  # "dummy" | HF repo id | local path
    # True when `weights` is a checkpoint already stored in the quantized format
    # (the catalog's fp8_repo): vLLM reads the method from its config, so the runner
    # must not pass --quantization (vLLM rejects a mismatch such as compressed-tensors vs fp8).
    weights_prequantized: bool = False
    engine: str = "vllm"  # a name registered in bench.catalog.engines
    endpoint_url: str | None = None  # for engine "endpoint"
    dtype: str = "auto"  # bench.catalog.dtypes.DTYPES
    quantization: str | None = None  # None | bench.catalog.dtypes.QUANTIZATIONS (fp8 weights)
    kv_cache_dtype: str = "auto"  # bench.catalog.dtypes.KV_CACHE_DTYPES
    tensor_parallel_size: int = Field(1, ge=1, strict=True)  # vLLM --tensor-parallel-size
    pipeline_parallel_size: int = Field(1, ge=1, strict=True)  # vLLM --pipeline-parallel-size
    data_parallel_size: int = Field(1, ge=1, strict=True)  # vLLM --data-parallel-size (replicas)
    enable_expert_parallel: bool = Field(False, strict=True)  # vLLM --enable-expert-parallel (MoE experts split over TP x DP)
    # Machines the model spans (vLLM --nnodes / data parallel across nodes); n_gpus_local on each.
    nnodes: int = Field(1, ge=1, strict=True)
    # The follower nodes' agents (`bench node serve`), "host:port", nnodes - 1 of them; this machine is
    # the head. Where a config runs, not what it is: never part of config_id().
    nodes: list[str] | None = None
    # Device indices this configuration runs on (`--gpus 0,1`); None: the runner assigns them.
    # Where a config runs, not what it is: never part of config_id().
    gpus: list[Annotated[int, Field(strict=True, ge=0)]] | None = None
    max_num_seqs: int | None = Field(None, ge=1)
    max_model_len: int | None = Field(None, ge=1)
    extra_args: dict[str, Any] = Field(default_factory=dict)  # more engine args (--key value)
    # speculative decoding (issue 21): None = off, so every existing config_id is kept
    speculative: SpeculativeSpec | None = None
    lora: LoraConfig | None = None  # LoRA adapters served beside the base model (issue 21, lora; bench.plan.lora)

    @model_validator(mode="before")
    @classmethod
    def _parallel_out_of_extra(cls, data: Any) -> Any:
        """Parallel sizes given as pass-through engine args (older sweeps) become fields."""
        if isinstance(data, dict) and isinstance(data.get("extra_args"), dict):
            data, extra = dict(data), dict(data["extra_args"])
            for key in _PARALLEL_FIELDS:
                if key in extra:
                    if key in data and data[key] != extra[key]:
                        raise ValueError(f"{key} given twice ({data[key]} and extra_args {extra[key]})")
                    data = {**data, key: extra.pop(key)}
            data["extra_args"] = extra
        return data

    @model_validator(mode="after")
    def _nodes_match(self) -> EngineConfig:
        reason = nodes_problem(self)
        if reason:
            raise ValueError(reason)
        return self

    @model_validator(mode="after")
    def _gpus_match(self) -> EngineConfig:
        if self.gpus is not None:
            reason = gpus_problem(self.gpus, self.n_gpus_local)
            if reason:
                raise ValueError(f"{reason} ({self.parallel_label()})")
        return self

    def config_id(self) -> str:
        """Short stable id: the model key + 8 hex of a hash of the non-default fields.

        Fields left at (or set to) their default do not enter the hash, so adding a field
        with a default later keeps every existing id. `gpus` never enters it; the parallel
        sizes are hashed inside extra_args, where configurations held them before they
        were fields, so those keep their ids too."""
        canon = self.model_dump(exclude_defaults=True, exclude={"gpus", "nodes", *_PARALLEL_FIELDS})
        moved = {k: getattr(self, k) for k in _PARALLEL_FIELDS if getattr(self, k) != _DEFAULTS[k]}
        if moved:
            canon["extra_args"] = {**self.extra_args, **moved}
        text = json.dumps(canon, sort_keys=True, default=str)
        digest = hashlib.sha1(text.encode()).hexdigest()[:8]
        return f"{safe_id(self.model)}-{digest}"

    @property
    def n_gpus(self) -> int:
        """Devices this configuration occupies: TP x PP x DP (each DP replica holds TP x PP)."""
        return self.tensor_parallel_size * self.pipeline_parallel_size * self.data_parallel_size

    @property
    def n_gpus_local(self) -> int:
        """Devices on each of the `nnodes` machines (all of n_gpus on one machine)."""
        return self.n_gpus // self.nnodes

    def parallel_label(self) -> str:
        """e.g. "TP 4 x DP 2" (sizes of 1 left out; "TP 1" when all are 1), "+ EP" with expert parallel,
        "over 2 nodes" when it spans machines."""
        parts = [f"{name} {size}" for name, size in (("TP", self.tensor_parallel_size),
                 ("PP", self.pipeline_parallel_size), ("DP", self.data_parallel_size)) if size > 1]
        label = " x ".join(parts or ["TP 1"]) + (" + EP" if self.enable_expert_parallel else "")
        return label + (f" over {self.nnodes} nodes" if self.nnodes > 1 else "")

    def precision(self) -> str:
        """The precision label (bench.catalog.dtypes.precision_label), e.g. "bf16", "fp8", "fp8+fp8-kv"."""
        return precision_label(self.dtype, self.quantization, self.kv_cache_dtype)


def nodes_problem(cfg: EngineConfig) -> str | None:
    """Why `cfg` cannot be split over its `nnodes` machines the way vLLM's multi-node launch
    splits it; None when it can. Data parallel: whole replicas per node. Otherwise one TP x PP
    world divided evenly over the nodes."""
    n = cfg.nnodes
    if n == 1:
        return "nodes are for configurations with nnodes > 1" if cfg.nodes else None
    if cfg.data_parallel_size > 1:
        if cfg.data_parallel_size % n:
            return (f"nnodes {n} must divide data_parallel_size {cfg.data_parallel_size} "
                    "(whole replicas per node; replicas spanning nodes are not supported)")
    elif cfg.n_gpus % n:
        return f"nnodes {n} must divide the world size TP x PP = {cfg.n_gpus}"
    if cfg.nodes is not None:
        if len(cfg.nodes) != n - 1:
            return f"nodes lists {len(cfg.nodes)} follower agents, nnodes {n} needs {n - 1} (this machine is the head)"
        bad = [a for a in cfg.nodes if not _is_host_port(a)]
        if bad:
            return f"nodes {bad}: each must be host:port of a `bench node serve` agent"
        if len(set(cfg.nodes)) != len(cfg.nodes):
            return f"nodes {cfg.nodes} lists an agent twice"
    return None


def _is_host_port(text: str) -> bool:
    host, sep, port = str(text).rpartition(":")
    return bool(sep and host and port.isdigit() and 0 < int(port) < 65536)


_PARALLEL_FIELDS = ("pipeline_parallel_size", "data_parallel_size", "enable_expert_parallel", "nnodes")
_DEFAULTS = {"pipeline_parallel_size": 1, "data_parallel_size": 1, "enable_expert_parallel": False, "nnodes": 1}

