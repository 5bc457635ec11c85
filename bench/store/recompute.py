"""One stored load point's figures, derived again from its raw records and energy series.

The functions are the ones a run uses (bench.load.merge for the window facts,
bench.measure.metrics.summarize, bench.telemetry.energy, bench.measure.point's roofline,
bench.measure.validity.check_validity), applied to what the run stored: the per-request
Parquet, power.parquet and the window bounds of the point. A stored figure that the
recomputation does not give back (beyond TOLERANCE) is a `Disagreement` naming the field.

    figures = recompute_point(point, cfg, n_gpus, records, power, telemetry, model, hardware)
    figures.metrics, figures.energy, figures.roofline, figures.valid, figures.reasons

What cannot be recomputed (the server's counters, the client's self-watch, the idle
baseline) is used as stored: it can make a point invalid, and bench.store.plausibility
checks it; it never makes one valid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, TypeGuard

import msgspec

from bench.errors import StoreError
from bench.load.records import RequestRecord
from bench.telemetry.types import MEASURED_METHODS, EnergyMethod, ProbeFigures

if TYPE_CHECKING:
    from bench.results.config import StoredEngineConfig

# "Beyond rounding": the writer stores float64 as computed (JSON and Parquet keep every bit), so
# a recomputation gives the same bits; the tolerance only absorbs a different libm or NumPy.
REL_TOL = 1e-9
ABS_TOL = 1e-12  # only for figures that should be 0: a last-bit residue of another libm
TIME_TOL_S = 1e-9  # a window bound against the send it must match (both perf_counter seconds as stored)
_ENERGY_FIELDS = ("energy_j", "per_gpu_energy_j", "avg_power_w", "window_s", "energy_method", "measured",
                  "energy_valid", "sampled_energy_j", "n_devices", "n_samples", "energy_net_j",
                  "j_per_output_token", "j_per_token", "output_tok_per_j", "j_per_output_token_net",
                  "j_per_token_net", "output_tok_per_j_net")


class Disagreement(StoreError):
    """A stored figure the records do not give back; the message names the field."""


@dataclass
class PointFigures:
    """A point's figures as derived now: the groups that replace the stored ones, and validity."""

    metrics: Any  # bench.measure.groups.Metrics
    energy: Any  # bench.measure.groups.Energy | None (None: no energy figure: not measured, or not recomputable)
    roofline: Any  # bench.measure.groups.Roofline | None (None: not in the catalog)
    reasons: list[str] = field(default_factory=list)  # why it is invalid, recomputed
    run: Any = None  # the records merged as the run merged them (bench.load.driver.PointRun): the window facts

    @property
    def valid(self) -> bool:
        return not self.reasons


def same(stored: Any, derived: Any) -> bool:
    """Stored == derived, numbers within REL_TOL/ABS_TOL (NaN equals nothing), lists item by item."""
    if isinstance(stored, list | tuple) or isinstance(derived, list | tuple):
        return (isinstance(stored, list | tuple) and isinstance(derived, list | tuple) and len(stored) == len(derived)
                and all(same(a, b) for a, b in zip(stored, derived)))
    if isinstance(stored, bool) or isinstance(derived, bool) or not _number(stored) or not _number(derived):
        return stored == derived
    return math.isclose(float(stored), float(derived), rel_tol=REL_TOL, abs_tol=ABS_TOL)


def compare(group: str, stored, derived: dict, keys) -> None:
    """Disagreement for the first of KEYS (fields of the typed group STORED, bench.measure.groups;
    None: nothing stored) whose stored value is set and is not the derived one."""
    for key in keys:
        value = getattr(stored, key) if stored is not None else None
        if value is not None and not same(value, derived.get(key)):
            raise Disagreement(f"{group}.{key}: stored {_show(value)}, recomputed {_show(derived.get(key))}")


class _StoredMeter(msgspec.Struct):
    """A meter's stored description: each device counter's wrap range (J; None: never wraps)."""
    counter_range_j: list[float | None] | None = None


