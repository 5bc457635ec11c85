"""The run's resolved configuration as run.json stores it (`RunResult.config`), typed.

    cfg = run.config.engine_config(point.engine_config_id)   # -> StoredEngineConfig
    cfg.model, cfg.hardware_id, cfg.precision_label()

Written by `bench.run.runner.run_config`; read by the store and analysis. Version-1 and -2 files
keep loading: every field is optional, keys this version does not name are kept (and written
back) as they were, and a field that was absent is not written as null. GPU counts are kept as
stored: a file from a shared store may carry anything, and `bench.store.plausibility.n_gpus_of`
refuses a count that is not one by name.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer


class _Stored(BaseModel):
    """Typed fields over a stored dict: unknown keys kept, unset fields not written."""

    model_config = ConfigDict(extra="allow")

    @model_serializer(mode="wrap")
    def _as_stored(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data = handler(self)
        kept = self.model_fields_set | set(self.model_extra or {})
        return {k: v for k, v in data.items() if k in kept}


class StoredSpeculative(_Stored):
    """A stored configuration's speculative-decoding block (bench.plan.speculative.SpeculativeSpec
    as it dumps it): read leniently, the other keys kept."""

    method: str | None = None
    num_speculative_tokens: int | None = None


class StoredEngineConfig(_Stored):
    """One engine configuration of a run (bench.plan.EngineConfig as run.json records it)."""

    model: str | None = Field(default=None, description="Catalog model key.")
    hardware_id: str | None = Field(default=None, description="Catalog hardware id the run measured on.")
    weights: str | None = Field(default=None, description="real or dummy weights.")
    engine: str | None = Field(default=None, description="Engine name (vllm, vllm-offline, hf, endpoint).")
    engine_version: str | None = Field(default=None, description="The engine's installed version at the start.")
    dtype: str | None = Field(default=None, description="Weights and activations dtype (auto, bfloat16, ...).")
    quantization: str | None = Field(default=None, description="Quantization method, e.g. fp8; None: none.")
    kv_cache_dtype: str | None = Field(default=None, description="KV-cache dtype (auto, fp8, ...).")
    precision: str | None = Field(default=None, description="The precision label the runner stored (EngineConfig.precision).")
    n_gpus: Any = Field(default=None, description="GPUs of the configuration, TP x PP x DP (as stored; checked on use).")
    tensor_parallel_size: Any = Field(default=None, description="TP (as stored).")
    pipeline_parallel_size: Any = Field(default=None, description="PP (as stored).")
    data_parallel_size: Any = Field(default=None, description="DP replicas (as stored).")
    devices: list[int] | None = Field(default=None, description="Device indices the configuration ran on.")
    # speculative decoding (issue 21), as bench.plan.speculative.SpeculativeSpec dumps it
    speculative: StoredSpeculative | None = Field(default=None, description="Speculative decoding (method, "
                                                  "num_speculative_tokens, model, ...); None: off.")

    def precision_label(self) -> str:
        """The label of the stored dtype fields by the one rule (bench.catalog.dtypes.precision_label):
        a label an older bench stored beside them may follow an older rule (bf16 weights + fp8
        quantization + fp8 KV cache was 'bf16+fp8+fp8-kv' in a run and 'fp8' in the table). Only
        an entry with none of the three fields keeps its stored label."""
        from bench.catalog import dtypes

        if self.precision and not {"dtype", "quantization", "kv_cache_dtype"} & self.model_fields_set:
            return self.precision
        return dtypes.precision_label(self.dtype, self.quantization, self.kv_cache_dtype)


class RunConfig(StoredEngineConfig):
    """run.json `config`: the plan and every engine configuration; a single-configuration run
    also carries that configuration's fields at the top level."""

    name: str | None = Field(default=None, description="The plan's name.")
    n_devices: Any = Field(default=None, description="Devices the plan was made for (as stored).")
    endpoint: str | None = Field(default=None, description="completions or chat.")
    telemetry: str | None = Field(default=None, description="The energy method requested.")
    seed: Any = Field(default=None, description="The sweep seed.")
    engine_configs: dict[str, StoredEngineConfig] = Field(default_factory=dict,
                                                          description="Each engine configuration by config id.")
    plan_points: list[str] | None = Field(default=None, description="Point ids of the plan, in order.")
    plan: dict[str, Any] | None = Field(default=None, description="The plan, as bench.plan.Plan dumps it.")
    engine_args: dict[str, Any] | None = Field(default=None, description="Engine arguments of a single configuration.")

    def engine_config(self, config_id: str) -> StoredEngineConfig:
        """The configuration one point ran on: the run's top-level fields, overridden by the
        entry `config_id` of `engine_configs` when there is one."""
        top = {k: getattr(self, k) for k in self.model_fields_set & set(StoredEngineConfig.model_fields)}
        own = self.engine_configs.get(config_id)
        fields = top | ({k: getattr(own, k) for k in own.model_fields_set} | dict(own.model_extra or {})
                        if own is not None else {})
        return StoredEngineConfig(**fields)

    def configs(self) -> list[StoredEngineConfig]:
        """Every engine configuration (the top level alone for a run that lists none)."""
        return [self.engine_config(cid) for cid in (list(self.engine_configs) or ["default"])]
