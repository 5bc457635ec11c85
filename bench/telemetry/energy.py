"""Pure energy arithmetic behind `TelemetrySession.energy_between` (docs/measurement.md section 3).

Counter readings are made continuous across wraps and resets, interpolated at the window
ends and cross-checked against the trapezoid integral of sampled power. Times in
perf_counter seconds, energy in J, power in W.
"""

from __future__ import annotations

import itertools
import math
from typing import TypedDict

from bench.telemetry.types import Meter, WindowEnergy

CROSS_CHECK_TOLERANCE = 0.05  # counter vs sampled power: larger relative gap -> invalid
MIN_WINDOW_SAMPLES = 2  # fewer samples strictly inside a window -> invalid


def measured_energy(meter: Meter, snapshot, t0_s: float, t1_s: float) -> WindowEnergy:
    """The energy of [t0_s, t1_s] from a meter's samples, (t_s, energy_j, power_w) lists per device;
    `meter.has_counter` says whether the counter or the polled power is the figure."""
    reasons: list[str] = []
    per_gpu: list[float] = []
    sampled: list[float | None] = []
    has_counter = meter.has_counter
    n_inside = []
    for i, (ts, es, ps) in enumerate(snapshot):
        label = meter.devices[i]
        p_pts = [(t, p) for t, p in zip(ts, ps) if p is not None]
        s_j = trapezoid_j([t for t, _ in p_pts], [p for _, p in p_pts], t0_s, t1_s) if p_pts else None
        sampled.append(s_j)
        n_inside.append(sum(1 for t in ts if t0_s < t < t1_s))
        missed = _edge_misses(ts, es if has_counter else ps, t0_s, t1_s)
        if missed:  # the read bracketing the window failed (a node's agent that did not answer)
            reasons += [f"{label}: {'counter' if has_counter else 'power'} not read at the window {m}" for m in missed]
            per_gpu.append(float("nan"))
            continue
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
    known = [s for s in sampled if s is not None]
    total_sampled = sum(known) if sampled and len(known) == len(sampled) else None
    if any(math.isnan(e) for e in per_gpu):  # a device's window could not be measured
        per_gpu_out = None
    else:
        per_gpu_out = per_gpu
    return WindowEnergy.of(meter.method, True, t1_s - t0_s, per_gpu_out, total_sampled, reasons,
                           min(n_inside, default=0))


def _edge_misses(ts, values, t0_s: float, t1_s: float) -> list[str]:
    """"start" / "end" where the last read at or before t0_s / the first at or after t1_s has no
    value: interpolating across it would bridge a gap that hides the window's true edge."""
    before = [k for k, t in enumerate(ts) if t <= t0_s]
    after = [k for k, t in enumerate(ts) if t >= t1_s]
    out = []
    if before and values[before[-1]] is None:
        out.append("start")
    if after and values[after[0]] is None:
        out.append("end")
    return out


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


class PerToken(TypedDict):
    """Energy per token (J/token) and tokens per joule, gross and net; named as the Energy group's fields."""

    j_per_output_token: float | None
    j_per_token: float | None
    output_tok_per_j: float | None
    j_per_output_token_net: float | None
    j_per_token_net: float | None
    output_tok_per_j_net: float | None


def per_token(energy: WindowEnergy, output_tokens: float | None, total_tokens: float | None) -> PerToken:
    """Energy per token (J/token) and tokens per joule, gross and net of the idle baseline,
    keyed by the names of the Energy group's fields."""

    def ratio(a: float | None, b: float | None) -> float | None:
        return a / b if a is not None and b else None

    gross, net = energy.energy_j, energy.energy_net_j
    return PerToken(
        j_per_output_token=ratio(gross, output_tokens), j_per_token=ratio(gross, total_tokens),
        output_tok_per_j=ratio(output_tokens, gross),
        j_per_output_token_net=ratio(net, output_tokens), j_per_token_net=ratio(net, total_tokens),
        output_tok_per_j_net=ratio(output_tokens, net),
    )