class StoredTelemetry(msgspec.Struct):
    """The part of a run's telemetry description of one configuration
    (`run.extra["telemetry"][config id]`, the session's `describe()`) a recompute reads."""
    meter: _StoredMeter | None = None

    @classmethod
    def of(cls, described: Any) -> StoredTelemetry:
        """Decoded once from the stored JSON; None or a description of another shape reads as
        one without counter ranges (every counter read as never wrapping)."""
        try:
            return cls() if described is None else msgspec.convert(described, cls)
        except msgspec.ValidationError:
            return cls()

    @property
    def counter_range_j(self) -> list[float | None] | None:
        return self.meter.counter_range_j if self.meter is not None else None


def recompute_point(point, cfg: StoredEngineConfig, n_gpus: int, records: list[RequestRecord], power,
                    telemetry: StoredTelemetry | None, model, hardware) -> PointFigures:
    """The point's figures from its records (see the module); Disagreement on the first stored
    figure that differs. `power`: the run's power series (`power_series`; None: none);
    `telemetry`: run.extra["telemetry"][config id], decoded (`StoredTelemetry.of`); `model`/`hardware`:
    catalog entries or None."""
    from bench.load.merge import merge_point
    from bench.load.types import LoopStats
    from bench.measure.metrics import summarize

    window = point.window
    t0, t1 = (window.t0_s, window.t1_s) if window is not None else (None, None)
    if not (_number(t0) and _number(t1) and math.isfinite(t0) and math.isfinite(t1)):
        raise Disagreement(f"window: bounds {_show(t0)}, {_show(t1)} are not times")
    stored = (point.client.workers if point.client is not None else None) or []
    workers = [LoopStats.from_stored(w) for w in stored if isinstance(w, dict)]
    run = merge_point(records, point.load, None, workers)
    measured = [r for r in records if r.phase == "measured" and r.t_send > 0]
    span_t1 = max(run.span_t1_s, t1) if measured else t1
    _check_window(point, measured, run, t0, t1, span_t1)
    metrics = summarize(records, window=(t0, t1), n_gpus=n_gpus, slo=_slo(point.metrics))
    compare("metrics", point.metrics, metrics.flat(), [k for k in type(metrics).model_fields if k != "extra"])
    compare("window", window, {"window_s": t1 - t0, "span_s": span_t1 - run.span_t0_s if measured else None},
            ("window_s", "span_s"))
    e0, e1 = (t0, t1) if t1 > t0 else (run.span_t0_s, span_t1)  # as bench.run.measure_point picks it
    energy, reasons = _energy(point, cfg, power, telemetry, hardware, metrics, e0, e1)
    roofline = _roofline(point, cfg, n_gpus, model, hardware, metrics)
    counts = {"generation_tokens": sum(r.n_out for r in records), "prompt_tokens": sum(r.n_in or 0 for r in records)}
    compare("server", point.server, {"client_counts": counts}, ("client_counts",))
    reasons += _validity(point, metrics, run, counts, energy, n_gpus)
    return PointFigures(metrics, energy, roofline, reasons, run)


def _check_window(point, measured, run, t0: float, t1: float, span_t1: float) -> None:
    """The stored window is the one the records give: it starts between the first send and the
    send that brought the load to its target, and ends no earlier than the last send
    (docs/measurement.md section 2; a batch engine's window ends when its last batch returns)."""
    if not measured:
        return
    first, reach, last = run.span_t0_s, run.window_t0_s, run.window_t1_s
    if not first - TIME_TOL_S <= t0 <= reach + TIME_TOL_S:
        raise Disagreement(f"window.t0_s: {t0!r} is not between the first send {first!r} and the send that reached "
                           f"the target load {reach!r}")
    if t1 < last - TIME_TOL_S:
        raise Disagreement(f"window.t1_s: {t1!r} ends before the last send {last!r}")


