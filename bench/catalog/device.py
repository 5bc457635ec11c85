"""Which accelerator is this machine? NVML first, then amdsmi, else the CPU host.

Detection never fails for a missing library or driver: it falls through to the next
source. An unknown GPU name yields `hardware_id=None` with the name kept; callers that
need a catalog entry call `require_hardware`.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.catalog import HardwareSpec, get_hardware, load_hardware
from bench.errors import ConfigError, TelemetryError

CPU_HOST_ID = "cpu-host"


@dataclass(frozen=True)
class Detected:
    """The local device: catalog id (None when unknown), vendor name, how many, memory per
    device in GB (decimal), driver version (None on CPU)."""

    hardware_id: str | None
    name: str
    vendor: str
    count: int
    driver_version: str | None
    memory_gb: float | None

    def describe(self) -> str:
        """One line, e.g. `2 x NVIDIA H100 80GB HBM3 (h100-sxm), 79.6 GB, driver 550.54`."""
        known = self.hardware_id or "not in catalog"
        mem = f", {self.memory_gb:.1f} GB" if self.memory_gb else ""
        drv = f", driver {self.driver_version}" if self.driver_version else ""
        return f"{self.count} x {self.name} ({known}){mem}{drv}"


def match_hardware(name: str, hardware: dict[str, HardwareSpec] | None = None) -> HardwareSpec | None:
    """The catalog entry whose `match` pattern (a regex searched case-insensitively) is found
    in the device name; the longest matching pattern wins. None when nothing matches."""
    hardware = load_hardware() if hardware is None else hardware
    best, best_len = None, -1
    for spec in hardware.values():
        for pattern in spec.match:
            if re.search(pattern, name, flags=re.IGNORECASE) and len(pattern) > best_len:
                best, best_len = spec, len(pattern)
    return best


def require_hardware(detected: Detected) -> HardwareSpec:
    """The catalog entry of a detected device; ConfigError when it has none."""
    if detected.hardware_id is None:
        raise ConfigError(f"unknown hardware '{detected.name}'; add hardware/<id>.yaml or pass --hardware ID")
    return get_hardware(detected.hardware_id)


def resolve_hardware(hardware_id: str | None = None, detect=None) -> tuple[HardwareSpec, Detected]:
    """(catalog entry, detected device): the entry named by `hardware_id`, else the detected
    device's; ConfigError (one line) for an unknown id or an unknown detected device.
    `detect` (default `detect_device`) is injectable for tests."""
    detected = (detect or detect_device)()
    spec = get_hardware(hardware_id) if hardware_id else require_hardware(detected)
    return spec, detected


def host_memory_bytes(meminfo_path: str | Path = "/proc/meminfo") -> int | None:
    """The host's total RAM in bytes (MemTotal of /proc/meminfo); None where unreadable."""
    return _mem_total_bytes(_read(str(meminfo_path)))


def _mem_total_bytes(meminfo: str) -> int | None:
    mem = re.search(r"^MemTotal:\s*(\d+)\s*kB", meminfo, flags=re.MULTILINE)
    return int(mem.group(1)) * 1024 if mem else None


def _text(value: Any) -> str:
    """NVML returns str in nvidia-ml-py >= 11.515, bytes before."""
    return value.decode() if isinstance(value, bytes) else str(value)


def _from_nvml(nvml: Any, hardware: dict[str, HardwareSpec]) -> Detected | None:
    try:
        nvml.nvmlInit()
    except nvml.NVMLError:
        return None  # no driver, no library, no GPU: fall through
    try:
        n = nvml.nvmlDeviceGetCount()
        if n == 0:
            return None
        handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(n)]
        names = [_text(nvml.nvmlDeviceGetName(h)) for h in handles]
        first = names[0]
        memory_gb = nvml.nvmlDeviceGetMemoryInfo(handles[0]).total / 1e9
        driver = _text(nvml.nvmlSystemGetDriverVersion())
    except nvml.NVMLError as e:
        # NVML loaded but a query failed: a real fault, not "no GPU here"
        raise TelemetryError(f"NVML failed while reading the devices: {e}") from None
    finally:
        with contextlib.suppress(nvml.NVMLError):
            nvml.nvmlShutdown()
    return _detected(first, names, "nvidia", driver, memory_gb, hardware)


def _from_amdsmi(amdsmi: Any, hardware: dict[str, HardwareSpec]) -> Detected | None:
    amd_error = getattr(amdsmi, "AmdSmiException", Exception)  # base of amdsmi's errors
    try:
        amdsmi.amdsmi_init()
    except amd_error:  # no driver or no GPU: fall through
        return None
    try:
        handles = amdsmi.amdsmi_get_processor_handles()
        if not handles:
            return None
        first = amdsmi.amdsmi_get_gpu_asic_info(handles[0])["market_name"]
        names = [amdsmi.amdsmi_get_gpu_asic_info(h)["market_name"] for h in handles]
        vram = amdsmi.amdsmi_get_gpu_memory_total(handles[0], amdsmi.AmdSmiMemoryType.VRAM)
        driver = amdsmi.amdsmi_get_gpu_driver_info(handles[0]).get("driver_version")
    except amd_error as e:
        raise TelemetryError(f"amdsmi failed while reading the devices: {e}") from None
    finally:
        with contextlib.suppress(amd_error):
            amdsmi.amdsmi_shut_down()
    return _detected(first, names, "amd", driver, vram / 1e9, hardware)


def _detected(first: str, names: list[str], vendor: str, driver, memory_gb, hardware) -> Detected:
    """Device 0 mapped to the catalog; the count is the devices of the same name."""
    spec = match_hardware(first, hardware)
    return Detected(
        hardware_id=spec.id if spec else None,
        name=first,
        vendor=vendor,
        count=sum(1 for x in names if x == first),
        driver_version=driver,
        memory_gb=memory_gb,
    )


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def _cpu_host(cpuinfo: str, meminfo: str) -> Detected:
    name = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, flags=re.MULTILINE)
    mem_b = _mem_total_bytes(meminfo)
    return Detected(
        hardware_id=CPU_HOST_ID,
        name=name.group(1).strip() if name else "unknown CPU",
        vendor="cpu",
        count=1,
        driver_version=None,
        memory_gb=mem_b / 1e9 if mem_b else None,
    )


def _import(module: str) -> Any:
    try:
        return __import__(module)
    except (ImportError, OSError):  # not installed, or its native library failed to load
        return None


def detect_device(nvml: Any = None, amdsmi: Any = None, hardware: dict[str, HardwareSpec] | None = None) -> Detected:
    """Detect the local accelerator. `nvml` (the pynvml module) and `amdsmi` may be injected;
    by default they are imported when installed. Falls back to the CPU host."""
    hardware = load_hardware() if hardware is None else hardware
    nvml = nvml if nvml is not None else _import("pynvml")
    if nvml is not None:
        found = _from_nvml(nvml, hardware)
        if found:
            return found
    amdsmi = amdsmi if amdsmi is not None else _import("amdsmi")
    if amdsmi is not None:
        found = _from_amdsmi(amdsmi, hardware)
        if found:
            return found
    return _cpu_host(_read("/proc/cpuinfo"), _read("/proc/meminfo"))
