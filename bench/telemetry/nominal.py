"""The estimate used where nothing can be measured: catalog board power x time x devices.

Always `measured: false`, `energy_method: nominal`. Board power is the TDP/TBP limit, so
this is an upper-bound-like figure, not a measurement.
"""

from __future__ import annotations

from bench.errors import TelemetryError
from bench.telemetry.types import EnergyMethod, Reading


class NominalMeter:
    method = EnergyMethod.NOMINAL.value
    measured = False
    has_counter = False
    read_errors = 0

    def __init__(self, power_w: float, n_devices: int, hardware_id: str | None, indices: list[int] | None = None):
        self.nominal_power_w = [float(power_w)] * n_devices
        self.devices = [f"gpu{i}" for i in indices] if indices else [f"dev{i}" for i in range(n_devices)]
        self.counter_range_j = [None] * n_devices
        self.hardware_id = hardware_id

    def read(self) -> list[Reading]:
        return [Reading(None, p) for p in self.nominal_power_w]

    def close(self) -> None:
        pass

    def describe(self) -> dict:
        return {"method": self.method, "hardware_id": self.hardware_id, "board_power_w": self.nominal_power_w}


def open_meter(hardware=None, gpu_indices=None, **_) -> NominalMeter:
    power_w = getattr(hardware, "power_w", None)
    if not power_w:
        raise TelemetryError("nominal: no board power (power_w) known for this hardware")
    n_devices = len(gpu_indices) if gpu_indices else 1  # exactly the engine's devices, never every visible one
    return NominalMeter(power_w, n_devices, getattr(hardware, "id", None), list(gpu_indices or []))
