"""Plan, launch, watch and stop a fleet (the library behind `bench fleet`).

`launch` reads every shard's state from the store and from its backend, then submits only
the shards that are neither done nor running: launching the same sweep again is how a
fleet is resumed after a failure, and it never starts a second attempt beside a live one.

The backend that `status`, `logs` and `cancel` ask is the user's own (`user_backend`): the
one named on the command line, else the one this machine launched the fleet with (a record
`launch` writes to WORK/<fleet>/backend.json), else the local backend. The store's
fleet.json also names the last launch's backend, but what the store says is only shown: it
never chooses an address to connect to, a folder to read or a process to signal.
"""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.errors import ConfigError, StoreError
from bench.fleet import state
from bench.fleet.records import FleetRecord, RememberedBackend, backend_options
from bench.fleet.shards import Fleet, plan_fleet
from bench.safepath import UnsafePath, check_run_id

BACKEND_RECORD = "backend.json"  # WORK/<fleet>/backend.json: the backend this machine launched it with


def load_fleet(sweep_path, hardware=(), backend_name: str = "local") -> Fleet:
    """The fleet of a sweep; on the local backend the default hardware and device count are this box's."""
    default = n_devices = None
    if backend_name == "local":
        from bench.catalog.device import detect_device

        detected = detect_device()
        default, n_devices = detected.hardware_id, detected.count
    return plan_fleet(sweep_path, hardware, default, n_devices, multinode=backend_name == "skypilot")


def full_record(fleet: Fleet, backend) -> FleetRecord:
    return fleet.record(backend.record())


@dataclass
class Planned:
    fleet: Fleet
    placements: dict[str, str]
    states: list[state.ShardState] | None = None  # with a store
    to_submit: list = field(default_factory=list)


def plan(fleet: Fleet, backend, store_url: str | None = None) -> Planned:
    """Where each shard would run and, with a store, its state and what a launch would submit."""
    try:
        placements = backend.placements(fleet, fleet.shards)
    except ConfigError as e:
        placements = {s.shard_id: f"cannot place: {e}" for s in fleet.shards}
    out = Planned(fleet, placements)
    if store_url:
        from bench.store import Store

        record = full_record(fleet, backend)
        known = backend.status(record, record.shard_ids()) if backend.name == "local" else {}
        out.states = state.fleet_states(Store(store_url), record, known)  # Ray / SkyPilot: asked at launch
        out.to_submit = _to_submit(fleet, out.states)
    return out


def launch(fleet: Fleet, backend, store_url: str, work_dir=None) -> tuple[list, list[state.ShardState], list[str]]:
    """Submit the shards that are not done and not running; (submitted, states before, backend lines).
    The backend is remembered on this machine (under `work_dir`) for status, logs and cancel."""
    from bench.store import Store

    store = Store(store_url)
    record = full_record(fleet, backend)
    states = state.fleet_states(store, record, backend.status(record, record.shard_ids()))
    todo = _to_submit(fleet, states)
    if todo:
        backend.placements(fleet, todo)  # refuses (one line) before anything is written or started
    state.write_fleet(store, record)
    remember(fleet.fleet_id, backend, work_dir)
    lines = backend.submit(fleet, todo, store_url) if todo else []
    return todo, states, lines


def _record_path(fleet_id: str, work_dir=None) -> Path:
    from bench.fleet.backends.local import default_root

    try:
        check_run_id(fleet_id)
    except UnsafePath as e:
        raise ConfigError(f"refused fleet id: {e}") from None
    return (Path(work_dir).resolve() if work_dir else default_root()) / fleet_id / BACKEND_RECORD


