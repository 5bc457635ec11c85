"""Energy telemetry: interchangeable meters behind one window API (see base.py).

    tel = open_telemetry("auto", hardware, gpu_indices=[0])
    tel.start(); tel.idle_baseline(3.0); energy = tel.energy_between(t0, t1); tel.stop()
"""

from __future__ import annotations

import time
from collections.abc import Callable

from bench.errors import ConfigError, TelemetryError
from bench.registry import Registry
from bench.telemetry.base import NoMeter, TelemetrySession
from bench.telemetry.energy import per_token
from bench.telemetry.types import EnergyMethod, Meter, WindowEnergy

__all__ = ["AUTO_ORDER", "METERS", "EnergyMethod", "TelemetrySession", "WindowEnergy", "meter_choices", "open_telemetry",
           "per_token"]

# name -> "module:factory"; each factory raises TelemetryError with a one-line cause.
METERS: Registry[Callable[..., object]] = Registry("energy meter", {
    "nvml": "bench.telemetry.nvml:open_meter",
    "amdsmi": "bench.telemetry.amdsmi:open_meter",
    "rapl": "bench.telemetry.rapl:open_meter",
    "nominal": "bench.telemetry.nominal:open_meter",
})
AUTO_ORDER = ("nvml", "amdsmi", "rapl", "nominal")
CHOICES_BESIDE_METERS = ("auto", "none")  # the first meter that works; no energy at all


def meter_choices() -> list[str]:
    """What `--telemetry` accepts: auto, every meter, none."""
    return ["auto", *METERS, "none"]


def open_meter(name: str, **context):
    return METERS.get(name)(**context)


def open_telemetry(
    requested: str = "auto",
    hardware=None,
    gpu_indices: list[int] | None = None,
    interval_s: float = 0.1,
    nvml=None,
    clock: Callable[[], float] = time.perf_counter,
    *,
    amdsmi=None,
    rapl_root: str | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> TelemetrySession:
    """A session over the requested meter (not yet started).

    "auto" tries nvml, amdsmi, rapl, nominal in turn and records why each was passed over;
    rapl is skipped when GPU indices are given (it measures the CPU package, not the GPUs).
    A meter requested by name that cannot work raises TelemetryError.
    """
    if requested not in CHOICES_BESIDE_METERS and requested not in METERS:
        raise ConfigError(METERS.unknown(requested, also=CHOICES_BESIDE_METERS))
    context = {"hardware": hardware, "gpu_indices": gpu_indices, "nvml": nvml, "amdsmi": amdsmi, "rapl_root": rapl_root}
    notes: list[str] = []
    meter: Meter | None = None
    if requested == "none":
        meter = NoMeter()
    elif requested != "auto":
        meter = open_meter(requested, **context)
    else:
        for name in AUTO_ORDER:
            if name == "rapl" and gpu_indices:
                notes.append("rapl: skipped (GPU benchmark; RAPL measures the CPU package)")
                continue
            try:
                meter = open_meter(name, **context)
                break
            except TelemetryError as e:
                notes.append(str(e))
        if meter is None:
            notes.append("no energy meter available: energy_method none")
            meter = NoMeter()
    indices = list(gpu_indices) if gpu_indices is not None and meter.devices else None
    return TelemetrySession(meter, interval_s=interval_s, clock=clock, sleep=sleep, requested=requested, notes=notes,
                            device_indices=indices)