def _slo(metrics) -> dict | None:
    """The SLOs the point's goodput was computed for (stored with its metrics)."""
    limits = {k: getattr(metrics, f"slo_{k}") if metrics is not None else None for k in ("ttft_s", "tpot_s", "e2e_s")}
    slo = {k: v for k, v in limits.items() if v is not None}
    for key, value in slo.items():
        if not (_number(value) and math.isfinite(value) and value > 0):
            raise Disagreement(f"metrics.slo_{key}: {_show(value)} is not a time limit")
    return slo or None


def _energy(point, cfg: StoredEngineConfig, power, telemetry: StoredTelemetry | None, hardware, metrics, t0: float, t1: float):
    """(The Energy group of the window, recomputed as bench.telemetry computes it; reasons the
    point is invalid when it cannot be: no series, hardware unknown to the catalog)."""
    from bench.measure.groups import Energy
    from bench.telemetry.energy import measured_energy
    from bench.telemetry.types import WindowEnergy

    stored = point.energy
    method = stored.energy_method if stored is not None else None
    if method in (None, "none"):
        if stored is not None and (stored.energy_j is not None or stored.avg_power_w is not None):
            raise Disagreement(f"energy.energy_j: stored {_show(stored.energy_j)} with no energy method")
        return stored, []
    if method == "nominal":
        if hardware is None:
            return None, [f"energy: nominal power not checked (hardware {cfg.hardware_id!r} not in the catalog)"]
        n = stored.n_devices
        if not (type(n) is int and 1 <= n <= 100_000):
            raise Disagreement(f"energy.n_devices: {_show(n)} is not a device count")
        window = WindowEnergy.of(EnergyMethod.NOMINAL, False, t1 - t0, [float(hardware.power_w) * (t1 - t0)] * n,
                                 None, [], 0)
    elif method in MEASURED_METHODS:
        power = power or {}
        series = power.get(point.engine_config_id) or (power.get(None) if set(power) == {None} else None)
        if not series:
            return None, ["energy: not recomputable (no power series of this configuration in the run)"]
        ranges = telemetry.counter_range_j if telemetry is not None else None
        labels = list(series)
        if not (ranges is not None and len(ranges) == len(labels) and all(r is None or r > 0 for r in ranges)):
            ranges = [None] * len(labels)
        meter = SimpleNamespace(method=method, has_counter=EnergyMethod(method).has_counter, devices=labels,
                                counter_range_j=ranges)
        # the whole series, as the run's session held it: a counter summed from another first
        # sample would differ in its last bits
        window = measured_energy(meter, [series[label] for label in labels], t0, t1)
    else:
        raise Disagreement(f"energy.energy_method: {_show(method)} is not a method bench measures with")
    idle = stored.idle_power_w
    window = window.net_of(idle if _number(idle) else None)
    out = Energy.from_window(window, metrics.window_output_tokens, _total(metrics)).flat()
    out["devices"] = stored.devices  # the device indices: what the runner was given, not derivable
    out["idle_power_w"] = idle
    compare("energy", stored, out, _ENERGY_FIELDS)
    return Energy.from_flat(out), []


