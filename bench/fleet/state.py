"""A fleet's objects in the store, and each shard's state read from them.

    URL/fleet/<fleet_id>/fleet.json                       the shards and the last launch's backend
    URL/fleet/<fleet_id>/shards/<shard_id>/status.json    what the shard last said (below)
    URL/fleet/<fleet_id>/shards/<shard_id>/shard.log      its output, redacted
    URL/fleet/<fleet_id>/shards/<shard_id>/partial/<hardware>-<plan>/   its run folder as of
                                                          its last finished point (bench.fleet.partial)

A shard's status object is a ShardStatus, fleet.json a FleetRecord (bench.fleet.records). A
shard is **done** when its status names a run whose manifest is
in the store (published runs live under URL/runs/, docs/store.md); **running** while its
backend says so or its heartbeat is recent; **failed** when it said so, or went silent
(process gone, no heartbeat); **missing** when it never started. Everything read here is
untrusted store content: it is read through the bounded JSON reader and validated as its
record, ids are checked before they become paths, and a malformed object reads as absent.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bench.errors import StoreError
from bench.fleet.records import FleetRecord, Record, Shard, ShardStatus
from bench.safepath import UnsafePath, check_run_id
from bench.store.bounded import MAX_MANIFEST_BYTES, load_json

FLEET_DIR = "fleet"
try:
    HEARTBEAT_S = max(1.0, float(os.environ.get("BENCH_FLEET_HEARTBEAT_S", "30")))  # s between a shard's beats
except ValueError:
    HEARTBEAT_S = 30.0
STALE_S = max(180.0, 6 * HEARTBEAT_S)  # silent this long: the shard is lost
STATES = ("done", "running", "failed", "missing")


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def age_s(stamp: str | None, now: float | None = None) -> float | None:
    """Seconds since a `utc_now()` stamp (None when absent or unreadable)."""
    try:
        t = datetime.strptime(str(stamp), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None
    return (now if now is not None else time.time()) - t


def rel(fleet_id: str, *parts: str) -> str:
    """A path under the fleet's prefix; ids checked (they come from the store or a command line)."""
    for part in (fleet_id, *parts):
        try:
            check_run_id(part)
        except UnsafePath as e:
            raise StoreError(f"refused fleet path part: {e}") from None
    return "/".join([FLEET_DIR, fleet_id, *parts])


def read_json(store, path: str) -> Any:
    """A JSON value of the store, read bounded (None when absent or not JSON within the limits)."""
    try:  # bounded, and locally a regular file only (bench.store.bounded)
        data = store.read_bytes(store.path(path), MAX_MANIFEST_BYTES, what=f"read {path}", missing_ok=True)
    except FileNotFoundError:
        return None
    try:
        return load_json(data, f"{store.where}: {path}", MAX_MANIFEST_BYTES)
    except StoreError:
        return None


def write_record(store, path: str, record: Record) -> None:
    store.put_bytes(path, record.to_json().encode())


def write_fleet(store, record: FleetRecord) -> None:
    """fleet.json, stamped with the launch time."""
    write_record(store, rel(record.fleet_id, "fleet.json"), record.model_copy(update={"launched_utc": utc_now()}))


def read_fleet(store, fleet_id: str) -> FleetRecord | None:
    record = FleetRecord.read(read_json(store, rel(fleet_id, "fleet.json")))
    return record if record is not None and record.fleet_id == fleet_id else None


def fleet_ids(store) -> list[str]:
    """Every fleet launched into the store, by id."""
    store.fs.invalidate_cache()
    try:
        paths = store.fs.glob(store.path(FLEET_DIR, "*", "fleet.json"))
    except FileNotFoundError:
        return []
    out = []
    for p in sorted(paths):
        fid = p.rstrip("/").split("/")[-2]
        try:
            out.append(check_run_id(fid))
        except UnsafePath:
            continue
    return out


def read_status(store, fleet_id: str, shard_id: str) -> ShardStatus | None:
    return ShardStatus.read(read_json(store, rel(fleet_id, "shards", shard_id, "status.json")))


def write_status(store, fleet_id: str, shard_id: str, status: ShardStatus) -> None:
    write_record(store, rel(fleet_id, "shards", shard_id, "status.json"), status)


@dataclass
class View:
    """What a backend says of one shard: "queued" | "running" (active) or "exited" (gone)."""

    state: str
    detail: str = ""
    info: Any = None  # backend-specific facts (Ray: the task's RayTaskResult: its node, resources)

    @property
    def active(self) -> bool:
        return self.state in ("queued", "running")


@dataclass
class ShardState:
    shard: Shard
    state: str  # one of STATES
    detail: str
    status: ShardStatus | None

    def row(self) -> dict:
        """The shard as one row of `bench fleet status` (a table, or --json)."""
        st = self.status
        points = f"{st.points_done}/{st.points_total}" if st and st.points_total else None
        return {"shard": self.shard.shard_id, "model": self.shard.model, "precision": self.shard.precision,
                "hardware": (st and st.hardware) or self.shard.hardware_arg, "state": self.state, "points": points,
                "host": st and st.host, "updated": _ago(st.heartbeat_utc if st else None), "detail": self.detail}


def shard_state(shard: Shard, status: ShardStatus | None, published, view: View | None,
                now: float | None = None) -> ShardState:
    """One shard's state from its status object, `published(run_id) -> bool` and its backend's view."""
    state = status.state if status else None
    if status and state == "done":
        run_id = str(status.run_id)
        if published(run_id):
            return ShardState(shard, "done", f"run {run_id} ({status.run_status})", status)
        if not (view and view.active):
            return ShardState(shard, "failed", f"its run {run_id} is not in the store", status)
    if view is not None and view.active:
        what = "queued" if view.state == "queued" or not status else "running"
        return ShardState(shard, "running", view.detail or what, status)
    if status and state == "running":
        if view is not None:  # the backend knows it, and it is gone
            return ShardState(shard, "failed", f"lost: {view.detail or 'its process is gone'}", status)
        silent = age_s(status.heartbeat_utc, now)
        if silent is not None and silent > STALE_S:
            return ShardState(shard, "failed", f"lost: no heartbeat for {silent / 60:.0f} min", status)
        return ShardState(shard, "running", f"attempt {status.attempt}", status)
    if status and state == "failed":
        return ShardState(shard, "failed", status.error or "failed", status)
    if view is not None:
        return ShardState(shard, "failed", f"exited before it started ({view.detail or 'no status'})", status)
    return ShardState(shard, "missing", "never started", status)


def fleet_states(store, record: FleetRecord, views: dict[str, View] | None = None) -> list[ShardState]:
    """The state of every shard of a fleet record (`views`: shard id -> what its backend says)."""
    out = []
    cache: dict[str, bool] = {}

    def published(run_id: str) -> bool:
        if run_id not in cache:
            try:
                cache[run_id] = store.read_manifest(run_id) is not None
            except StoreError:
                cache[run_id] = False
        return cache[run_id]

    now = time.time()
    for shard in record.shards:
        sid = shard.shard_id
        out.append(shard_state(shard, read_status(store, record.fleet_id, sid), published,
                               (views or {}).get(sid), now))
    return out


def counts(states: list[ShardState]) -> dict[str, int]:
    return {name: sum(1 for s in states if s.state == name) for name in STATES}


def _ago(stamp: str | None) -> str | None:
    seconds = age_s(stamp)
    if seconds is None:
        return None
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f}s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m ago"
    return f"{seconds / 3600:.0f}h ago"
