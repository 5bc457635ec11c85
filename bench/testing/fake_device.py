"""A detected device as `bench.catalog.device.detect_device` reports one, for tests that build
a run environment without the machine's own (a fake NVML host, a CPU host of a given name)."""

from __future__ import annotations

from bench.catalog.device import Detected


def fake_device(vendor: str = "cpu", count: int = 1, name: str | None = None,
                hardware_id: str | None = None) -> Detected:
    """`count` devices of `vendor` named `name` (default: a generic one of the vendor)."""
    default = {"cpu": "Generic CPU", "nvidia": "Fake H100", "amd": "Fake MI300X"}.get(vendor, "Fake device")
    return Detected(hardware_id=hardware_id, name=name or default, vendor=vendor, count=count,
                    driver_version=None if vendor == "cpu" else "0.0", memory_gb=None)
