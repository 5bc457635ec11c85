"""Every JSON record a fleet writes and reads back, typed.

    URL/fleet/<fleet>/fleet.json                  FleetRecord: the shards (Shard) and the last launch's backend
    URL/fleet/<fleet>/shards/<shard>/status.json  ShardStatus: what the shard last said, its heartbeat
    WORK/<fleet>/backend.json                     RememberedBackend: the backend this machine launched with
    WORK/<fleet>/<shard>/launch.json              LaunchRecord: the local backend's shard process
    WORK/.../<attempt>/attempt.json               AttemptMark: the hardware and plan of an attempt's runs

Bench writes each of them, so unknown keys are refused and scalars are not coerced (`"3"` is
no count). What is read back, from the store above all, is untrusted: `read` turns an object
that does not validate into None, so a malformed record reads as absent and never reaches a
path, a signal or a format string; a store's bytes pass the bounded JSON reader
(bench.store.bounded) first. Ids that become paths are checked as run ids (bench.safepath).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

from bench.safepath import UnsafePath, check_run_id


def _safe_id(value: str) -> str:
    try:
        return check_run_id(value)
    except UnsafePath as e:
        raise ValueError(str(e)) from None


SafeId = Annotated[str, AfterValidator(_safe_id)]  # a fleet or shard id: it becomes a path
Count = Annotated[int, Field(ge=0)]


class Record(BaseModel):
    """A JSON object bench writes: no unknown key, no coerced scalar."""

    model_config = ConfigDict(extra="forbid", strict=True)

    @classmethod
    def read(cls, obj: Any) -> Self | None:
        """`obj` (parsed JSON) as this record, or None when it is not one."""
        try:
            return cls.model_validate(obj)
        except ValidationError:
            return None

    def to_json(self) -> str:
        """Its JSON text: sorted keys, indented, one trailing newline."""
        return json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"


# -- fleet.json -------------------------------------------------------------------------
class Shard(Record):
    """One engine configuration on one hardware type (several: any one of them)."""

    model_config = ConfigDict(frozen=True)

    shard_id: SafeId
    config_id: str
    # catalog ids, sorted; more than one: any of them (a JSON list reads as the tuple)
    hardware: Annotated[tuple[str, ...], Field(min_length=1, strict=False)]
    n_gpus: Count  # GPUs on each machine: TP x PP x DP of the configuration over its nnodes
    model: str
    precision: str
    parallel: str
    engine: str
    n_points: Count
    nnodes: Annotated[int, Field(ge=1)] = 1  # machines the configuration spans (a head and nnodes - 1 followers)

    @property
    def hardware_arg(self) -> str:
        """The hardware as `bench fleet shard --hardware` takes it: ids joined by '|'."""
        return "|".join(self.hardware)


class SkippedShard(Record):
    """A configuration that is no shard of a hardware group, and why."""

    config_id: str
    hardware: str  # ids joined by '|'
    reason: str


class LocalRecord(Record):
    name: Literal["local"] = "local"
    host: str  # the machine that launched it (its work folder stays there)


class RayRecord(Record):
    name: Literal["ray"] = "ray"
    address: str | None = None  # the cluster the launch used; None: Ray's `auto`


class SkyPilotRecord(Record):
    name: Literal["skypilot"] = "skypilot"
    spot: bool
    recovery: str
    max_restarts: Count


BackendRecord = Annotated[LocalRecord | RayRecord | SkyPilotRecord, Field(discriminator="name")]


def backend_options(record: LocalRecord | RayRecord | SkyPilotRecord) -> dict[str, Any]:
    """The options a backend is built again with (bench.fleet.backends.get_backend)."""
    return record.model_dump(exclude={"name", "host"})


class FleetRecord(Record):
    """fleet.json: ids and shards, never the sweep text (it may hold an endpoint's credentials).
    A shard entry that does not read is left out (it never becomes a path); a backend that
    does not read is None: the store's backend is only ever shown."""

    fleet_id: SafeId
    name: str
    sweep_file: str
    sweep_sha256: str
    hardware: list[str]
    shards: list[Shard]
    skipped: list[SkippedShard] = Field(default_factory=list)
    backend: BackendRecord | None = None
    launched_utc: str | None = None

    @field_validator("shards", mode="before")
    @classmethod
    def _readable_shards(cls, value: Any) -> Any:
        return [s for s in value if Shard.read(s) is not None] if isinstance(value, list) else value

    @field_validator("backend", mode="wrap")
    @classmethod
    def _readable_backend(cls, value: Any, handler: Callable[[Any], Any]) -> Any:
        try:
            return handler(value)
        except ValidationError:
            return None

    def shard_ids(self) -> list[str]:
        return [s.shard_id for s in self.shards]


# -- status.json ------------------------------------------------------------------------
class ShardStatus(Record):
    """What a shard last said (bench.fleet.shard writes it at each point and heartbeat)."""

    model_config = ConfigDict(validate_assignment=True)

    state: Literal["running", "done", "failed"]
    fleet_id: str | None = None
    shard_id: str | None = None
    attempt: str | None = None
    host: str | None = None
    pid: int | None = None
    backend: str | None = None
    started_utc: str | None = None
    heartbeat_utc: str | None = None
    finished_utc: str | None = None
    hardware: str | None = None  # the hardware id this machine ran as
    hardware_check: str | None = None  # how that was decided
    points_done: Count = 0  # ok or skipped points of its run
    points_total: Count | None = None
    run_id: str | None = None  # the published run (state "done")
    run_status: str | None = None
    error: str | None = None  # one line (state "failed")
    exit_code: int | None = None


# -- the user's own work folder ---------------------------------------------------------
class RememberedBackend(Record):
    """WORK/<fleet>/backend.json: the backend (and its options) this machine launched with."""

    fleet_id: SafeId
    backend: BackendRecord
    host: str
    launched_utc: str


class LaunchRecord(Record):
    """WORK/<fleet>/<shard>/launch.json: the shard process the local backend started.
    `start`: its start time in clock ticks after boot (/proc/<pid>/stat field 22)."""

    pid: Annotated[int, Field(gt=1)]
    start: int | None
    host: str
    boot_id: str | None = None
    fleet_id: str
    shard_id: str
    launched_utc: str | None = None
    locks: list[str] = Field(default_factory=list)  # slot-<k> or gpu-<i>
    devices: dict[str, str] = Field(default_factory=dict)  # the device environment it was given


class AttemptMark(Record):
    """<attempt>/attempt.json: which hardware and plan (digest) this attempt's runs are for."""

    hardware: str
    plan: str
