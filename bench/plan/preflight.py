"""Preflight: can a load point run here, decided from the catalog before any engine starts.

Pure functions over catalog entries (`ModelSpec`, `HardwareSpec`) and an `EngineConfig`.
A point that cannot run gets a one-line reason and becomes `Skipped`; nothing here raises
for a point that does not fit. Rules (docs/sweeps.md, "Preflight"):

1. the load kind suits the engine (offline loads need an offline engine, and back);
2. input + output tokens fit max_model_len, and max_model_len fits the model's context;
3. the precision is supported (fp8 weights or KV cache need `tflops["fp8"]`);
4. tensor_parallel_size x pipeline_parallel_size <= the devices present;
5. weights at the precision's bytes per parameter + the KV cache of the batch (concurrency
   capped by max_num_seqs) x (input + output) tokens <= memory x devices x memory_fraction.

Memory is counted in decimal GB (1e9 bytes), as the catalog gives it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bench.plan import EngineConfig

GB = 1e9
_DTYPE_BYTES = {"bfloat16": 2.0, "float16": 2.0, "float32": 4.0}
# Engines whose load is an offline batch; the others take concurrency or rate loads.
_OFFLINE_ENGINES = {"vllm-offline"}
_SERVER_ENGINES = {"vllm", "endpoint"}


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


def host_memory_gb(meminfo_path: str | Path = "/proc/meminfo") -> float | None:
    """The host's total RAM in GB (1e9 bytes) from /proc/meminfo; None where unreadable."""
    try:
        for line in Path(meminfo_path).read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024 / GB
    except (OSError, ValueError, IndexError):
        return None
    return None


def target_for(hardware: Any, n_devices: int, host_memory: float | None = None) -> Target:
    """A `Target` from a catalog `HardwareSpec`. On a CPU host the memory is the host's RAM
    (`host_memory`, GB, e.g. from `host_memory_gb()`) when given, else the catalog's."""
    is_cpu = hardware.vendor == "cpu"
    memory_gb = host_memory if is_cpu and host_memory else hardware.memory_gb
    supported = {k: hardware.tflops.get(k) is not None for k in ("bf16", "fp16", "fp8")}
    return Target(hardware.id, hardware.name, is_cpu, float(memory_gb), max(1, n_devices), supported)


def bytes_per_param(cfg: EngineConfig, model: Any) -> float:
    """Bytes per weight: 1 for fp8 weights, else the dtype's (auto: the model's own)."""
    if cfg.quantization == "fp8":
        return 1.0
    return _dtype_bytes(cfg, model)


def kv_bytes_per_elem(cfg: EngineConfig, model: Any) -> float:
    """Bytes per KV-cache element: 1 for an fp8 KV cache, else the dtype's."""
    return 1.0 if cfg.kv_cache_dtype == "fp8" else _dtype_bytes(cfg, model)


def _dtype_bytes(cfg: EngineConfig, model: Any) -> float:
    dtype = cfg.dtype
    if dtype == "auto":
        dtype = getattr(getattr(model, "config", None), "torch_dtype", "bfloat16")
    return _DTYPE_BYTES.get(dtype, 2.0)


def workload_lengths(workload: dict[str, Any]) -> tuple[int, int] | None:
    """(largest input, output) tokens of one request of a workload; None when unknown."""
    kind = workload.get("kind", "random")
    if kind == "random":
        isl = (workload.get("input_len_range") or [0, workload["input_len"]])[1]
        osl = (workload.get("output_len_range") or [0, workload["output_len"]])[1]
        return isl, osl
    if kind == "shared_prefix":
        return workload["prefix_len"] + workload["suffix_len"], workload["output_len"]
    if workload.get("max_input_len") and workload.get("output_len"):
        return workload["max_input_len"], workload["output_len"]
    return None


def load_level(load: dict[str, Any]) -> float:
    """The load's size: concurrency, requests per second, or batch."""
    return float(load.get("concurrency") or load.get("rate_rps") or load.get("batch") or 0)


def batch_size(load: dict[str, Any], cfg: EngineConfig) -> int | None:
    """Sequences the engine holds at once under this load; None when the load does not
    bound it (an open-loop rate without max_concurrency or max_num_seqs)."""
    wanted = load.get("concurrency") or load.get("batch") or load.get("max_concurrency")
    if wanted is None:
        return cfg.max_num_seqs
    return min(wanted, cfg.max_num_seqs) if cfg.max_num_seqs else wanted


def check_point(
    cfg: EngineConfig,
    model: Any,
    workload: dict[str, Any],
    load: dict[str, Any],
    target: Target | None,
    memory_fraction: float = 0.9,
    kv_overflow: str = "skip",
) -> Verdict:
    """Whether one point can run on `target` (None: no device checks, as for an endpoint)."""
    verdict = Verdict()
    kind = load["kind"]
    if kind == "offline" and cfg.engine in _SERVER_ENGINES:
        return Verdict(f"offline load needs engine vllm-offline or hf, not {cfg.engine}")
    if kind != "offline" and cfg.engine in _OFFLINE_ENGINES:
        return Verdict(f"{kind} load needs a server engine (vllm, endpoint, hf), not {cfg.engine}")
    lengths = workload_lengths(workload)
    reason = _check_lengths(cfg, model, lengths)
    if reason:
        return Verdict(reason)
    if lengths is None:
        verdict.notes.append("request lengths unknown (file workload without max_input_len): context and KV not checked")
    if cfg.engine == "endpoint" or target is None:
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
    if (cfg.quantization == "fp8" or cfg.kv_cache_dtype == "fp8") and not target.supported["fp8"]:
        return f"fp8 not supported on {target.name}"
    wanted = {"bfloat16": "bf16", "float16": "fp16"}.get(cfg.dtype)
    if wanted and not target.supported[wanted]:
        return f"{wanted} not supported on {target.name}"
    return None


