"""What the card actually delivers: memory bandwidth, matrix throughput, NVML behaviour.

`run_probe` returns a JSON-able dict (written by `bench probe`) whose `bandwidth_tbs` and
`tflops[dtype]` replace the catalog's datasheet figures in `bench.measure.roofline`. Timing uses
CUDA events on GPU and perf_counter on CPU; every measurement first sizes its work so one
call takes a few milliseconds, then repeats it for about `min_time_s`.
"""

from __future__ import annotations

import functools
import itertools
import json
import math
import platform
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeGuard

import msgspec

from bench.catalog.dtypes import dtype_name
from bench.errors import ConfigError, TelemetryError, one_line
from bench.telemetry.types import ProbeFigures

PROBE_VERSION = 1


def _timed_s(torch, fn: Callable[[], object], device: str, min_time_s: float, max_iters: int) -> tuple[float, int]:
    """Mean seconds per call of fn (after one warm-up call), and the number of calls timed."""
    fn()
    _sync(torch, device)
    t0 = time.perf_counter()
    fn()
    _sync(torch, device)
    one_s = max(time.perf_counter() - t0, 1e-6)
    iters = int(max(1, min(max_iters, min_time_s / one_s)))
    if device == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iters):
            fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1000.0 / iters, iters
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    return (time.perf_counter() - t0) / iters, iters


