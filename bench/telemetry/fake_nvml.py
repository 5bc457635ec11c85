"""A fake `pynvml` for tests: the real module's constants and NVMLError, scripted boards.

It behaves like NVML where the harness depends on it: calls before `nvmlInit` raise
NVML_ERROR_UNINITIALIZED; the energy counter is an integer in mJ since "driver load" and
raises NVML_ERROR_NOT_SUPPORTED below Volta; power is an integer in mW, optionally a
running average over `power_avg_s` (Ampere and newer average over ~1 s); the counter may
update only every `counter_period_s`; a reset restarts the counter from zero. Time comes
from an injectable clock, so a test scripts a power profile and reads back exact energy.
For device detection it reports names, memory (the real `c_nvmlMemory_t`, bytes) and the
driver version; `bytes_strings=True` returns bytes as bindings before 11.515 did.

    clock = FakeClock()
    nvml = FakeNvml([FakeGpu(profile=[(0, 100.0), (10, 300.0)])], clock=clock)
    open_telemetry("nvml", nvml=nvml, clock=clock)
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field

import pynvml as _real  # constants and the error class only; never initialised here

NVMLError = _real.NVMLError
_CONSTANTS = {k: getattr(_real, k) for k in dir(_real) if k.startswith(("NVML_ERROR_", "NVML_DEVICE_ARCH_", "NVML_FI_", "NVMLError_",
                                                                       "NVML_POWER_SCOPE_", "NVML_SUCCESS"))}


class FakeClock:
    """A manual perf_counter: `clock()` reads, `advance(dt)`/`sleep(dt)` move it (s)."""

    def __init__(self, t_s: float = 0.0):
        self.t_s = t_s

    def __call__(self) -> float:
        return self.t_s

    def advance(self, dt_s: float) -> None:
        self.t_s += dt_s

    sleep = advance


@dataclass
class FakeGpu:
    """One scripted board. `profile`: [(t_start_s, watts), ...], piecewise constant."""

    name: str = "NVIDIA H100 80GB HBM3"
    arch: int = _real.NVML_DEVICE_ARCH_HOPPER
    profile: list[tuple[float, float]] = field(default_factory=lambda: [(0.0, 100.0)])
    power_avg_s: float = 0.0  # 0 = instantaneous; ~1.0 models Ampere+ averaging
    counter_period_s: float = 0.0  # 0 = continuous counter; else updates on this grid
    counter_offset_mj: int = 0  # counter value at t=0
    memory_total_bytes: int = 85_520_809_984  # nvmlDeviceGetMemoryInfo(...).total
    memory_used_bytes: int = 0
    errors: dict[str, int] = field(default_factory=dict)  # function name -> NVML_ERROR_* to raise
    # Power scopes nvmlDeviceGetFieldValues answers (NVML_FI_DEV_POWER_* with a scopeId): a discrete
    # board ("gpu",); a Grace module with a current driver ("gpu", "module"); an older one ("module",),
    # whose every power and energy reading then covers the whole module: the board's profile plus
    # `module_extra_w` (the CPU and memory beside the GPU). () : no field API (an old driver).
    power_scopes: tuple[str, ...] = ("gpu",)
    module_extra_w: float = 0.0

    @property
    def legacy_extra_w(self) -> float:
        """What the scope-less readings (counter, nvmlDeviceGetPowerUsage) add to the GPU's power."""
        return self.module_extra_w if "gpu" not in self.power_scopes and "module" in self.power_scopes else 0.0

    def energy_since_zero_j(self, t_s: float) -> float:
        """Exact integral of the profile from t=0 to t_s (J)."""
        total = 0.0
        steps = sorted(self.profile) + [(float("inf"), 0.0)]
        for (start, watts), (nxt, _) in itertools.pairwise(steps):
            lo, hi = max(start, 0.0), min(nxt, t_s)
            if hi > lo:
                total += watts * (hi - lo)
        return total

    def power_at_w(self, t_s: float) -> float:
        watts = 0.0
        for start, w in sorted(self.profile):
            if start <= t_s:
                watts = w
        return watts


class _Handle:
    def __init__(self, index: int):
        self.index = index


