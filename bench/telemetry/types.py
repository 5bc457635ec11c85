"""The shapes the telemetry modules share: a reading, the meter protocol, the energy methods,
the frozen energy of one window (docs/measurement.md section 3), and a probe's roofline figures.

`bench.telemetry.energy` (the arithmetic) and `bench.telemetry.base` (the sampling session)
both import this module and not each other's types. Energy in J, power in W, times in s.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, Protocol


class EnergyMethod(StrEnum):
    """How a figure's energy was obtained; recorded as `energy_method` with every figure."""

    NVML_COUNTER = "nvml_counter"
    NVML_POWER_SAMPLED = "nvml_power_sampled"
    AMDSMI_COUNTER = "amdsmi_counter"
    AMDSMI_POWER_SAMPLED = "amdsmi_power_sampled"
    RAPL = "rapl"
    NOMINAL = "nominal"
    NONE = "none"

    @property
    def has_counter(self) -> bool:
        """True where the energy is a cumulative counter read (J), not integrated polled power."""
        return self in (EnergyMethod.NVML_COUNTER, EnergyMethod.AMDSMI_COUNTER, EnergyMethod.RAPL)

    @property
    def measured(self) -> bool:
        """False for an estimate (nominal) and for no meter at all."""
        return self not in (EnergyMethod.NOMINAL, EnergyMethod.NONE)


MEASURED_METHODS = tuple(m.value for m in EnergyMethod if m.measured)


@dataclass
class Reading:
    """One poll of one device: cumulative counter in J and power in W (None = not read)."""

    energy_j: float | None
    power_w: float | None


class Meter(Protocol):
    """What a session needs from a meter; the meter declares what it can read.
    Vendor units are converted inside the meter."""

    method: str  # an EnergyMethod value, recorded with every figure
    measured: bool  # False for estimates (nominal) and for "none"
    has_counter: bool  # True: energy from a cumulative counter; False: from polled power
    devices: list[str]  # one label per device, e.g. "gpu0"
    counter_range_j: list[float | None]  # wrap period of each counter (RAPL); None = no wrap
    nominal_power_w: list[float] | None  # set only by the nominal meter
    read_errors: int

    def read(self) -> list[Reading]: ...

    def close(self) -> None: ...

    def describe(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class WindowEnergy:
    """The energy of one window [t0_s, t1_s], as measured (or estimated) when it was asked for."""

    energy_j: float | None  # sum over devices (J); None when a device's window could not be measured
    per_gpu_energy_j: tuple[float, ...] | None  # per device (J)
    avg_power_w: float | None  # energy_j / window_s (W)
    window_s: float
    energy_method: str
    measured: bool
    energy_valid: bool
    energy_invalid_reasons: tuple[str, ...]
    sampled_energy_j: float | None  # trapezoid integral of polled power, the cross-check (J)
    n_devices: int
    n_samples: int  # fewest samples strictly inside the window on any device
    devices: tuple[Any, ...] | None = None  # the device indices the session measures (None: not GPUs)
    idle_power_w: float | None = None  # idle baseline subtracted for energy_net_j (W)
    energy_net_j: float | None = None  # energy_j - idle_power_w x window_s (J)
    # issue 20 item 6 (power scope): "gpu" or "module" (a Grace superchip's CPU + GPU) as NVML
    # answered for these devices; None where the meter cannot tell (old driver, other vendors)
    power_scope: str | None = None

    @classmethod
    def of(cls, method: str, measured: bool, window_s: float, per_gpu: list[float] | None,
           sampled: float | None, reasons: list[str], n_samples: int) -> WindowEnergy:
        """The window's energy from per-device energy `per_gpu` (J, None = not known)."""
        energy_j = sum(per_gpu) if per_gpu is not None else None
        return cls(
            energy_j=energy_j,
            per_gpu_energy_j=tuple(per_gpu) if per_gpu is not None else None,
            avg_power_w=energy_j / window_s if energy_j is not None and window_s > 0 else None,
            window_s=window_s,
            energy_method=str(method),
            measured=measured,
            energy_valid=not reasons,
            energy_invalid_reasons=tuple(reasons),
            sampled_energy_j=sampled,
            n_devices=len(per_gpu) if per_gpu is not None else 0,
            n_samples=n_samples,
        )

    def net_of(self, idle_power_w: float | None) -> WindowEnergy:
        """This window with `idle_power_w` (W, None: no baseline) recorded and subtracted."""
        net = (self.energy_j - idle_power_w * self.window_s
               if idle_power_w is not None and self.energy_j is not None else None)
        return replace(self, idle_power_w=idle_power_w, energy_net_j=net)

    def on_devices(self, devices: Sequence[Any] | None) -> WindowEnergy:
        """This window, recording the device indices it covers."""
        return replace(self, devices=tuple(devices) if devices is not None else None)


@dataclass(frozen=True)
class ProbeFigures:
    """Measured device figures that replace the catalog's in the roofline (`bench probe`'s file,
    or a stored point's probe-sourced figures): memory bandwidth (TB/s), dense matmul TFLOPS per
    dtype. A figure absent here falls back to the catalog's."""

    bandwidth_tbs: float | None = None
    tflops: dict[str, float | None] = field(default_factory=dict)
