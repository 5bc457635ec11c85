"""Device detection with the shared fake pynvml and fake amdsmi modules faithful to the real APIs."""

from __future__ import annotations

import sys

import pynvml
import pytest

from bench.catalog.device import (
    Detected,
    _cpu_host,
    detect_device,
    host_memory_bytes,
    match_hardware,
    require_hardware,
    resolve_hardware,
)
from bench.errors import ConfigError, TelemetryError
from bench.telemetry.fake_nvml import FakeGpu, FakeNvml


def _nvml(names, **kw) -> FakeNvml:
    """The shared fake pynvml with one board per name."""
    return FakeNvml([FakeGpu(name=n) for n in names], **kw)


class NoAmdSmi:
    """amdsmi on a machine without an AMD GPU: init raises."""

    class AmdSmiException(Exception):
        pass

    class AmdSmiLibraryException(AmdSmiException):
        pass

    def amdsmi_init(self):
        raise self.AmdSmiLibraryException("Error code: 8 (AMDSMI_STATUS_INIT_ERROR)")


class FakeAmdSmi:
    class AmdSmiMemoryType:
        VRAM = 0

    def __init__(self, names):
        self.names = names

    def amdsmi_init(self):
        pass

    def amdsmi_shut_down(self):
        pass

    def amdsmi_get_processor_handles(self):
        return list(range(len(self.names)))

    def amdsmi_get_gpu_asic_info(self, handle):
        return {"market_name": self.names[handle], "vendor_id": "0x1002"}

    def amdsmi_get_gpu_memory_total(self, handle, mem_type):
        return 205_822_885_888

    def amdsmi_get_gpu_driver_info(self, handle):
        return {"driver_name": "amdgpu", "driver_version": "6.10.5"}


def test_h100_sxm():
    nvml = _nvml(["NVIDIA H100 80GB HBM3"] * 8)
    d = detect_device(nvml=nvml, amdsmi=NoAmdSmi())
    assert d == Detected("h100-sxm", "NVIDIA H100 80GB HBM3", "nvidia", 8, "550.54.15", 85.520809984)
    assert nvml.initialized == 0  # shut down again


def test_h100_pcie_and_old_bytes_names():
    d = detect_device(nvml=_nvml(["NVIDIA H100 PCIe"] * 2, bytes_strings=True), amdsmi=NoAmdSmi())
    assert (d.hardware_id, d.name, d.count) == ("h100-pcie", "NVIDIA H100 PCIe", 2)


@pytest.mark.parametrize(
    "name,expected",
    [
        ("NVIDIA A100-SXM4-80GB", "a100-80g-sxm"),
        ("NVIDIA A100 80GB PCIe", None),
        ("NVIDIA H200", "h200-sxm"),
        ("NVIDIA GH200 480GB", None),
        ("NVIDIA B200", "b200"),
        ("NVIDIA GB200", "gb200"),
        ("NVIDIA L4", "l4"),
        ("NVIDIA L40S", "l40s"),
        ("NVIDIA L40", None),
        ("NVIDIA GeForce RTX 4090", "rtx-4090"),
        ("NVIDIA GeForce RTX 5090", "rtx-5090"),
        ("AMD Instinct MI300X", "mi300x"),
        ("AMD Instinct MI355X", "mi355x"),
    ],
)
def test_name_matching(name, expected):
    spec = match_hardware(name)
    assert (spec.id if spec else None) == expected


def test_unknown_gpu_keeps_name():
    d = detect_device(nvml=_nvml(["Tesla T4"]), amdsmi=NoAmdSmi())
    assert d.hardware_id is None and d.name == "Tesla T4" and d.vendor == "nvidia"
    with pytest.raises(ConfigError, match=r"^unknown hardware 'Tesla T4'; add hardware/<id>\.yaml or pass --hardware ID$"):
        require_hardware(d)
    assert "not in catalog" in d.describe()


def test_require_hardware_returns_entry():
    d = detect_device(nvml=_nvml(["NVIDIA L4"]), amdsmi=NoAmdSmi())
    assert require_hardware(d).power_w == 72


