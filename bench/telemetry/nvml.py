"""NVIDIA meter over NVML (`nvidia-ml-py`, imported as `pynvml`).

Primary: `nvmlDeviceGetTotalEnergyConsumption`, a per-board energy counter in mJ since the
driver was loaded (Volta and newer). Beside it, `nvmlDeviceGetPowerUsage` (mW) is polled as
the cross-check; on Ampere and newer that reading is itself a ~1 s running average, so it
lags steps in load and the counter is the figure of record. On boards without the counter
(NVML_ERROR_NOT_SUPPORTED, pre-Volta) the polled power is integrated instead
(`nvml_power_sampled`). Units are converted here: mJ -> J, mW -> W.

Power scope: on Grace superchips (GH200, GB200, GB300) NVML's power may cover the whole module
(CPU + GPU + memory), not the GPU. As Zeus does, the meter asks NVML for the GPU scope first
(nvmlDeviceGetFieldValues, NVML_FI_DEV_POWER_INSTANT with NVML_POWER_SCOPE_GPU) and falls back
to the module scope with a warning; `power_scope` records what each device answered: "gpu",
"module", or None where the field API is missing (an old driver: a discrete board's power).
"""

from __future__ import annotations

from bench.errors import TelemetryError
from bench.telemetry.types import EnergyMethod, Reading


def import_pynvml():
    try:
        import pynvml
    except ImportError:
        raise TelemetryError("nvml: the nvidia-ml-py package (pynvml) is not installed") from None
    return pynvml


class NvmlMeter:
    """Reads the chosen GPUs; `method` is nvml_counter or nvml_power_sampled for all of them."""

    measured = True
    nominal_power_w = None

    def __init__(self, nvml, handles, labels, names, archs, use_counter: bool, has_power: bool, driver,
                 scopes: list[str | None] | None = None):
        self.nvml = nvml
        self.handles = handles
        self.devices = labels
        self.names = names
        self.archs = archs
        self.use_counter = use_counter
        self.has_counter = use_counter  # the Meter capability: the counter, not polled power, is the figure
        self.has_power = has_power
        self.driver_version = driver
        self.method = (EnergyMethod.NVML_COUNTER if use_counter else EnergyMethod.NVML_POWER_SAMPLED).value
        self.counter_range_j = [None] * len(handles)
        self.read_errors = 0
        self.last_error: str | None = None
        self.power_scopes = list(scopes) if scopes is not None else [None] * len(handles)
        # one scope for the meter's figures: a device's, when all agree; else "mixed"
        self.power_scope = self.power_scopes[0] if len(set(self.power_scopes)) == 1 else "mixed"
        self.warning = (f"nvml: power of {', '.join(d for d, s in zip(labels, self.power_scopes) if s == 'module')} "
                        "covers the whole module (CPU + GPU), not the GPU alone: NVML has no GPU scope here"
                        if "module" in self.power_scopes else None)

    def read(self) -> list[Reading]:
        return [self._read_one(h) for h in self.handles]

    def _read_one(self, handle) -> Reading:
        energy_j = power_w = None
        try:
            if self.use_counter:
                energy_j = self.nvml.nvmlDeviceGetTotalEnergyConsumption(handle) / 1000.0
            if self.has_power:
                power_w = self.nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0
        except self.nvml.NVMLError as e:
            self.read_errors += 1
            self.last_error = str(e)
        return Reading(energy_j, power_w)

    def close(self) -> None:
        try:
            self.nvml.nvmlShutdown()
        except self.nvml.NVMLError:
            pass

    def describe(self) -> dict:
        return {
            "method": self.method,
            "devices": self.devices,
            "names": self.names,
            "architectures": self.archs,
            "driver_version": self.driver_version,
            "power_sampled": self.has_power,
            "power_scope": self.power_scope,
            "power_scopes": self.power_scopes,
            "warning": self.warning,
            "last_error": self.last_error,
        }


def open_meter(gpu_indices=None, nvml=None, **_) -> NvmlMeter:
    """Initialise NVML and pick the method; TelemetryError (one line) when it cannot measure."""
    nvml = nvml if nvml is not None else import_pynvml()
    try:
        nvml.nvmlInit()
    except nvml.NVMLError as e:
        raise TelemetryError(f"nvml: cannot initialise NVML ({e})") from None
    try:
        return _probe_devices(nvml, gpu_indices)
    except BaseException:
        nvml.nvmlShutdown()
        raise


def _probe_devices(nvml, gpu_indices) -> NvmlMeter:
    count = nvml.nvmlDeviceGetCount()
    if count == 0:
        raise TelemetryError("nvml: no NVIDIA GPU visible")
    indices = list(range(count)) if gpu_indices is None else list(gpu_indices)
    bad = [i for i in indices if not 0 <= i < count]
    if bad:
        raise TelemetryError(f"nvml: GPU index {bad[0]} out of range (NVML sees {count})")
    handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in indices]
    names = [_text(nvml.nvmlDeviceGetName(h)) for h in handles]
    archs = [_arch(nvml, h) for h in handles]
    counter_ok = all(_supported(nvml, nvml.nvmlDeviceGetTotalEnergyConsumption, h) for h in handles)
    power_ok = all(_supported(nvml, nvml.nvmlDeviceGetPowerUsage, h) for h in handles)
    if not counter_ok and not power_ok:
        raise TelemetryError("nvml: neither the energy counter nor power readings are supported")
    try:
        driver = _text(nvml.nvmlSystemGetDriverVersion())
    except (nvml.NVMLError, AttributeError):
        driver = None
    labels = [f"gpu{i}" for i in indices]
    scopes = [power_scope(nvml, h) for h in handles]
    return NvmlMeter(nvml, handles, labels, names, archs, counter_ok, power_ok, driver, scopes)


def power_scope(nvml, handle) -> str | None:
    """"gpu" when NVML answers the GPU-scope power field, else "module" when it answers the
    module scope (a Grace superchip: CPU + GPU), else None (no field API: an older driver)."""
    for name, scope in (("gpu", "NVML_POWER_SCOPE_GPU"), ("module", "NVML_POWER_SCOPE_MODULE")):
        try:
            (value,) = nvml.nvmlDeviceGetFieldValues(handle, [(nvml.NVML_FI_DEV_POWER_INSTANT, getattr(nvml, scope))])
        except (nvml.NVMLError, AttributeError):
            return None
        if value.nvmlReturn == nvml.NVML_SUCCESS:
            return name
    return None


def _supported(nvml, fn, handle) -> bool:
    try:
        fn(handle)
        return True
    except nvml.NVMLError as e:
        if e.value in (nvml.NVML_ERROR_NOT_SUPPORTED, nvml.NVML_ERROR_FUNCTION_NOT_FOUND):
            return False
        raise TelemetryError(f"nvml: {fn.__name__} failed ({e})") from None


def _arch(nvml, handle) -> int | None:
    try:
        return int(nvml.nvmlDeviceGetArchitecture(handle))
    except (nvml.NVMLError, AttributeError):
        return None


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