class FakeNvml:
    """Module-like object: pass it where the code expects `pynvml`."""

    def __init__(self, gpus: list[FakeGpu], clock=None, driver_version: str = "550.54.15", init_error: int | None = None,
                 bytes_strings: bool = False):
        self.__dict__.update(_CONSTANTS)
        self.NVMLError = NVMLError
        self.gpus = gpus
        self.clock = clock or FakeClock()
        self.driver_version = driver_version
        self.init_error = init_error
        self.bytes_strings = bytes_strings
        self.initialized = 0
        self._reset_at_j = [0.0] * len(gpus)  # profile energy at the last reset
        self._was_reset = [False] * len(gpus)
        self.calls: list[str] = []

    # scripting ------------------------------------------------------------------------
    def reset_counter(self, index: int) -> None:
        """The driver was reloaded: the energy counter restarts from zero now."""
        self._reset_at_j[index] = self.gpus[index].energy_since_zero_j(self.clock())
        self._was_reset[index] = True

    # the pynvml API -------------------------------------------------------------------
    def nvmlInit(self):
        self.calls.append("nvmlInit")
        if self.init_error is not None:
            raise NVMLError(self.init_error)
        self.initialized += 1

    def nvmlShutdown(self):
        self.calls.append("nvmlShutdown")
        self._check()
        self.initialized -= 1

    def nvmlSystemGetDriverVersion(self):
        self._check()
        return self._str(self.driver_version)

    def nvmlDeviceGetCount(self):
        self._check()
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index):
        self._check()
        if not 0 <= index < len(self.gpus):
            raise NVMLError(_real.NVML_ERROR_INVALID_ARGUMENT)
        return _Handle(index)

    def nvmlDeviceGetName(self, handle):
        return self._str(self._gpu(handle, "nvmlDeviceGetName").name)

    def nvmlDeviceGetMemoryInfo(self, handle):
        gpu = self._gpu(handle, "nvmlDeviceGetMemoryInfo")
        total, used = gpu.memory_total_bytes, gpu.memory_used_bytes
        return _real.c_nvmlMemory_t(total=total, free=total - used, used=used)

    def nvmlDeviceGetArchitecture(self, handle):
        return self._gpu(handle, "nvmlDeviceGetArchitecture").arch

    def nvmlDeviceGetTotalEnergyConsumption(self, handle):
        gpu = self._gpu(handle, "nvmlDeviceGetTotalEnergyConsumption")
        if gpu.arch < _real.NVML_DEVICE_ARCH_VOLTA:
            raise NVMLError(_real.NVML_ERROR_NOT_SUPPORTED)
        t_s = self.clock()
        if gpu.counter_period_s > 0:
            t_s = (t_s // gpu.counter_period_s) * gpu.counter_period_s
        i = handle.index
        joules = gpu.energy_since_zero_j(t_s) + gpu.legacy_extra_w * t_s - self._reset_at_j[i]
        offset = 0 if self._was_reset[i] else gpu.counter_offset_mj
        return int(max(joules, 0.0) * 1000) + offset

    def nvmlDeviceGetPowerUsage(self, handle):
        gpu = self._gpu(handle, "nvmlDeviceGetPowerUsage")
        t_s = self.clock()
        if gpu.power_avg_s > 0:
            lo = max(t_s - gpu.power_avg_s, 0.0)
            watts = (gpu.energy_since_zero_j(t_s) - gpu.energy_since_zero_j(lo)) / max(t_s - lo, 1e-9)
        else:
            watts = gpu.power_at_w(t_s)
        return int((watts + gpu.legacy_extra_w) * 1000)

    def nvmlDeviceGetFieldValues(self, handle, field_ids):
        """As pynvml: one c_nvmlFieldValue_t per id (an int, or (fieldId, scopeId)); a field the
        board does not answer has nvmlReturn NVML_ERROR_NOT_SUPPORTED, the call itself succeeds.
        Power fields are instantaneous, in mW, of the scope asked (module = GPU + module_extra_w)."""
        gpu = self._gpu(handle, "nvmlDeviceGetFieldValues")
        if not gpu.power_scopes:
            raise NVMLError(_real.NVML_ERROR_FUNCTION_NOT_FOUND)
        names = {_real.NVML_POWER_SCOPE_GPU: "gpu", _real.NVML_POWER_SCOPE_MODULE: "module"}
        out = (_real.c_nvmlFieldValue_t * len(field_ids))()
        for slot, fid in zip(out, field_ids):
            field_id, scope_id = fid if isinstance(fid, tuple) else (fid, 0)
            slot.fieldId, slot.scopeId = field_id, scope_id
            scope = names.get(scope_id)
            power = field_id in (_real.NVML_FI_DEV_POWER_INSTANT, _real.NVML_FI_DEV_POWER_AVERAGE)
            if not power or scope not in gpu.power_scopes:
                slot.nvmlReturn = _real.NVML_ERROR_NOT_SUPPORTED
                continue
            watts = gpu.power_at_w(self.clock()) + (gpu.module_extra_w if scope == "module" else 0.0)
            slot.nvmlReturn, slot.valueType = _real.NVML_SUCCESS, _real.NVML_VALUE_TYPE_UNSIGNED_INT
            slot.value.uiVal = int(watts * 1000)
        return out

    def _str(self, text: str) -> str | bytes:
        return text.encode() if self.bytes_strings else text

    def _check(self):
        if self.initialized <= 0:
            raise NVMLError(_real.NVML_ERROR_UNINITIALIZED)

    def _gpu(self, handle, fn: str) -> FakeGpu:
        self._check()
        self.calls.append(fn)
        gpu = self.gpus[handle.index]
        if fn in gpu.errors:
            raise NVMLError(gpu.errors[fn])
        return gpu


class FakeNvmlTelemetry:
    """A telemetry factory over a fake NVML host, for the runner (`RunEnvironment(telemetry_factory=...)`).

    Board i draws `watts[i]` W constantly on the real perf_counter clock, so a window of
    t s on devices D measures exactly sum(watts[d] for d in D) x t J. Picklable: it crosses
    into spawned `--pack` workers, each of which opens its own fake NVML, as each real one would."""

    def __init__(self, watts: list[float], interval_s: float = 0.02):
        self.watts = list(watts)
        self.interval_s = interval_s

    def nvml(self) -> FakeNvml:
        return FakeNvml([FakeGpu(profile=[(0.0, float(w))]) for w in self.watts], clock=time.perf_counter)

    def __call__(self, requested: str = "auto", hardware=None, gpu_indices=None):
        from bench.telemetry import open_telemetry

        return open_telemetry(requested, hardware=hardware, gpu_indices=gpu_indices, nvml=self.nvml(),
                              interval_s=self.interval_s)
