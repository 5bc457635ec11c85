"""The plan: a sweep file (or single-run options) + CLI overrides -> ordered load points.

The sweep file's schema and loading live in `bench.plan.sweepfile` (re-exported here).

`Plan.points` is ordered for the runner: grouped by engine configuration (one engine start
each), then workload (in file order), then load ascending, then repeat. Points that
preflight rejects are listed in `Plan.skipped` with a one-line reason, never run.
"""

from __future__ import annotations

import itertools
import json
import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bench.catalog.configbase import safe_id
from bench.catalog.dtypes import PrecisionFields, precision_fields
from bench.errors import ConfigError, one_line
from bench.plan.accuracy import AccuracySettings
from bench.plan.engineconfig import EngineConfig
from bench.plan.inputs import InputFacts, check_inputs
from bench.plan.pointid import PointId, load_tag
from bench.plan.points import (
    ConcurrencyLoad,
    FileWorkload,
    LoadSpec,
    OfflineLoad,
    RandomWorkload,
    RateLoad,
    SharedPrefixWorkload,
    TraceLoad,
    WorkloadSpec,
    engine_batch,
    load_level,
)
from bench.plan.sweepfile import (
    SLO,
    ConcurrencyLevels,
    EngineArgs,
    ModelEntry,
    OfflineLevels,
    PreflightSettings,
    RateLevels,
    RepeatUntil,
    SweepSpec,
    apply_overrides,
    gpus_problem,
    load_sweep,
    overrides_from_options,
    sweep_from_dict,
)

__all__ = [
    "SLO", "ConcurrencyLevels", "ConcurrencyLoad", "EngineArgs", "EngineConfig",
    "FileWorkload", "LoadSpec", "ModelEntry", "OfflineLevels", "OfflineLoad", "Plan", "PointId", "PointSpec",
    "PreflightSettings", "RandomWorkload", "RateLevels", "RateLoad", "SharedPrefixWorkload", "Skipped",
    "SweepSpec", "WorkloadSpec", "apply_overrides", "build_plan", "gpus_problem", "load_sweep",
    "overrides_from_options", "plan_from_options", "precision_fields", "safe_id", "single_run_sweep",
    "sweep_from_dict",
]


class PointSpec(BaseModel):
    """One load point: an engine configuration under one workload and one load."""

    model_config = ConfigDict(extra="forbid", ser_json_inf_nan="constants")  # a rate of inf survives JSON

    point_id: str  # [A-Za-z0-9._-] only; unique in a plan; becomes a file name
    engine_config_id: str
    workload: WorkloadSpec  # random | shared_prefix | file (bench.plan.points)
    load: LoadSpec  # concurrency | rate | offline (bench.plan.points)
    n_warmup: int
    n_requests: int
    repeat: int = 0
    slo: dict[str, float] | None = None  # {"ttft_s": 2.0, "tpot_s": 0.1}
    notes: list[str] = Field(default_factory=list)  # preflight remarks for a point that runs
    # a trace point: s from its first scheduled send to its last (after speedup), read from the file by the plan
    replay_s: float | None = Field(None, exclude_if=lambda v: v is None)


class Skipped(BaseModel):
    """A point preflight rejected, with a one-line reason."""

    point: PointSpec
    reason: str


class Plan(BaseModel):
    """Everything a run executes, in order, plus what was skipped and the run settings."""

    model_config = ConfigDict(ser_json_inf_nan="constants")  # a rate of inf survives JSON (packed workers)

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
    # accuracy gate (docs/accuracy.md); a Plan built in code runs none
    accuracy: AccuracySettings = Field(default_factory=lambda: AccuracySettings(mode="off"))
    repeat_until: RepeatUntil | None = None  # issue 20 item 2: adaptive repeats; None: every repeat runs

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
    """The ordered, preflighted plan of a sweep (see `_build_plan`); a ConfigError is one line."""
    try:
        return _build_plan(sweep, hardware, n_devices, catalog)
    except ConfigError as e:
        raise ConfigError(one_line(str(e))) from None