@pytest.mark.parametrize("code", [pynvml.NVML_ERROR_LIBRARY_NOT_FOUND, pynvml.NVML_ERROR_DRIVER_NOT_LOADED])
def test_nvml_unavailable_falls_back_to_cpu(code):
    d = detect_device(nvml=_nvml(["NVIDIA H100 80GB HBM3"], init_error=code), amdsmi=NoAmdSmi())
    assert d.hardware_id == "cpu-host" and d.vendor == "cpu" and d.count == 1 and d.driver_version is None


def test_no_gpus_falls_back_to_cpu():
    assert detect_device(nvml=_nvml([]), amdsmi=NoAmdSmi()).hardware_id == "cpu-host"


def test_modules_not_installed(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import raises ImportError
    monkeypatch.setitem(sys.modules, "amdsmi", None)
    assert detect_device().hardware_id == "cpu-host"


def test_nvml_query_failure_is_loud():
    lost = FakeGpu(errors={"nvmlDeviceGetName": pynvml.NVML_ERROR_GPU_IS_LOST})
    with pytest.raises(TelemetryError, match="NVML failed"):
        detect_device(nvml=FakeNvml([lost]), amdsmi=NoAmdSmi())


def test_amd_gpus():
    nvml = _nvml([], init_error=pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)
    d = detect_device(nvml=nvml, amdsmi=FakeAmdSmi(["AMD Instinct MI300X"] * 8))
    assert (d.hardware_id, d.vendor, d.count, d.driver_version) == ("mi300x", "amd", 8, "6.10.5")
    assert d.memory_gb == pytest.approx(205.8, abs=0.1)


def test_cpu_host_parsing():
    cpuinfo = "processor\t: 0\nmodel name\t: AMD EPYC 7R13 Processor\nprocessor\t: 1\nmodel name\t: AMD EPYC 7R13 Processor\n"
    d = _cpu_host(cpuinfo, "MemTotal:       16303448 kB\nMemFree: 1 kB\n")
    assert d == Detected("cpu-host", "AMD EPYC 7R13 Processor", "cpu", 1, None, 16303448 * 1024 / 1e9)
    assert _cpu_host("", "").name == "unknown CPU"


def test_resolve_hardware_named_detected_or_unknown():
    t4 = lambda: detect_device(nvml=_nvml(["Tesla T4"]), amdsmi=NoAmdSmi())
    l4 = lambda: detect_device(nvml=_nvml(["NVIDIA L4", "NVIDIA L4"]), amdsmi=NoAmdSmi())
    spec, detected = resolve_hardware(None, detect=l4)
    assert spec.id == "l4" and detected.count == 2
    assert resolve_hardware("h100-sxm", detect=t4)[0].id == "h100-sxm"  # a named id wins over detection
    with pytest.raises(ConfigError, match=r"^unknown hardware 'Tesla T4'; .* or pass --hardware ID$"):
        resolve_hardware(None, detect=t4)
    with pytest.raises(ConfigError, match="unknown hardware 'no-such-card'"):
        resolve_hardware("no-such-card", detect=l4)


def test_host_memory_is_read_once_in_bytes(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       65536000 kB\nMemFree:        1000 kB\n")
    assert host_memory_bytes(meminfo) == 65536000 * 1024
    assert host_memory_bytes(tmp_path / "missing") is None
    assert _cpu_host("", meminfo.read_text()).memory_gb == host_memory_bytes(meminfo) / 1e9


def test_provenance_reads_host_memory_through_the_catalog_in_gib(monkeypatch):
    from bench.run import provenance

    monkeypatch.setattr("bench.catalog.device.host_memory_bytes", lambda *a: 16 * 2**30)
    assert provenance.host_info()["memory_gib"] == 16.0  # was "memory_gb" holding GiB
    old = {"host": {"cpu": "c", "cpu_count": 2, "memory_gb": 16.0}}
    new = {"host": {"cpu": "c", "cpu_count": 2, "memory_gib": 16.0}}
    from bench.results.provenance import Provenance

    assert Provenance.model_validate(old).host.memory_gib == 16.0  # an older file's name is read as GiB
    # stored hashes stay reproducible
    assert provenance.manifest_hash(Provenance.model_validate(old)) == provenance.manifest_hash(Provenance.model_validate(new))
