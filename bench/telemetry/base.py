"""The window API over interchangeable energy meters (measurement.md section 3).

A meter reads, per device, a cumulative energy counter (J) and/or instantaneous board
power (W). A `TelemetrySession` polls the meter on a background thread, keeps every sample
with a `perf_counter` timestamp, and answers questions about any past window:
`energy_between(t0_s, t1_s)` interpolates the counter at both ends and integrates the
sampled power (trapezoid) over the same span as a cross-check.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol, Self

CROSS_CHECK_TOLERANCE = 0.05  # counter vs sampled power: larger relative gap -> invalid
MIN_WINDOW_SAMPLES = 2  # fewer samples strictly inside a window -> invalid


@dataclass
class Reading:
    """One poll of one device: cumulative counter in J and power in W (None = not read)."""

    energy_j: float | None
    power_w: float | None


class Meter(Protocol):
    """What a session needs from a meter. Vendor units are converted inside the meter."""

    method: str  # energy_method recorded with every figure
    measured: bool  # False for estimates (nominal) and for "none"
    devices: list[str]  # one label per device, e.g. "gpu0"
    counter_range_j: list[float | None]  # wrap period of each counter (RAPL); None = no wrap
    nominal_power_w: list[float] | None  # set only by the nominal meter
    read_errors: int

    def read(self) -> list[Reading]: ...

    def close(self) -> None: ...

    def describe(self) -> dict: ...


class NoMeter:
    """`energy_method: none`: nothing is measured or estimated."""

    method = "none"
    measured = False
    nominal_power_w = None
    read_errors = 0

    def __init__(self):
        self.devices: list[str] = []
        self.counter_range_j: list[float | None] = []

    def read(self) -> list[Reading]:
        return []

    def close(self) -> None:
        pass

    def describe(self) -> dict:
        return {"method": self.method}


@dataclass
class Measurement:
    """The result of one named window: its span (perf_counter s) and the energy dict."""

    name: str
    t0_s: float
    t1_s: float
    energy: dict

    @property
    def energy_j(self) -> float | None:
        return self.energy.get("energy_j")

    @property
    def avg_power_w(self) -> float | None:
        return self.energy.get("avg_power_w")


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
    ):
        self.meter = meter
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

    def start(self) -> TelemetrySession:
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
            except Exception as e:  # a dying meter must not kill the run; it shows as gaps
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
    def begin_window(self, name: str) -> None:
        self.sample_once()
        self._windows[name] = self.clock()

    def end_window(self, name: str) -> Measurement:
        t1_s = self.clock()
        t0_s = self._windows.pop(name)
        return Measurement(name, t0_s, t1_s, self.energy_between(t0_s, t1_s))

    @contextmanager
    def window(self, name: str):
        """`with tel.window("x") as w: ...`; afterwards `w.measurement` holds the result."""
        holder = _WindowHolder()
        self.begin_window(name)
        try:
            yield holder
        finally:
            holder.measurement = self.end_window(name)

    def idle_baseline(self, seconds: float) -> dict:
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
        if self.meter.measured and idle["energy_j"] is not None and idle["window_s"] > 0:
            self.idle_power_w = idle["energy_j"] / idle["window_s"]
            self.per_gpu_idle_power_w = [e / idle["window_s"] for e in idle["per_gpu_energy_j"]]
        return {
            "idle_power_w": self.idle_power_w,
            "per_gpu_idle_power_w": self.per_gpu_idle_power_w,
            "idle_window_s": idle["window_s"],
            "energy_method": self.method,
            "energy_valid": idle["energy_valid"],
            "energy_invalid_reasons": idle["energy_invalid_reasons"],
        }

    def energy_between(self, t0_s: float, t1_s: float, net: bool = True) -> dict:
        """Energy of [t0_s, t1_s] (perf_counter s) from the recorded samples; see module doc."""
        if self.samples_power and (not self._series[0].t_s or self._series[0].t_s[-1] < t1_s):
            self.sample_once()  # the window usually ends just before this call
        window_s = t1_s - t0_s
        if self.meter.nominal_power_w is not None:
            per_gpu = [p * window_s for p in self.meter.nominal_power_w]
            out = _energy_dict(self.method, False, window_s, per_gpu, None, [], 0)
        elif not self.meter.devices:
            out = _energy_dict("none", False, window_s, None, None, ["no energy meter (energy_method none)"], 0)
        else:
            with self._lock:
                snapshot = [(list(s.t_s), list(s.energy_j), list(s.power_w)) for s in self._series]
            out = _measured_energy(self.meter, snapshot, t0_s, t1_s)
        idle = self.idle_power_w if net else None
        out["idle_power_w"] = idle
        out["energy_net_j"] = (
            out["energy_j"] - idle * window_s if idle is not None and out["energy_j"] is not None else None
        )
        return out

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


@dataclass
class _WindowHolder:
    measurement: Measurement | None = None


def _energy_dict(method, measured, window_s, per_gpu, sampled, reasons, n_samples) -> dict:
    energy_j = sum(per_gpu) if per_gpu is not None else None
    return {
        "energy_j": energy_j,
        "per_gpu_energy_j": per_gpu,
        "avg_power_w": energy_j / window_s if energy_j is not None and window_s > 0 else None,
        "window_s": window_s,
        "energy_method": method,
        "measured": measured,
        "energy_valid": not reasons,
        "energy_invalid_reasons": reasons,
        "sampled_energy_j": sampled,
        "n_devices": len(per_gpu) if per_gpu is not None else 0,
        "n_samples": n_samples,
    }


def _measured_energy(meter: Meter, snapshot, t0_s: float, t1_s: float) -> dict:
    reasons: list[str] = []
    per_gpu: list[float] = []
    sampled: list[float | None] = []
    has_counter = meter.method not in ("nvml_power_sampled", "amdsmi_power_sampled")
    n_inside = []
    for i, (ts, es, ps) in enumerate(snapshot):
        label = meter.devices[i]
        p_pts = [(t, p) for t, p in zip(ts, ps) if p is not None]
        s_j = trapezoid_j([t for t, _ in p_pts], [p for _, p in p_pts], t0_s, t1_s) if p_pts else None
        sampled.append(s_j)
        n_inside.append(sum(1 for t in ts if t0_s < t < t1_s))
        if has_counter:
            e_pts = [(t, e) for t, e in zip(ts, es) if e is not None]
            e_ts = [t for t, _ in e_pts]
            cum, problems = continuous_counter_j(
                e_ts, [e for _, e in e_pts], meter.counter_range_j[i], p_pts
            )
            reasons += [f"{label}: {p}" for p in problems if _touches(p, e_ts, t0_s, t1_s)]
            e0, e1 = interp(e_ts, cum, t0_s), interp(e_ts, cum, t1_s)
            if e0 is None or e1 is None:
                reasons.append(f"{label}: samples do not cover the window")
                per_gpu.append(float("nan"))
                continue
            per_gpu.append(e1 - e0)
            if s_j is not None and e1 - e0 > 0:
                gap = abs(s_j - (e1 - e0)) / (e1 - e0)
                if gap > CROSS_CHECK_TOLERANCE:
                    reasons.append(
                        f"{label}: counter {e1 - e0:.1f} J vs sampled power {s_j:.1f} J differ by {gap:.0%}"
                    )
        else:
            if s_j is None:
                reasons.append(f"{label}: samples do not cover the window")
            per_gpu.append(s_j if s_j is not None else float("nan"))
    if min(n_inside, default=0) < MIN_WINDOW_SAMPLES:
        reasons.append(f"too few samples in the window ({min(n_inside, default=0)} < {MIN_WINDOW_SAMPLES})")
    total_sampled = sum(sampled) if sampled and all(s is not None for s in sampled) else None
    if any(math.isnan(e) for e in per_gpu):  # a device's window could not be measured
        per_gpu_out = None
    else:
        per_gpu_out = per_gpu
    return _energy_dict(meter.method, True, t1_s - t0_s, per_gpu_out, total_sampled, reasons, min(n_inside, default=0))


def _touches(problem, ts, t0_s, t1_s) -> bool:
    """A counter problem matters only if it happened inside the span that brackets the window."""
    t = problem.t_s
    lo = max([x for x in ts if x <= t0_s], default=ts[0] if ts else t0_s)
    hi = min([x for x in ts if x >= t1_s], default=ts[-1] if ts else t1_s)
    return lo < t <= hi


class CounterProblem(str):
    """A reason string that also remembers when (perf_counter s) the problem was seen."""

    t_s: float

    def __new__(cls, text: str, t_s: float):
        obj = super().__new__(cls, text)
        obj.t_s = t_s
        return obj


def continuous_counter_j(ts, es, range_j, power_pts) -> tuple[list[float], list[CounterProblem]]:
    """Cumulative energy (J, from 0 at the first sample) made continuous across wraps and resets.

    A drop with a known wrap range (RAPL) is a wrap: the range is added, no problem raised.
    Any other drop is a reset: the gap is bridged with the sampled power when there is
    some, else with the new counter value (a counter restarted from zero), and reported.
    """
    cum = [0.0] if ts else []
    problems: list[CounterProblem] = []
    for k in range(1, len(ts)):
        delta = es[k] - es[k - 1]
        if delta < 0 and range_j:
            delta += range_j
        elif delta < 0:
            problems.append(CounterProblem(f"energy counter went backwards at t={ts[k]:.3f} s (reset or wrap)", ts[k]))
            bridged = trapezoid_j([t for t, _ in power_pts], [p for _, p in power_pts], ts[k - 1], ts[k])
            delta = bridged if bridged is not None else max(es[k], 0.0)
        cum.append(cum[-1] + delta)
    return cum, problems


def interp(ts: list[float], ys: list[float], t: float) -> float | None:
    """Linear interpolation of ys(ts) at t; None outside [ts[0], ts[-1]]."""
    if not ts or t < ts[0] or t > ts[-1]:
        return None
    lo, hi = 0, len(ts) - 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if ts[mid] <= t:
            lo = mid
        else:
            hi = mid
    if ts[hi] == ts[lo]:
        return ys[hi]
    return ys[lo] + (ys[hi] - ys[lo]) * (t - ts[lo]) / (ts[hi] - ts[lo])


def trapezoid_j(ts: list[float], ps: list[float], t0_s: float, t1_s: float) -> float | None:
    """Integral (J) of power samples ps (W) at ts (s) over [t0_s, t1_s]; None if not covered."""
    p0, p1 = interp(ts, ps, t0_s), interp(ts, ps, t1_s)
    if p0 is None or p1 is None:
        return None
    pts = [(t0_s, p0)] + [(t, p) for t, p in zip(ts, ps) if t0_s < t < t1_s] + [(t1_s, p1)]
    return sum((b[0] - a[0]) * (a[1] + b[1]) / 2 for a, b in itertools.pairwise(pts))


def per_token(energy: dict, output_tokens: float | None, total_tokens: float | None) -> dict:
    """Energy per token (J/token) and tokens per joule, gross and net of the idle baseline."""

    def ratio(a, b):
        return a / b if a is not None and b else None

    out = {}
    for suffix, key in (("", "energy_j"), ("_net", "energy_net_j")):
        e_j = energy.get(key)
        out[f"j_per_output_token{suffix}"] = ratio(e_j, output_tokens)
        out[f"j_per_token{suffix}"] = ratio(e_j, total_tokens)
        out[f"output_tok_per_j{suffix}"] = ratio(output_tokens, e_j)
    return out
