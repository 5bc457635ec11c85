"""The plan: a sweep file (or single-run options) + CLI overrides -> ordered load points.

The sweep file's schema and loading live in `bench.plan.sweepfile` (re-exported here).

`Plan.points` is ordered for the runner: grouped by engine configuration (one engine start
each), then workload (in file order), then load ascending, then repeat. Points that
preflight rejects are listed in `Plan.skipped` with a one-line reason, never run.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from bench.catalog.configbase import safe_id
from bench.errors import ConfigError
from bench.plan.sweepfile import (
    SLO,
    ConcurrencyLoad,
    EngineArgs,
    FileWorkload,
    ModelEntry,
    OfflineLoad,
    PreflightSettings,
    RandomWorkload,
    RateLoad,
    SharedPrefixWorkload,
    SweepSpec,
    apply_overrides,
    load_sweep,
    overrides_from_options,
    precision_fields,
    sweep_from_dict,
)

__all__ = [
    "DTYPES", "ENGINES", "SLO", "ConcurrencyLoad", "EngineArgs", "EngineConfig", "FileWorkload", "ModelEntry",
    "OfflineLoad", "Plan", "PointSpec", "PreflightSettings", "RandomWorkload", "RateLoad", "SharedPrefixWorkload",
    "Skipped", "SweepSpec", "apply_overrides", "build_plan", "load_sweep", "overrides_from_options",
    "plan_from_options", "precision_fields", "safe_id", "sweep_from_dict",
]

ENGINES = ("vllm", "vllm-offline", "hf", "endpoint")
DTYPES = ("auto", "bfloat16", "float16", "float32")


class EngineConfig(BaseModel):
    """One engine start: the model, its weights, precision and engine arguments."""

    model_config = ConfigDict(extra="forbid")

    model: str  # catalog key (models.yaml)
    weights: str = "dummy"  # "dummy" | HF repo id | local path
    # True when `weights` is a checkpoint already stored in the quantized format
    # (the catalog's fp8_repo): vLLM reads the method from its config, so the runner
    # must not pass --quantization (vLLM rejects a mismatch such as compressed-tensors vs fp8).
    weights_prequantized: bool = False
    engine: str = "vllm"  # "vllm" (OpenAI server) | "vllm-offline" | "hf" | "endpoint"
    endpoint_url: str | None = None  # for engine "endpoint"
    dtype: str = "auto"  # auto | bfloat16 | float16 | float32
    quantization: str | None = None  # None | "fp8" (fp8 weights)
    kv_cache_dtype: str = "auto"  # auto | fp8
    tensor_parallel_size: int = Field(1, ge=1)
    max_num_seqs: int | None = Field(None, ge=1)
    max_model_len: int | None = Field(None, ge=1)
    extra_args: dict[str, Any] = Field(default_factory=dict)  # more engine args (--key value)

    def config_id(self) -> str:
        """Short stable id: the model key + 8 hex of a hash of the non-default fields.

        Fields left at (or set to) their default do not enter the hash, so adding a field
        with a default later keeps every existing id."""
        canon = json.dumps(self.model_dump(exclude_defaults=True), sort_keys=True, default=str)
        digest = hashlib.sha1(canon.encode()).hexdigest()[:8]
        return f"{safe_id(self.model)}-{digest}"

    @property
    def n_gpus(self) -> int:
        """Devices this configuration occupies (tensor parallel x pipeline parallel)."""
        pp = int(self.extra_args.get("pipeline_parallel_size", 1))
        return self.tensor_parallel_size * pp

    def precision(self) -> str:
        """Short precision label, e.g. "bf16", "fp8", "bf16+fp8-kv"."""
        parts = [_DTYPE_LABEL.get(self.dtype, self.dtype)]
        if self.quantization:
            parts = [self.quantization] if self.dtype == "auto" else [*parts, self.quantization]
        if self.kv_cache_dtype != "auto":
            parts.append(f"{self.kv_cache_dtype}-kv")
        return "+".join(parts)


_DTYPE_LABEL = {"auto": "auto", "bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}


class PointSpec(BaseModel):
    """One load point: an engine configuration under one workload and one load."""

    model_config = ConfigDict(extra="forbid")

    point_id: str  # [A-Za-z0-9._-] only; unique in a plan; becomes a file name
    engine_config_id: str
    workload: dict[str, Any]  # {"kind": "random", "input_len": 128, "output_len": 64, ...}
    load: dict[str, Any]  # {"kind": "concurrency", "concurrency": 8} | rate | offline
    n_warmup: int
    n_requests: int
    repeat: int = 0
    slo: dict[str, float] | None = None  # {"ttft_s": 2.0, "tpot_s": 0.1}
    notes: list[str] = Field(default_factory=list)  # preflight remarks for a point that runs


class Skipped(BaseModel):
    """A point preflight rejected, with a one-line reason."""

    point: PointSpec
    reason: str


class Plan(BaseModel):
    """Everything a run executes, in order, plus what was skipped and the run settings."""

    engine_configs: list[EngineConfig]  # those with at least one point to run, in run order
    points: list[PointSpec]
    skipped: list[Skipped] = Field(default_factory=list)
    skipped_engine_configs: list[EngineConfig] = Field(default_factory=list)  # every point skipped
    name: str = "run"
    hardware_id: str | None = None  # what preflight planned for
    n_devices: int = 1
    endpoint: str = "completions"  # "completions" | "chat"
    telemetry: str = "auto"
    out_dir: str | None = None
    seed: int = 0

    def points_for(self, config_id: str) -> list[PointSpec]:
        """The runnable points of one engine configuration, in run order."""
        return [p for p in self.points if p.engine_config_id == config_id]

    def engine_config(self, config_id: str) -> EngineConfig:
        for cfg in [*self.engine_configs, *self.skipped_engine_configs]:
            if cfg.config_id() == config_id:
                return cfg
        raise ConfigError(f"no engine config '{config_id}' in plan '{self.name}'")


# ---------------------------------------------------------------- sweep -> plan


def build_plan(sweep: SweepSpec, hardware: Any = None, n_devices: int = 1, catalog: Any = None) -> Plan:
    """The ordered, preflighted plan of a sweep.

    `hardware`: a catalog hardware id or entry (the detected device); the sweep's own
    `hardware` key wins over it, its `devices` key over `n_devices`. None: no device checks.
    `catalog`: an object with get_model/get_hardware (default `bench.catalog`)."""
    from bench.plan import preflight

    if catalog is None:
        from bench import catalog
    if sweep.hardware:
        hardware = sweep.hardware
    if isinstance(hardware, str):
        hardware = catalog.get_hardware(hardware)
    n_devices = sweep.devices or n_devices
    target = None
    if hardware is not None:
        host_gb = preflight.host_memory_gb() if hardware.vendor == "cpu" and not sweep.hardware else None
        target = preflight.target_for(hardware, n_devices, host_gb)
    configs = _engine_configs(sweep, catalog)
    workloads = _workloads(sweep)
    loads = _loads(sweep)
    runnable, dead, points, skipped = [], [], [], []
    for cfg in configs:
        cid, model = cfg.config_id(), catalog.get_model(cfg.model)
        n_before = len(points)
        for wl_tag, wl_full, wl_run in workloads:
            for load in loads:
                verdict = preflight.check_point(
                    cfg, model, wl_full, load, target, sweep.preflight.memory_fraction, sweep.preflight.kv_overflow
                )
                for rep in range(sweep.repeats):
                    point = _point(sweep, cid, model, wl_tag, wl_run, load, rep, verdict.notes)
                    if verdict.reason:
                        skipped.append(Skipped(point=point, reason=verdict.reason))
                    else:
                        points.append(point)
        (runnable if len(points) > n_before else dead).append(cfg)
    return Plan(
        engine_configs=runnable,
        points=points,
        skipped=skipped,
        skipped_engine_configs=dead,
        name=sweep.name,
        hardware_id=hardware.id if hardware is not None else None,
        n_devices=n_devices,
        endpoint=sweep.endpoint,
        telemetry=sweep.telemetry,
        out_dir=sweep.out,
        seed=sweep.seed,
    )


def plan_from_options(
    model: str,
    *,
    concurrency: list[int] | tuple[int, ...] = (1,),
    input_len: int = 128,
    output_len: int = 64,
    hardware: Any = None,
    n_devices: int = 1,
    catalog: Any = None,
    **options: Any,
) -> Plan:
    """The plan of one `bench run`: the same path as a sweep, from single-run options.

    `options` are CLI option values (see `overrides_from_options`) or override keys (see
    `apply_overrides`): weights, dtype, quantization, kv_cache_dtype, n_requests, n_warmup,
    engine, endpoint_url, tensor_parallel_size, max_num_seqs, max_model_len, engine_args
    (pass-through dict), seed, endpoint, slo, telemetry, out_dir, name, ..."""
    raw = {
        "models": [model],
        "workloads": [{"kind": "random", "input_len": input_len, "output_len": output_len}],
        "loads": [{"kind": "concurrency", "concurrency": list(concurrency)}],
    }
    options.setdefault("name", f"run-{safe_id(model)}")
    sweep = sweep_from_dict(raw, overrides_from_options(options), source="options")
    return build_plan(sweep, hardware, n_devices, catalog)


def _engine_configs(sweep: SweepSpec, catalog: Any) -> list[EngineConfig]:
    """Models x weights x precisions x engine arguments, in file order, without repeats."""
    out: dict[str, EngineConfig] = {}
    for item in sweep.models:
        entry = ModelEntry(key=item) if isinstance(item, str) else item
        model = catalog.get_model(entry.key)
        args = entry.engine_args or sweep.engine_args
        for weights, precision in itertools.product(entry.weights or sweep.weights, entry.precisions or sweep.precisions):
            fields = precision_fields(precision)
            for tp, seqs, ctx, extra in itertools.product(
                args.tensor_parallel_size, args.max_num_seqs, args.max_model_len, args.extra
            ):
                cfg = EngineConfig(
                    model=entry.key,
                    **_resolve_weights(weights, model, fields),
                    engine=sweep.engine,
                    endpoint_url=sweep.endpoint_url,
                    tensor_parallel_size=tp,
                    max_num_seqs=seqs,
                    max_model_len=ctx,
                    extra_args=extra,
                    **fields,
                )
                out.setdefault(cfg.config_id(), cfg)
    return list(out.values())


def _resolve_weights(weights: str, model: Any, fields: dict[str, str]) -> dict[str, Any]:
    """"real" -> the catalog's repo (its fp8_repo for fp8 weights, when one exists)."""
    if weights != "real":
        return {"weights": weights}
    if fields.get("quantization") == "fp8" and model.fp8_repo:
        return {"weights": model.fp8_repo, "weights_prequantized": True}
    if not model.hf_repo:
        raise ConfigError(f"model '{model.key}' has no hf_repo for weights 'real'")
    return {"weights": model.hf_repo}


