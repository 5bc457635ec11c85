"""What a run needs from the machine, frozen once it is prepared: the detected device, its
catalog entry, caches, telemetry and the load client's limits (bench.run.session.prepare_run)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.load.client import DEFAULT_STALL_TIMEOUT_S
from bench.plan.adaptive import AdaptiveStop
from bench.run.devices import visible_gpu_indices

if TYPE_CHECKING:
    from bench.catalog import HardwareSpec
    from bench.catalog.device import Detected
    from bench.telemetry.types import ProbeFigures

IDLE_BASELINE_S = 3.0  # s of idle sampling after every engine (re)start


def _default_cache() -> Path:
    return Path.home() / ".cache" / "bench" / "models"


@dataclass(frozen=True)
class RunEnvironment:
    """The machine a run executes on. Frozen: a run reads it, nothing changes it after
    `prepare_run` (a test builds its own, or `dataclasses.replace`s one)."""

    device: Detected  # bench.catalog.device.detect_device()
    hardware: HardwareSpec | None = None  # its catalog entry
    cache_dir: Path = field(default_factory=_default_cache)  # dummy-weight model folders
    startup_timeout_s: float = 900.0  # s an engine may take to answer its health check
    probe: ProbeFigures | None = None  # `bench probe`'s measured bandwidth and FLOPS (roofline)
    # open_telemetry(requested, hardware=, gpu_indices=) -> unstarted session; injectable (tests: fake NVML)
    telemetry_factory: Callable[..., Any] | None = None
    idle_baseline_s: float = IDLE_BASELINE_S  # s of idle sampling after every engine (re)start
    visible: tuple[int, ...] | None = None  # device indices this run may use; None: from the device
    # Client limits (s): per request (None: from its expected lengths) and without a byte (None: off).
    request_timeout_s: float | None = None
    stall_timeout_s: float | None = DEFAULT_STALL_TIMEOUT_S
    client_workers: int | None = None  # client worker processes; None: bench.load.workers.choose_workers
    adaptive: AdaptiveStop | None = None  # adaptive point length (issue 22, bench.load.adaptive); None: off
    # s between scrapes of the engine's /metrics during a point; None: bench.telemetry.server_metrics'
    # DEFAULT_INTERVAL_S (tests with short fake points sample faster instead of running longer points)
    server_metrics_interval_s: float | None = None

    @property
    def on_cpu(self) -> bool:
        return self.device.vendor == "cpu"

    @property
    def n_devices(self) -> int:
        """Devices of this machine a plan may use (at least 1: a CPU host is one)."""
        return self.device.count or 1

    def visible_devices(self) -> list[int] | None:
        """Device indices this run may use (None on CPU): injected, else CUDA_VISIBLE_DEVICES / the count."""
        if self.visible is not None:
            return list(self.visible)
        return None if self.on_cpu else visible_gpu_indices(self.n_devices, vendor=self.device.vendor)