def _sync(torch, device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def measure_bandwidth(device: str = "cpu", size_bytes: int | None = None, min_time_s: float = 0.5,
                      max_iters: int = 200) -> dict:
    """Device-to-device copy of one large buffer; a copy reads and writes it: 2 x size bytes."""
    import torch

    size_bytes = size_bytes or (2 << 30 if device == "cuda" else 256 << 20)
    n = size_bytes // 4
    src = torch.ones(n, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    per_call_s, iters = _timed_s(torch, lambda: dst.copy_(src), device, min_time_s, max_iters)
    return {"bandwidth_tbs": 2 * n * 4 / per_call_s / 1e12, "size_bytes": n * 4, "iters": iters,
            "method": "copy_ (read + write)"}


def measure_matmul(device: str, dtype: str, max_n: int = 8192, min_time_s: float = 0.5, max_iters: int = 200,
                   target_call_s: float = 0.02) -> dict:
    """Square matmul throughput (TFLOP/s, 2 n^3 per call) at the largest n up to max_n whose
    single call stays near target_call_s."""
    import torch

    torch_dtype = getattr(torch, dtype_name(dtype))
    n = 256
    while True:
        a = torch.randn(n, n, device=device).to(torch_dtype)
        b = torch.randn(n, n, device=device).to(torch_dtype)
        c = torch.empty(n, n, device=device, dtype=torch_dtype)
        per_call_s, _ = _timed_s(torch, functools.partial(torch.matmul, a, b, out=c), device, 0.0, 1)
        if per_call_s >= target_call_s or n * 2 > max_n:
            break
        n *= 2
    per_call_s, iters = _timed_s(torch, lambda: torch.matmul(a, b, out=c), device, min_time_s, max_iters)
    return {"tflops": 2 * n**3 / per_call_s / 1e12, "n": n, "iters": iters, "dtype": dtype}


def measure_fp8(device: str, n: int = 8192, min_time_s: float = 0.5, max_iters: int = 200) -> dict:
    """FP8 (e4m3) matmul via torch._scaled_mm, bf16 out; {"supported": False, ...} where it is not."""
    import torch

    if device != "cuda":
        return {"supported": False, "reason": "fp8 matmul is measured on CUDA only"}
    if torch.cuda.get_device_capability() < (8, 9):
        return {"supported": False, "reason": f"compute capability {torch.cuda.get_device_capability()} < 8.9"}
    try:
        a = torch.randn(n, n, device=device).to(torch.float8_e4m3fn)
        b = torch.randn(n, n, device=device).to(torch.float8_e4m3fn).t()  # column-major, as _scaled_mm wants
        one = torch.ones((), device=device, dtype=torch.float32)
        per_call_s, iters = _timed_s(
            torch, lambda: torch._scaled_mm(a, b, scale_a=one, scale_b=one, out_dtype=torch.bfloat16),
            device, min_time_s, max_iters)
    except (RuntimeError, AttributeError) as e:
        return {"supported": False, "reason": f"{type(e).__name__}: {str(e).splitlines()[0]}"}
    return {"supported": True, "tflops": 2 * n**3 / per_call_s / 1e12, "n": n, "iters": iters}


def measure_nvml_counter(nvml=None, gpu_index: int = 0, load: Callable[[float], None] | None = None,
                         poll_s: float = 1.0, load_s: float = 3.0, clock: Callable[[], float] = time.perf_counter) -> dict:
    """How the NVML energy counter behaves: its update period (s) from a 1 ms poll, and
    counter vs sampled-power energy while `load(seconds)` keeps the card busy."""
    from bench.telemetry import open_telemetry
    from bench.telemetry.nvml import NvmlMeter, import_pynvml

    nvml = nvml if nvml is not None else import_pynvml()
    tel = open_telemetry("nvml", nvml=nvml, gpu_indices=[gpu_index], interval_s=0.05, clock=clock)
    if not isinstance(tel.meter, NvmlMeter):  # open_telemetry("nvml") opens an NvmlMeter or raises
        raise TelemetryError(f"nvml counter probe: got a {tel.meter.method} meter")
    handle = tel.meter.handles[0]
    changes, last = [], None
    end = clock() + poll_s
    while clock() < end:
        if tel.meter.has_counter:
            value = nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
        else:
            value = nvml.nvmlDeviceGetPowerUsage(handle)
        if value != last:
            changes.append(clock())
            last = value
        time.sleep(0.001)
    gaps = [b - a for a, b in itertools.pairwise(changes[1:])]  # the first change is the first read
    tel.start()
    t0 = clock()
    (load or time.sleep)(load_s)
    t1 = clock()
    energy = tel.energy_between(t0 + min(0.5, load_s / 4), t1)
    tel.stop()
    counter_j, sampled_j = energy.energy_j, energy.sampled_energy_j
    return {
        "energy_method": tel.method,
        "update_period_s": statistics.median(gaps) if gaps else None,
        "n_updates_seen": len(changes),
        "load_s": load_s,
        "counter_energy_j": counter_j,
        "sampled_energy_j": sampled_j,
        "counter_vs_sampled": (sampled_j - counter_j) / counter_j if counter_j and sampled_j is not None else None,
        "avg_power_w": energy.avg_power_w,
    }


def _matmul_load(device: str) -> Callable[[float], None]:
    import torch

    a = torch.randn(4096, 4096, device=device, dtype=torch.bfloat16)

    def run(seconds: float) -> None:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            for _ in range(10):
                torch.matmul(a, a)
            _sync(torch, device)

    return run


def _provenance(device: str) -> dict:
    import torch

    from bench import __version__

    out = {"device": device, "torch_version": torch.__version__, "bench_version": __version__,
           "date_utc": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), "host": platform.node(),
           "driver_version": None, "cuda_version": torch.version.cuda}
    if device == "cuda":
        out["device_name"] = torch.cuda.get_device_name()
        try:
            from bench.telemetry.nvml import import_pynvml

            nvml = import_pynvml()
            nvml.nvmlInit()
            version = nvml.nvmlSystemGetDriverVersion()
            out["driver_version"] = version.decode() if isinstance(version, bytes) else version
            nvml.nvmlShutdown()
        except Exception:  # noqa: BLE001, S110 - the driver version is provenance, not a reason to fail the probe
            pass
    else:
        out["device_name"] = _cpu_name()
    return out


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run_probe(device: str | None = None, min_time_s: float | None = None, bandwidth_bytes: int | None = None,
              max_n: int | None = None, dtypes: tuple[str, ...] = ("bf16", "fp16"), nvml_check: bool = True) -> dict:
    """Measure this machine's device; CPU defaults keep the whole probe to a few seconds."""
    import torch

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("probe: --device cuda but torch sees no CUDA device")
    on_gpu = device == "cuda"
    min_time_s = min_time_s if min_time_s is not None else (0.5 if on_gpu else 0.3)
    max_n = max_n or (8192 if on_gpu else 1024)
    started = time.perf_counter()
    probe = {"probe_version": PROBE_VERSION, **_provenance(device)}
    probe["bandwidth"] = measure_bandwidth(device, bandwidth_bytes, min_time_s)
    probe["bandwidth_tbs"] = probe["bandwidth"]["bandwidth_tbs"]
    probe["matmul"] = {d: measure_matmul(device, d, max_n=max_n, min_time_s=min_time_s) for d in dtypes}
    probe["matmul"]["fp8"] = measure_fp8(device, n=max_n, min_time_s=min_time_s)
    probe["tflops"] = {d: r.get("tflops") for d, r in probe["matmul"].items()}
    probe["nvml"] = None
    if on_gpu and nvml_check:
        try:
            probe["nvml"] = measure_nvml_counter(gpu_index=torch.cuda.current_device(), load=_matmul_load(device))
        except Exception as e:  # noqa: BLE001 - no NVML: the probe's other figures still stand
            probe["nvml"] = {"error": f"{type(e).__name__}: {e}"}
    probe["elapsed_s"] = time.perf_counter() - started
    return probe


def write_probe(probe: dict, path: str | Path) -> Path:
    from bench.atomicio import atomic_write_text

    path = Path(path)
    atomic_write_text(path, json.dumps(probe, indent=2) + "\n")
    return path


class _ProbeFile(msgspec.Struct):
    """The keys of a probe file the roofline reads (the others are provenance and raw measurements)."""
    probe_version: int | None = None
    bandwidth_tbs: float | None = None  # TB/s
    tflops: dict[str, float | None] | None = None  # per dtype name; None: not measurable here


def load_probe(path: str | Path) -> ProbeFigures:
    """The roofline figures of a probe file; ConfigError for one of another version or without them."""
    path = Path(path)
    try:
        data = msgspec.json.decode(path.read_bytes(), type=_ProbeFile)
    except msgspec.ValidationError as e:
        raise ConfigError(one_line(f"{path}: not a bench probe file of version {PROBE_VERSION} ({e})")) from None
    except (OSError, msgspec.DecodeError) as e:
        raise ConfigError(one_line(f"{path}: cannot read probe file ({e})")) from None
    if data.probe_version != PROBE_VERSION:
        raise ConfigError(f"{path}: not a bench probe file of version {PROBE_VERSION}")
    bandwidth, tflops = data.bandwidth_tbs, data.tflops
    if not _positive(bandwidth) or tflops is None or not all(v is None or _positive(v) for v in tflops.values()):
        raise ConfigError(f"{path}: probe file lacks a positive bandwidth_tbs or tflops per dtype")
    return ProbeFigures(bandwidth_tbs=float(bandwidth), tflops=dict(tflops))


def _positive(value: Any) -> TypeGuard[float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
