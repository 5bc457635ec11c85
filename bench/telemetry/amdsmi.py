"""AMD meter over the `amdsmi` Python package (ROCm).

Primary: `amdsmi_get_energy_count`, an accumulator in ticks of `counter_resolution` uJ
(the accumulator key is `energy_accumulator`; older releases call it `power`). Beside it,
`amdsmi_get_power_info` (W: `socket_power`, else `current_socket_power`, else
`average_socket_power`; "N/A" where a part lacks one) is polled as the cross-check, and
integrated when the accumulator is missing (`amdsmi_power_sampled`). uJ -> J here.
"""

from __future__ import annotations

import contextlib

from bench.errors import TelemetryError
from bench.telemetry.types import EnergyMethod, Reading

_POWER_KEYS = ("socket_power", "current_socket_power", "average_socket_power")


def import_amdsmi():
    try:
        import amdsmi
    except ImportError:
        raise TelemetryError("amdsmi: the amdsmi package is not installed") from None
    return amdsmi


def energy_j(count: dict) -> float:
    """Accumulator dict from amdsmi_get_energy_count -> joules."""
    ticks = count.get("energy_accumulator", count.get("power"))
    if ticks is None:  # the TypeError float(None) raised, with the reason
        raise TypeError("amdsmi energy count has neither energy_accumulator nor power")
    return float(ticks) * float(count["counter_resolution"]) / 1e6


def power_w(info: dict) -> float | None:
    """Power dict from amdsmi_get_power_info -> watts (None when every field is N/A)."""
    for key in _POWER_KEYS:
        value = info.get(key)
        if isinstance(value, (int, float)) and value >= 0:
            return float(value)
    return None


class AmdsmiMeter:
    measured = True
    nominal_power_w = None

    def __init__(self, lib, handles, labels, use_counter: bool, has_power: bool):
        self.lib = lib
        self.handles = handles
        self.devices = labels
        self.use_counter = use_counter
        self.has_counter = use_counter  # the Meter capability: the counter, not polled power, is the figure
        self.has_power = has_power
        self.method = (EnergyMethod.AMDSMI_COUNTER if use_counter else EnergyMethod.AMDSMI_POWER_SAMPLED).value
        self.counter_range_j = [None] * len(handles)
        self.read_errors = 0
        self.last_error: str | None = None

    def read(self) -> list[Reading]:
        out = []
        for h in self.handles:
            e_j = p_w = None
            try:
                if self.use_counter:
                    e_j = energy_j(self.lib.amdsmi_get_energy_count(h))
                if self.has_power:
                    p_w = power_w(self.lib.amdsmi_get_power_info(h))
            except _errors(self.lib) as e:
                self.read_errors += 1
                self.last_error = f"{type(e).__name__}: {e}"
            out.append(Reading(e_j, p_w))
        return out

    def close(self) -> None:
        with contextlib.suppress(*_errors(self.lib)):
            self.lib.amdsmi_shut_down()

    def describe(self) -> dict:
        return {"method": self.method, "devices": self.devices, "last_error": self.last_error}


def open_meter(gpu_indices=None, amdsmi=None, **_) -> AmdsmiMeter:
    lib = amdsmi if amdsmi is not None else import_amdsmi()
    try:
        lib.amdsmi_init()
        handles = list(lib.amdsmi_get_processor_handles())
    except _errors(lib) as e:
        raise TelemetryError(f"amdsmi: cannot initialise ({e})") from None
    if not handles:
        lib.amdsmi_shut_down()
        raise TelemetryError("amdsmi: no AMD GPU visible")
    indices = list(range(len(handles))) if gpu_indices is None else list(gpu_indices)
    if any(not 0 <= i < len(handles) for i in indices):
        lib.amdsmi_shut_down()
        raise TelemetryError(f"amdsmi: GPU index out of range (amdsmi sees {len(handles)})")
    chosen = [handles[i] for i in indices]
    use_counter = all(_works(lib, lambda h: energy_j(lib.amdsmi_get_energy_count(h)), h) for h in chosen)
    has_power = all(_works(lib, lambda h: power_w(lib.amdsmi_get_power_info(h)), h) for h in chosen)
    if not use_counter and not has_power:
        lib.amdsmi_shut_down()
        raise TelemetryError("amdsmi: neither the energy accumulator nor power readings work")
    return AmdsmiMeter(lib, chosen, [f"gpu{i}" for i in indices], use_counter, has_power)


def _works(lib, fn, handle) -> bool:
    try:
        return fn(handle) is not None
    except _errors(lib) + (KeyError, TypeError, ValueError):
        return False


def _errors(lib) -> tuple[type[BaseException], ...]:
    """What amdsmi raises: its AmdSmiException (a stand-in module may raise any error)."""
    exc = getattr(lib, "AmdSmiException", None)
    return (exc,) if isinstance(exc, type) else (Exception,)