def _check_devices(cfg: EngineConfig, target: Target) -> str | None:
    if cfg.n_gpus > target.n_devices:
        unit = "host" if target.is_cpu else "device"
        return f"tensor_parallel_size x pipeline_parallel_size = {cfg.n_gpus} needs {cfg.n_gpus} {unit}s, {target.n_devices} available"
    return None


def _check_memory(cfg, model, lengths, load, target, memory_fraction, kv_overflow, verdict) -> Verdict:
    n = cfg.n_gpus
    usable_b = target.memory_gb * GB * n * memory_fraction
    where = f"{n} x {target.name} ({memory_fraction:g} of {target.memory_gb:.0f} GB each)"
    bpp = bytes_per_param(cfg, model)
    weights_b = model.weight_bytes(bpp)
    if weights_b > usable_b:
        return Verdict(f"weights need {weights_b / GB:.1f} GB at {bpp:g} B/param, {usable_b / GB:.1f} GB usable on {where}")
    batch = batch_size(load, cfg)
    if lengths is None:
        return verdict
    if batch is None:
        batch = 1
        verdict.notes.append("batch unbounded (rate load, no max_concurrency/max_num_seqs): KV checked for 1 sequence")
    per_seq_b = sum(lengths) * model.kv_bytes_per_token(kv_bytes_per_elem(cfg, model))
    kv_b = batch * per_seq_b
    free_b = usable_b - weights_b
    if kv_b > free_b:
        fits = int(free_b // per_seq_b)
        msg = (
            f"KV cache for {batch} x {sum(lengths)} tokens needs {kv_b / GB:.1f} GB, "
            f"{free_b / GB:.1f} GB left after weights on {where} (fits batch <= {fits})"
        )
        if kv_overflow == "skip":
            return Verdict(msg)
        verdict.notes.append(msg)
    return verdict


# ---------------------------------------------------------------- duration estimate

# Assumptions of the estimate, printed by `bench plan`. Deliberately rough: a decode step
# moves the weights read (MoE: experts touched) plus every sequence's KV cache at
# BANDWIDTH_EFFICIENCY of the catalog bandwidth, and never takes less than STEP_FLOOR_S
# (scheduling and launch overhead); prefill runs at COMPUTE_EFFICIENCY of the catalog
# FLOPS; queueing is ignored.
ENGINE_START_S = {"cpu": 60.0, "gpu": 120.0}
STEP_FLOOR_S = {"cpu": 0.05, "gpu": 0.01}
BANDWIDTH_EFFICIENCY = 0.6
COMPUTE_EFFICIENCY = 0.4
_UNKNOWN_LENGTHS = (512, 256)  # file workloads without lengths


def estimate_point_s(point: Any, cfg: EngineConfig, model: Any, hardware: Any) -> float:
    """Rough seconds for one point (warm-up + measured requests): prefill at the catalog
    FLOPS plus decode at a bandwidth-bound step rate; rate loads last at least n / rate."""
    kind = "cpu" if hardware.vendor == "cpu" else "gpu"
    isl, osl = workload_lengths(point.workload) or _UNKNOWN_LENGTHS
    n = point.n_warmup + point.n_requests
    batch = max(1, batch_size(point.load, cfg) or 64)
    kv_b = batch * (isl + osl / 2) * model.kv_bytes_per_token(kv_bytes_per_elem(cfg, model))
    step_b = model.decode_weight_bytes(batch, bytes_per_param(cfg, model)) + kv_b
    bandwidth = hardware.bandwidth_tbs * 1e12 * cfg.n_gpus * BANDWIDTH_EFFICIENCY
    step_s = max(STEP_FLOOR_S[kind], step_b / bandwidth)
    decode_s = n * osl * step_s / batch
    tflops = hardware.tflops.get("fp8" if cfg.quantization == "fp8" else "bf16") or hardware.tflops.get("bf16") or 1.0
    prefill_s = n * isl * model.flops_per_token(isl // 2) / (tflops * 1e12 * cfg.n_gpus * COMPUTE_EFFICIENCY)
    busy_s = decode_s + prefill_s
    if point.load["kind"] == "rate":
        return max(busy_s, n / point.load["rate_rps"] + osl * step_s)
    return busy_s


def estimate_plan_s(plan: Any, catalog: Any, hardware: Any) -> tuple[float, float]:
    """(engine start seconds, load-point seconds) for the whole plan on `hardware`."""
    start_s = len(plan.engine_configs) * ENGINE_START_S["cpu" if hardware.vendor == "cpu" else "gpu"]
    points_s = 0.0
    for cfg in plan.engine_configs:
        model = catalog.get_model(cfg.model)
        points_s += sum(estimate_point_s(p, cfg, model, hardware) for p in plan.points_for(cfg.config_id()))
    return start_s, points_s
