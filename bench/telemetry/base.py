"""The window API over interchangeable energy meters (docs/measurement.md section 3).

A meter reads, per device, a cumulative energy counter (J) and/or instantaneous board
power (W). A `TelemetrySession` polls the meter on a background thread, keeps every sample
with a `perf_counter` timestamp, and answers questions about any past window:
`energy_between(t0_s, t1_s) -> WindowEnergy` interpolates the counter at both ends and
integrates the sampled power (trapezoid) over the same span as a cross-check; that arithmetic
lives in `bench.telemetry.energy`, the shared types in `bench.telemetry.types`.

It is the one window API: a window is asked for after the fact, because the load's
steady-state window is known only once the load has ended (Zeus's begin/end pair would
have to guess it up front), and the answer is a frozen measurement, as Zeus's `end_window`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Self

from bench.telemetry.energy import measured_energy
from bench.telemetry.types import EnergyMethod, Meter, Reading, WindowEnergy

__all__ = ["IdleBaseline", "Meter", "NoMeter", "Reading", "TelemetrySession", "WindowEnergy"]


class NoMeter:
    """`energy_method: none`: nothing is measured or estimated."""

    method: str = EnergyMethod.NONE.value
    measured: bool = False
    has_counter: bool = False
    nominal_power_w: list[float] | None = None
    read_errors: int = 0

    def __init__(self) -> None:
        self.devices: list[str] = []
        self.counter_range_j: list[float | None] = []

    def read(self) -> list[Reading]:
        return []

    def close(self) -> None:
        pass

    def describe(self) -> dict:
        return {"method": self.method}


@dataclass(frozen=True)
class IdleBaseline:
    """The idle, model-loaded power measured after an engine (re)start (W, s)."""

    idle_power_w: float | None  # sum over devices (W); None when not measured
    per_gpu_idle_power_w: tuple[float, ...] | None
    idle_window_s: float
    energy_method: str
    energy_valid: bool
    energy_invalid_reasons: tuple[str, ...]


@dataclass
class _Series:
    t_s: list[float] = field(default_factory=list)
    energy_j: list[float | None] = field(default_factory=list)
    power_w: list[float | None] = field(default_factory=list)


class TelemetrySession:
    """Samples one meter and answers energy questions about windows of the recorded past."""

    def __init__(
        self,
        meter: Meter,
        interval_s: float = 0.1,
        clock: Callable[[], float] = time.perf_counter,
        sleep: Callable[[float], None] = time.sleep,
        requested: str = "auto",
        notes: list[str] | None = None,
        device_indices: list[int] | None = None,
    ):
        self.meter = meter
        # the device indices this session measures, recorded with every window (None: not GPUs)
        self.device_indices = list(device_indices) if device_indices is not None else None
        self.interval_s = interval_s
        self.clock = clock
        self.sleep = sleep
        self.requested = requested
        self.notes = list(notes or [])
        self.idle_power_w: float | None = None
        self.per_gpu_idle_power_w: list[float] | None = None
        self._series = [_Series() for _ in meter.devices]
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._windows: dict[str, float] = {}
        self._closed = False

    @property
    def method(self) -> str:
        return self.meter.method

    @property
    def samples_power(self) -> bool:
        return self.meter.nominal_power_w is None and bool(self.meter.devices)

    def describe(self) -> dict:
        """What was requested, what is used, and why anything degraded."""
        return {
            "requested": self.requested,
            "energy_method": self.method,
            "measured": self.meter.measured,
            "devices": list(self.meter.devices),
            "device_indices": self.device_indices,
            "interval_s": self.interval_s,
            "idle_power_w": self.idle_power_w,
            "read_errors": self.meter.read_errors,
            "notes": list(self.notes),
            "meter": self.meter.describe(),
        }

    # sampling -------------------------------------------------------------------------
    def sample_once(self) -> None:
        """Read every device once and store the readings, stamped at the read's midpoint."""
        if not self.samples_power or self._closed:
            return
        with self._lock:  # one reader at a time keeps every series in time order
            t_before = self.clock()
            readings = self.meter.read()
            t_s = (t_before + self.clock()) / 2
            for series, r in zip(self._series, readings):
                series.t_s.append(t_s)
                series.energy_j.append(r.energy_j)
                series.power_w.append(r.power_w)

    def start(self) -> Self:
        """Start the background sampling thread (a no-op for nominal and none)."""
        if self._thread is not None or not self.samples_power:
            return self
        self._stop.clear()
        self.sample_once()
        self._thread = threading.Thread(target=self._loop, name="bench-telemetry", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.sample_once()
            except Exception as e:  # noqa: BLE001 - a dying meter must not kill the run; it shows as gaps
                self.meter.read_errors += 1
                self.notes.append(f"sampling error: {type(e).__name__}: {e}")

    def stop(self) -> None:
        """Stop sampling (one last sample first) and release the meter; samples are kept."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
        self.sample_once()
        if not self._closed:
            self.meter.close()
            self._closed = True

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # windows --------------------------------------------------------------------------
    def idle_baseline(self, seconds: float) -> IdleBaseline:
        """Sleep-sample the idle, loaded engine for `seconds`; sets and returns idle power (W)."""
        t0_s = self.clock()
        self.sample_once()
        if self._thread is None:
            end = t0_s + seconds
            while self.clock() < end:
                self.sleep(min(self.interval_s, end - self.clock()))
                self.sample_once()
        else:
            self.sleep(seconds)
        t1_s = self.clock()
        idle = self.energy_between(t0_s, t1_s, net=False)
        if (self.meter.measured and idle.energy_j is not None and idle.per_gpu_energy_j is not None
                and idle.window_s > 0):
            self.idle_power_w = idle.energy_j / idle.window_s
            self.per_gpu_idle_power_w = [e / idle.window_s for e in idle.per_gpu_energy_j]
        return IdleBaseline(
            idle_power_w=self.idle_power_w,
            per_gpu_idle_power_w=tuple(self.per_gpu_idle_power_w) if self.per_gpu_idle_power_w is not None else None,
            idle_window_s=idle.window_s,
            energy_method=self.method,
            energy_valid=idle.energy_valid,
            energy_invalid_reasons=idle.energy_invalid_reasons,
        )

    def energy_between(self, t0_s: float, t1_s: float, net: bool = True) -> WindowEnergy:
        """Energy of [t0_s, t1_s] (perf_counter s) from the recorded samples; see module doc."""
        if self.samples_power and (not self._series[0].t_s or self._series[0].t_s[-1] < t1_s):
            self.sample_once()  # the window usually ends just before this call
        window_s = t1_s - t0_s
        if self.meter.nominal_power_w is not None:
            per_gpu = [p * window_s for p in self.meter.nominal_power_w]
            out = WindowEnergy.of(self.method, False, window_s, per_gpu, None, [], 0)
        elif not self.meter.devices:
            out = WindowEnergy.of(EnergyMethod.NONE, False, window_s, None, None,
                                  ["no energy meter (energy_method none)"], 0)
        else:
            with self._lock:
                snapshot = [(list(s.t_s), list(s.energy_j), list(s.power_w)) for s in self._series]
            out = measured_energy(self.meter, snapshot, t0_s, t1_s)
            out = replace(out, power_scope=getattr(self.meter, "power_scope", None))  # gpu | module (nvml)
        if self.device_indices is not None and self.meter.devices:
            out = out.on_devices(self.device_indices)
        return out.net_of(self.idle_power_w if net else None)

    def power_series(self):
        """All samples as a DataFrame: t_s, device, power_w, energy_j (NaN where not read).

        Where a meter has no power reading (RAPL), power is the counter's slope.
        """
        import pandas as pd

        rows = []
        with self._lock:
            for label, s in zip(self.meter.devices, self._series):
                prev = None
                for t_s, e_j, p_w in zip(s.t_s, s.energy_j, s.power_w):
                    if p_w is None and e_j is not None and prev is not None and t_s > prev[0]:
                        delta = e_j - prev[1]
                        p_w = delta / (t_s - prev[0]) if delta >= 0 else None
                    rows.append({"t_s": t_s, "device": label, "power_w": p_w, "energy_j": e_j})
                    if e_j is not None:
                        prev = (t_s, e_j)
        frame = pd.DataFrame(rows, columns=["t_s", "device", "power_w", "energy_j"])
        return frame.astype({"t_s": "float64", "power_w": "float64", "energy_j": "float64"})