def _workloads(sweep: SweepSpec) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(tag, dict preflight reads, dict the point carries) per workload, in file order.

    The point's dict holds exactly the arguments of the bench.load.workload class; a seed
    left out is filled by the runner from the sweep seed and the repeat index."""
    out: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
    for wl in sweep.workloads:
        tag = safe_id(wl.tag())
        full = {"kind": wl.kind, **wl.model_dump(exclude_defaults=True, mode="json")}
        run = {k: v for k, v in full.items() if k != "max_input_len"}
        if tag in out and out[tag][0] != full:
            raise ConfigError(f"two workloads share the id '{tag}'; give one a different seed or path")
        out[tag] = (full, run)
    return [(tag, full, run) for tag, (full, run) in out.items()]


def _loads(sweep: SweepSpec) -> list[dict[str, Any]]:
    """Every load level, grouped by kind in order of first appearance, ascending within."""
    kinds = list(dict.fromkeys(spec.kind for spec in sweep.loads))
    unique: dict[str, dict[str, Any]] = {}
    for spec in sweep.loads:
        for load in spec.expand():
            unique.setdefault(json.dumps(load, sort_keys=True), load)
    return sorted(unique.values(), key=lambda d: (kinds.index(d["kind"]), _level(d), json.dumps(d, sort_keys=True)))


def _level(load: dict[str, Any]) -> float:
    return float(load.get("concurrency") or load.get("rate_rps") or load.get("batch") or 0)


def _load_tag(load: dict[str, Any]) -> str:
    if load["kind"] == "concurrency":
        return f"c{load['concurrency']}"
    if load["kind"] == "offline":
        return f"b{load['batch']}"
    tag = f"rps{load['rate_rps']:g}"
    if load["arrival"] != "poisson" or load["burstiness"] != 1.0:
        tag += f"-{load['arrival']}{load['burstiness']:g}"
    return tag + (f"-mc{load['max_concurrency']}" if load.get("max_concurrency") else "")


def _point(sweep, cid, model, wl_tag, workload, load, rep, notes) -> PointSpec:
    level = math.ceil(_level(load))
    n_requests = sweep.n_requests or max(sweep.min_requests, sweep.requests_per_concurrency * level)
    n_warmup = sweep.n_warmup if sweep.n_warmup is not None else max(1, level)
    if sweep.slo == "catalog":
        slo = {"ttft_s": model.slo.ttft_s, "tpot_s": model.slo.tpot_s} if model.slo else None
    else:
        slo = sweep.slo.model_dump(exclude_none=True) if sweep.slo else None
    return PointSpec(
        point_id=f"{cid}_{wl_tag}_{_load_tag(load)}_r{rep}",
        engine_config_id=cid,
        workload=workload,
        load=load,
        n_warmup=n_warmup,
        n_requests=n_requests,
        repeat=rep,
        slo=slo or None,
        notes=list(notes),
    )
