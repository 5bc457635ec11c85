"""CPU package energy from Linux powercap RAPL: `<root>/intel-rapl:N/energy_uj`.

Only top-level package zones (`intel-rapl:N`, not the `intel-rapl:N:M` subzones inside
them) are read, so nothing is counted twice. The counter wraps at `max_energy_range_uj`;
a drop is corrected by that range. Since 2020 most kernels make `energy_uj` root-only;
unreadable files mean RAPL is unavailable. AMD Zen CPUs use the same `intel-rapl` zones.
"""

from __future__ import annotations

import re
from pathlib import Path

from bench.errors import TelemetryError
from bench.telemetry.types import EnergyMethod, Reading

DEFAULT_ROOT = "/sys/class/powercap"
_PACKAGE = re.compile(r"^intel-rapl:\d+$")


class RaplMeter:
    method = EnergyMethod.RAPL.value
    measured = True
    has_counter = True
    nominal_power_w = None

    def __init__(self, zones: list[Path], labels: list[str], ranges_j: list[float | None]):
        self.zones = zones
        self.devices = labels
        self.counter_range_j = ranges_j
        self.read_errors = 0

    def read(self) -> list[Reading]:
        out = []
        for zone in self.zones:
            try:
                out.append(Reading(int((zone / "energy_uj").read_text()) / 1e6, None))
            except (OSError, ValueError):
                self.read_errors += 1
                out.append(Reading(None, None))
        return out

    def close(self) -> None:
        pass

    def describe(self) -> dict:
        return {"method": self.method, "devices": self.devices, "zones": [str(z) for z in self.zones]}


def open_meter(rapl_root=None, **_) -> RaplMeter:
    root = Path(rapl_root or DEFAULT_ROOT)
    if not root.is_dir():
        raise TelemetryError(f"rapl: {root} does not exist (no powercap RAPL on this host)")
    zones = sorted((p for p in root.iterdir() if _PACKAGE.match(p.name)), key=lambda p: int(p.name.split(":")[1]))
    if not zones:
        raise TelemetryError(f"rapl: no intel-rapl package zones under {root}")
    labels, ranges = [], []
    for zone in zones:
        try:
            int((zone / "energy_uj").read_text())
        except PermissionError:
            raise TelemetryError(f"rapl: {zone / 'energy_uj'} is not readable (root only on this kernel)") from None
        except (OSError, ValueError) as e:
            raise TelemetryError(f"rapl: cannot read {zone / 'energy_uj'} ({e})") from None
        name_file = zone / "name"
        labels.append(name_file.read_text().strip() if name_file.exists() else zone.name)
        range_file = zone / "max_energy_range_uj"
        ranges.append(int(range_file.read_text()) / 1e6 if range_file.exists() else None)
    return RaplMeter(zones, labels, ranges)