def _build_plan(sweep: SweepSpec, hardware: Any, n_devices: int, catalog: Any) -> Plan:
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
        host_gb = None
        if hardware.vendor == "cpu" and not sweep.hardware:
            from bench.catalog.device import host_memory_bytes

            host_b = host_memory_bytes()
            host_gb = host_b / preflight.GB if host_b else None
        target = preflight.target_for(hardware, n_devices, host_gb)
    configs = _engine_configs(sweep, catalog)
    workloads = _workloads(sweep)
    # every input file read and checked now: before a run folder exists, before any engine starts
    facts = {tag: check_inputs(wl, sweep.n_requests, sweep.max_replay_s) for tag, wl in workloads}
    loads = _loads(sweep)
    runnable: list[EngineConfig] = []
    dead: list[EngineConfig] = []
    points: list[PointSpec] = []
    skipped: list[Skipped] = []
    for cfg in configs:
        cid, model = cfg.config_id(), catalog.get_model(cfg.model)
        n_before = len(points)
        for wl_tag, workload in workloads:
            for load in loads:
                verdict = preflight.check_point(
                    cfg, model, workload, load, target, sweep.preflight.memory_fraction, sweep.preflight.kv_overflow
                )
                for rep in range(sweep.repeats):
                    point = _point(sweep, cid, model, wl_tag, workload, load, rep, verdict.notes, facts[wl_tag])
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
        accuracy=sweep.accuracy,  # accuracy gate
        repeat_until=sweep.repeat_until,
    )


# `bench run`'s defaults (and `bench capacity`'s without a sweep file): the tiny Llama, random
# prompts, three concurrency levels, and enough requests that p99 is not one of the largest samples.
RUN_MODEL = "tiny-llama"
RUN_CONCURRENCY = (1, 4, 16)
RUN_INPUT_LEN = 128  # tokens
RUN_OUTPUT_LEN = 64  # tokens
RUN_MIN_REQUESTS = 100  # fewer measured requests than this and a point's p99 is one of its largest samples


def single_run_sweep(model: str, concurrency: list[int] | tuple[int, ...], input_len: int, output_len: int,
                     options: dict[str, Any] | None = None) -> SweepSpec:
    """The sweep of one model under one random workload at a few concurrency levels, with
    `options` applied: CLI option values (see `overrides_from_options`) or override keys (see
    `apply_overrides`): weights, dtype, quantization, kv_cache_dtype, n_requests, n_warmup,
    engine, endpoint_url, tensor_parallel_size, max_num_seqs, max_model_len, engine_args
    (pass-through dict), seed, endpoint, slo, telemetry, out_dir, name, loads, ..."""
    raw = {
        "models": [model],
        "workloads": [{"kind": "random", "input_len": input_len, "output_len": output_len}],
        "loads": [{"kind": "concurrency", "concurrency": list(concurrency)}],
    }
    options = {"name": f"run-{safe_id(model)}", **(options or {})}
    return sweep_from_dict(raw, overrides_from_options(options), source="options")


def plan_from_options(
    model: str,
    *,
    concurrency: list[int] | tuple[int, ...] = (1,),
    input_len: int = RUN_INPUT_LEN,
    output_len: int = RUN_OUTPUT_LEN,
    hardware: Any = None,
    n_devices: int = 1,
    catalog: Any = None,
    **options: Any,
) -> Plan:
    """The plan of `single_run_sweep`: the same path as a sweep file, from single-run options."""
    return build_plan(single_run_sweep(model, concurrency, input_len, output_len, options), hardware, n_devices,
                      catalog)


def _engine_configs(sweep: SweepSpec, catalog: Any) -> list[EngineConfig]:
    """Models x weights x precisions x engine arguments, in file order, without repeats."""
    out: dict[str, EngineConfig] = {}
    for item in sweep.models:
        entry = ModelEntry(key=item) if isinstance(item, str) else item
        model = catalog.get_model(entry.key)
        args = entry.engine_args or sweep.engine_args
        gpus = entry.gpus or sweep.gpus
        for weights, precision in itertools.product(entry.weights or sweep.weights, entry.precisions or sweep.precisions):
            fields = precision_fields(precision)
            for tp, pp, dp, ep, nnodes, seqs, ctx, extra, speculative in itertools.product(
                args.tensor_parallel_size, args.pipeline_parallel_size, args.data_parallel_size,
                args.enable_expert_parallel, args.nnodes, args.max_num_seqs, args.max_model_len, args.extra,
                args.speculative,  # speculative decoding (issue 21)
            ):
                parallel = {"pipeline_parallel_size": pp, "data_parallel_size": dp, "enable_expert_parallel": ep,
                            "nnodes": nnodes, "nodes": sweep.nodes if nnodes > 1 else None}
                parallel = {k: v for k, v in parallel.items() if k not in extra}  # older files: in extra
                try:
                    cfg = EngineConfig(
                        model=entry.key,
                        **_resolve_weights(weights, model, fields),
                        engine=entry.engine or sweep.engine,
                        endpoint_url=sweep.endpoint_url,
                        tensor_parallel_size=tp,
                        **parallel,
                        gpus=gpus,
                        max_num_seqs=seqs,
                        max_model_len=ctx,
                        extra_args=extra,
                        speculative=speculative,
                        lora=sweep.lora,  # issue 21, lora
                        **fields,
                    )
                except ValidationError as e:
                    first = e.errors()[0]
                    loc = ".".join(str(p) for p in first["loc"])
                    msg = first["msg"].removeprefix("Value error, ")
                    raise ConfigError(f"model '{entry.key}': {loc + ': ' if loc else ''}{msg}") from None
                out.setdefault(cfg.config_id(), cfg)
    return list(out.values())


