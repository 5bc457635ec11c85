"""What a run tells its watcher while it executes: typed, frozen events, in the order a run
emits them. A watcher (the CLI's progress bars) is a callable `on_event(event)`; it never
affects results, and a run without one emits to nobody.

    RunPrepared -> (EngineStarting -> EngineReady -> (PointStarting -> RequestsDone* ->
    RequestsStalled* -> PointDone)*)* ; Notice anywhere
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RunPrepared:
    """The machine is known and the plan built; nothing has started. `note`: the device found,
    one line; `search`: an SLO capacity search, whose number of points is not known ahead."""

    note: str
    plan: Any  # bench.plan.Plan
    hardware: Any  # bench.catalog.HardwareSpec
    search: bool = False

    @property
    def n_points(self) -> int | None:
        """Points the run will measure (None for a capacity search: it decides as it goes)."""
        return None if self.search else len(self.plan.points)


@dataclass(frozen=True)
class EngineStarting:
    """An engine configuration's engine is being started on `devices` (None: CPU)."""

    config_id: str
    model: str
    devices: list[int] | None = None
    packed: bool = False  # started beside other configurations (bench sweep --pack)


@dataclass(frozen=True)
class EngineReady:
    config_id: str
    pid: int | None = None


@dataclass(frozen=True)
class PointStarting:
    """A load point begins: `n_requests` warm-up + measured requests."""

    point_id: str
    n_requests: int


@dataclass(frozen=True)
class RequestsDone:
    """The running point's progress (bench.load): requests finished of `total`, in flight, output
    tokens so far and s since the point's first send (warm-up included); None where the load
    does not say."""

    done: int
    total: int | None = None
    in_flight: int | None = None
    output_tokens: int | None = None
    elapsed_s: float | None = None


@dataclass(frozen=True)
class RequestsStalled:
    """`n` in-flight requests have had no byte from the server for a while (0: none any more)."""

    n: int


@dataclass(frozen=True)
class PointDone:
    """A point finished (ok, failed or skipped) and is on disk."""

    point: Any  # bench.results.PointResult

    @property
    def point_id(self) -> str:
        return str(self.point.point_id)


@dataclass(frozen=True)
class Notice:
    """One line the run has to say (a stale engine stopped on resume)."""

    text: str


RunEvent = (RunPrepared | EngineStarting | EngineReady | PointStarting | RequestsDone | RequestsStalled
            | PointDone | Notice)
OnEvent = Callable[[RunEvent], None]


def ignore(event: RunEvent) -> None:
    """The watcher of a run nobody watches."""
