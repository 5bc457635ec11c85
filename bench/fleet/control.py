"""Plan, launch, watch and stop a fleet (the library behind `bench fleet`).

`launch` reads every shard's state from the store and from its backend, then submits only
the shards that are neither done nor running: launching the same sweep again is how a
fleet is resumed after a failure, and it never starts a second attempt beside a live one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from bench.errors import ConfigError, StoreError
from bench.fleet import state
from bench.fleet.shards import Fleet, plan_fleet


def load_fleet(sweep_path, hardware=(), backend_name: str = "local") -> Fleet:
    """The fleet of a sweep; on the local backend the default hardware and device count are this box's."""
    default = n_devices = None
    if backend_name == "local":
        from bench.catalog.device import detect_device

        detected = detect_device()
        default, n_devices = detected.hardware_id, detected.count
    return plan_fleet(sweep_path, hardware, default, n_devices, multinode=backend_name == "skypilot")


def full_record(fleet: Fleet, backend) -> dict:
    return {**fleet.record(), "backend": backend.record()}


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
        known = backend.status(record, [s.shard_id for s in fleet.shards]) if backend.name == "local" else {}
        out.states = state.fleet_states(Store(store_url), record, known)  # Ray / SkyPilot: asked at launch
        out.to_submit = _to_submit(fleet, out.states)
    return out


def launch(fleet: Fleet, backend, store_url: str) -> tuple[list, list[state.ShardState], list[str]]:
    """Submit the shards that are not done and not running; (submitted, states before, backend lines)."""
    from bench.store import Store

    store = Store(store_url)
    record = full_record(fleet, backend)
    states = state.fleet_states(store, record, backend.status(record, [s.shard_id for s in fleet.shards]))
    todo = _to_submit(fleet, states)
    if todo:
        backend.placements(fleet, todo)  # refuses (one line) before anything is written or started
    state.write_fleet(store, fleet.record(), backend.record())
    lines = backend.submit(fleet, todo, store_url) if todo else []
    return todo, states, lines


def _to_submit(fleet: Fleet, states: list[state.ShardState]) -> list:
    ids = {s.shard["shard_id"] for s in states if s.state in ("failed", "missing")}
    return [s for s in fleet.shards if s.shard_id in ids]


def records(store, fleet_id: str | None = None) -> list[dict]:
    """The fleet record(s) of the store: the one named, else every fleet."""
    ids = [fleet_id] if fleet_id else state.fleet_ids(store)
    out = []
    for fid in ids:
        record = state.read_fleet(store, fid)
        if record is None:
            raise StoreError(f"{store.where}: no fleet {fid} (launch it first: bench fleet launch)")
        out.append(record)
    return out


def one_record(store, fleet_id: str | None) -> dict:
    found = records(store, fleet_id)
    if len(found) != 1:
        known = ", ".join(r["fleet_id"] for r in found) or "none"
        raise ConfigError(f"name the fleet with --fleet ID (fleets in {store.where}: {known})")
    return found[0]


def views(record: dict, ask_backend: bool) -> dict[str, state.View]:
    """What the fleet's backend says: always for the local one (it reads files here), for
    Ray and SkyPilot only when asked (it connects to them)."""
    from bench.fleet.backends import backend_from_record

    info = record.get("backend") or {}
    if not ask_backend and info.get("name") != "local":
        return {}
    backend = backend_from_record(info)
    return backend.status(record, [s["shard_id"] for s in record["shards"]]) if backend else {}


def status(store, record: dict, ask_backend: bool = False) -> list[state.ShardState]:
    return state.fleet_states(store, record, views(record, ask_backend))


def progress_line(record: dict, states: list[state.ShardState], elapsed_s: float | None = None) -> str:
    c = state.counts(states)
    running = [s.status or {} for s in states if s.state == "running"]
    done_pts = sum(int(st.get("points_done") or 0) for st in running)
    total_pts = sum(int(st.get("points_total") or 0) for st in running)
    pts = f" ({done_pts}/{total_pts} points)" if total_pts else ""
    took = f"; {elapsed_s / 60:.1f} min" if elapsed_s is not None else ""
    return (f"fleet {record['fleet_id']}: {len(states)} shards: {c['done']} done, {c['running']} running{pts}, "
            f"{c['failed']} failed, {c['missing']} missing{took}")


def wait(store, fleet_id: str, ask_backend: bool, echo, timeout_s: float | None = None,
         interval_s: float = 5.0, quiet_s: float = 60.0) -> list[state.ShardState]:
    """Poll until no shard is running (or `timeout_s`); a progress line on every change,
    at least every `quiet_s` seconds."""
    start = time.monotonic()
    last, last_t = None, 0.0
    while True:
        record = one_record(store, fleet_id)
        states = status(store, record, ask_backend)
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