def _resolve_weights(weights: str, model: Any, fields: PrecisionFields) -> dict[str, Any]:
    """"real" -> the catalog's repo (its fp8_repo for fp8 weights, when one exists)."""
    if weights != "real":
        return {"weights": weights}
    if fields.get("quantization") == "fp8" and model.fp8_repo:
        return {"weights": model.fp8_repo, "weights_prequantized": True}
    if not model.hf_repo:
        raise ConfigError(f"model '{model.key}' has no hf_repo for weights 'real'")
    return {"weights": model.hf_repo}


def _workloads(sweep: SweepSpec) -> list[tuple[str, WorkloadSpec]]:
    """(tag, workload) per distinct workload, in file order; a seed left out is filled by
    the runner from the sweep seed and the point id (bench.run.measure_point.workload_seed)."""
    out: dict[str, WorkloadSpec] = {}
    for wl in sweep.workloads:
        tag = safe_id(wl.tag())
        if tag in out and out[tag] != wl:
            raise ConfigError(f"two workloads share the id '{tag}'; give one a different seed or path")
        out[tag] = wl
    return list(out.items())


def _loads(sweep: SweepSpec) -> list[LoadSpec]:
    """Every load level, grouped by kind in order of first appearance, ascending within."""
    kinds = list(dict.fromkeys(spec.kind for spec in sweep.loads))
    unique: dict[str, LoadSpec] = {}
    for spec in sweep.loads:
        for load in spec.expand():
            unique.setdefault(load.model_dump_json(), load)
    return sorted(unique.values(), key=lambda d: (kinds.index(d.kind), load_level(d), _canon(d)))


def _canon(load: LoadSpec) -> str:
    return json.dumps(load.model_dump(mode="json"), sort_keys=True)


def _point(sweep, cid, model, wl_tag, workload, load, rep, notes, facts: InputFacts) -> PointSpec:
    level = load_level(load)
    # an infinite rate (all at once) counts as its in-flight cap for warm-up and request counts
    level = math.ceil(level) if math.isfinite(level) else (engine_batch(load) or 1)
    # The measurement window ends at the last send, so about `level` requests (those still in
    # flight then) finish outside it: ask for that many more than the window must hold.
    n_requests = sweep.n_requests or max(sweep.min_requests + level, sweep.requests_per_concurrency * level)
    n_warmup = sweep.n_warmup if sweep.n_warmup is not None else max(1, level)
    replay_s = None
    if isinstance(load, TraceLoad):  # the trace is the schedule: replay all of it (or its limit), no warm-up
        n_requests, replay_s = facts.n_requests or n_requests, facts.replay_s
        n_warmup = sweep.n_warmup or 0
    if facts.note:
        notes = [*notes, facts.note]
    if sweep.slo == "catalog":
        slo = {"ttft_s": model.slo.ttft_s, "tpot_s": model.slo.tpot_s} if model.slo else None
    else:
        slo = sweep.slo.model_dump(exclude_none=True) if sweep.slo else None
    return PointSpec(
        point_id=str(PointId(cid, wl_tag, load_tag(load), rep)),
        engine_config_id=cid,
        workload=workload,
        load=load,
        n_warmup=n_warmup,
        n_requests=n_requests,
        repeat=rep,
        slo=slo or None,
        notes=list(notes),
        replay_s=replay_s,
    )


def select_config(plan: Plan, config_id: str) -> Plan:
    """The plan of one engine configuration of `plan`: its points and its skipped points, in
    order (`bench sweep --config ID`, one fleet shard). ConfigError listing the known ids."""
    known = [c.config_id() for c in [*plan.engine_configs, *plan.skipped_engine_configs]]
    if config_id not in known:
        raise ConfigError(f"no engine config '{config_id}' in plan '{plan.name}' (known: {', '.join(known) or 'none'})")
    return plan.model_copy(update={
        "engine_configs": [c for c in plan.engine_configs if c.config_id() == config_id],
        "points": [p for p in plan.points if p.engine_config_id == config_id],
        "skipped": [s for s in plan.skipped if s.point.engine_config_id == config_id],
        "skipped_engine_configs": [c for c in plan.skipped_engine_configs if c.config_id() == config_id],
    })