def power_series(table) -> dict[str | None, dict[str, tuple[list, list, list]]]:
    """power.parquet rows -> {config id: {device label: (t_s, energy_j, power_w)}}, each device's
    samples in time order, a failed read (NaN, null) as None; every configuration's under None
    too when the file has no config_id column (an older writer). Disagreement for a sample time
    that is not a finite number or a reading that is infinite. Once per run: vectorised."""
    import numpy as np

    n = table.num_rows
    try:
        t = np.asarray(table["t_s"].cast("float64").to_numpy(zero_copy_only=False), dtype=float)
        readings = [np.asarray(table[c].cast("float64").fill_null(float("nan")).to_numpy(zero_copy_only=False),
                               dtype=float) for c in ("energy_j", "power_w")]
        devices = table["device"].cast("string").to_pylist()
        configs = table["config_id"].cast("string").to_pylist() if "config_id" in table.column_names else [None] * n
    except Exception as e:  # noqa: BLE001 - a column of a type no writer makes
        raise Disagreement(f"power.parquet: columns do not read as a power series ({type(e).__name__})") from None
    if not np.isfinite(t).all():
        raise Disagreement("power.parquet: a sample time is not a finite number")
    if any(np.isinf(r).any() for r in readings):
        raise Disagreement("power.parquet: a reading is infinite")
    groups: dict[tuple, list[int]] = {}
    for i, key in enumerate(zip(configs, devices)):
        groups.setdefault(key, []).append(i)
    out: dict[str | None, dict[str, tuple[list, list, list]]] = {}
    for (config, device), rows in groups.items():
        idx = np.asarray(rows)[np.argsort(t[rows], kind="stable")]
        energy, power = ([None if math.isnan(v) else v for v in r[idx].tolist()] for r in readings)
        out.setdefault(config, {})[str(device)] = (t[idx].tolist(), energy, power)
    return out


def _roofline(point, cfg: StoredEngineConfig, n_gpus: int, model, hardware, metrics):
    """The roofline as bench.measure.point computes it, with the bandwidth and FLOPS the point
    recorded (a probe's, or the catalog's); None when the model or hardware is not in the catalog."""
    from bench.measure.point import (
        _roofline as point_roofline,  # the run's own computation
    )

    if model is None or hardware is None:
        return None
    stored = point.roofline
    bandwidth, tflops, probed = None, {}, []
    if stored is not None and stored.bandwidth_source == "probe":
        bandwidth = stored.bandwidth_tbs
        probed.append(stored.bandwidth_tbs)
    if stored is not None and stored.flops_source == "probe" and isinstance(stored.flops_dtype, str):
        tflops = {stored.flops_dtype: stored.tflops}
        probed.append(stored.tflops)
    for value in probed:
        if not (_number(value) and math.isfinite(value) and value > 0):
            raise Disagreement(f"roofline: probe figure {_show(value)} is not a positive number")
    probe = ProbeFigures(bandwidth, tflops) if probed else None
    roof = point_roofline(engine_namespace(cfg), point, model, hardware, n_gpus, metrics, probe)
    if roof is not None and (stored is None or stored.error is None):
        compare("roofline", stored, roof.flat(), ("roofline_efficiency", "bound_tok_s"))
    return roof


def engine_namespace(cfg: StoredEngineConfig) -> SimpleNamespace:
    """The attributes of an EngineConfig the roofline reads, from a stored configuration."""
    return SimpleNamespace(dtype=str(cfg.dtype or "auto"), quantization=cfg.quantization,
                           kv_cache_dtype=cfg.kv_cache_dtype or "auto",
                           data_parallel_size=cfg.data_parallel_size or 1)


def _validity(point, metrics, run, counts: dict, energy, n_gpus: int) -> list[str]:
    """bench.measure.validity.check_validity on the recomputed figures; the server's counters and
    gauges as stored (they are the server's, not the records')."""
    from bench.measure.groups import prefix_cache_hit_rate
    from bench.measure.validity import check_validity

    delta = point.server.counter_delta if point.server is not None else None
    if isinstance(delta, dict):  # the server's names, untyped: as the server exposed them
        compare("server", point.server, {"prefix_cache_hit_rate": prefix_cache_hit_rate(delta)},
                ("prefix_cache_hit_rate",))
    return check_validity(
        metrics, point.load, run, server_counters=delta, client_counters=counts, energy=energy, n_gpus=n_gpus,
        workload_kind=getattr(point.workload, "kind", None), server=point.server).reasons


def _total(metrics) -> float | None:
    a, b = metrics.window_output_tokens, metrics.window_input_tokens
    return None if a is None or b is None else a + b


def _number(v) -> TypeGuard[int | float]:
    return type(v) in (int, float)


def _show(value) -> str:
    return repr(value)[:40]