def remember(fleet_id: str, backend, work_dir=None) -> Path:
    """Write WORK/<fleet>/backend.json: the backend (and its options) this machine launched with."""
    from bench.atomicio import atomic_write_text

    path = _record_path(fleet_id, work_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = RememberedBackend(fleet_id=fleet_id, backend=backend.record(), host=socket.gethostname(),
                               launched_utc=state.utc_now())
    atomic_write_text(path, record.to_json())
    return path


def remembered(fleet_id: str, work_dir=None):
    """The backend record (bench.fleet.records.BackendRecord) `remember` wrote for this fleet on
    this machine, or None (none, another fleet's, or one that does not read)."""
    try:
        data = json.loads(_record_path(fleet_id, work_dir).read_text())
    except (OSError, ValueError, ConfigError):
        return None
    record = RememberedBackend.read(data)
    return record.backend if record is not None and record.fleet_id == fleet_id else None


def user_backend(fleet_id: str, backend_name: str | None = None, work_dir=None, ray_address: str | None = None):
    """The backend status, logs and cancel ask: the one named, else the one this machine
    launched `fleet_id` with, else the local backend; with the launch's options (Ray's
    address) where it is the launch's backend, those given here first."""
    from bench.fleet.backends import get_backend

    record = remembered(fleet_id, work_dir)
    name = backend_name or (record.name if record else "local")
    options = backend_options(record) if record is not None and record.name == name else {}
    if ray_address:
        options["address"] = ray_address
    return get_backend(name, work_dir=work_dir, **options)


def backend_note(record: FleetRecord, asked) -> str | None:
    """A line saying which backend the store's record names, when it is not the one asked
    (shown only: the store never chooses what is asked)."""
    named = record.backend.name if record.backend is not None else None
    if named is None or (asked is not None and asked.name == named):
        return None
    return (f"fleet {record.fleet_id}: launched with {named} (the store's record); to ask it: "
            f"--backend {named}{' --ask-backend' if named != 'local' else ''}")


def _to_submit(fleet: Fleet, states: list[state.ShardState]) -> list:
    ids = {s.shard.shard_id for s in states if s.state in ("failed", "missing")}
    return [s for s in fleet.shards if s.shard_id in ids]


def records(store, fleet_id: str | None = None) -> list[FleetRecord]:
    """The fleet record(s) of the store: the one named, else every fleet."""
    ids = [fleet_id] if fleet_id else state.fleet_ids(store)
    out = []
    for fid in ids:
        record = state.read_fleet(store, fid)
        if record is None:
            raise StoreError(f"{store.where}: no fleet {fid} (launch it first: bench fleet launch)")
        out.append(record)
    return out


def known_shards(record: FleetRecord, shard_ids) -> list[str]:
    """`shard_ids` when each is a shard of the fleet; ConfigError naming the known ones."""
    known = record.shard_ids()
    for sid in shard_ids:
        if sid not in known:
            raise ConfigError(f"no shard '{sid}' in fleet {record.fleet_id} (known: {', '.join(known) or 'none'})")
    return list(shard_ids)


def one_record(store, fleet_id: str | None) -> FleetRecord:
    found = records(store, fleet_id)
    if len(found) != 1:
        known = ", ".join(r.fleet_id for r in found) or "none"
        raise ConfigError(f"name the fleet with --fleet ID (fleets in {store.where}: {known})")
    return found[0]


def asked(backend, ask_backend: bool):
    """The backend to ask for status: the local one always (it reads files here), Ray and
    SkyPilot only when asked (they connect); None: none."""
    return backend if backend is not None and (ask_backend or backend.name == "local") else None


def views(record: FleetRecord, backend) -> dict[str, state.View]:
    """What `backend` (the user's, or None) says of the fleet's shards."""
    if backend is None:
        return {}
    return backend.status(record, record.shard_ids())


def status(store, record: FleetRecord, backend=None) -> list[state.ShardState]:
    """Every shard's state from the store and what `backend` (None: none) says."""
    return state.fleet_states(store, record, views(record, backend))


def progress_line(record: FleetRecord, states: list[state.ShardState], elapsed_s: float | None = None) -> str:
    c = state.counts(states)
    running = [s.status for s in states if s.state == "running" and s.status is not None]
    done_pts = sum(st.points_done for st in running)
    total_pts = sum(st.points_total or 0 for st in running)
    pts = f" ({done_pts}/{total_pts} points)" if total_pts else ""
    took = f"; {elapsed_s / 60:.1f} min" if elapsed_s is not None else ""
    return (f"fleet {record.fleet_id}: {len(states)} shards: {c['done']} done, {c['running']} running{pts}, "
            f"{c['failed']} failed, {c['missing']} missing{took}")


def wait(store, fleet_id: str, backend, echo, timeout_s: float | None = None,
         interval_s: float = 5.0, quiet_s: float = 60.0) -> list[state.ShardState]:
    """Poll until no shard is running (or `timeout_s`), asking `backend` (None: the store
    alone); a progress line on every change, at least every `quiet_s` seconds."""
    start = time.monotonic()
    last, last_t = None, 0.0
    while True:
        record = one_record(store, fleet_id)
        states = status(store, record, backend)
        line = progress_line(record, states)
        now = time.monotonic()
        if line != last or now - last_t >= quiet_s:
            echo(progress_line(record, states, now - start))
            last, last_t = line, now
        if not any(s.state == "running" for s in states):
            return states
        if timeout_s is not None and now - start > timeout_s:
            echo(f"stopped waiting after {timeout_s:.0f} s; the shards go on")
            return states
        time.sleep(interval_s)
