"""`bench fleet`: a sweep as shards on many machines (docs/fleet.md). Imports no backend
(ray, sky) until a command runs on it."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass

import click

from bench.cli.textable import format_table
from bench.fleet.backends import BACKENDS

STORE_HELP = "Store URL the shards publish to ($BENCH_STORE): a folder, s3://bucket/prefix, ..."


def _hardware(f):
    return click.option("--hardware", "hardware", multiple=True, metavar="ID[|ID...]",
                        help="Hardware type, repeatable: one shard per engine config per type; 'h100-sxm|h200-sxm' "
                             "is one shard on either [the sweep's `hardware`; local: this box].")(f)


@dataclass(frozen=True)
class BackendChoice:
    """What `plan` and `launch` run the shards on: the backend and its options from the command line."""

    backend: str
    work_dir: str | None = None
    pack: bool = False
    parallel: int | None = None
    ray_address: str | None = None
    spot: bool = True
    recovery: str = "EAGER_NEXT_REGION"
    max_restarts: int = 1

    def build(self):
        from bench.fleet.backends import get_backend

        return get_backend(self.backend, work_dir=self.work_dir, pack=self.pack, parallel=self.parallel,
                           ray_address=self.ray_address, spot=self.spot, recovery=self.recovery,
                           max_restarts=self.max_restarts)


@dataclass(frozen=True)
class ControlChoice:
    """Whom status, logs and cancel ask: named on the command line, never taken from the store."""

    backend_name: str | None = None
    work_dir: str | None = None
    ray_address: str | None = None

    def backend_for(self, fleet_id: str):
        from bench.fleet import control

        return control.user_backend(fleet_id, self.backend_name, self.work_dir, self.ray_address)


def _folded(choice_cls, name: str, f):
    """`f` called with its options of `choice_cls` folded into one typed `name` argument."""
    keys = set(choice_cls.__dataclass_fields__)

    @functools.wraps(f)
    def wrapper(**kwargs):
        picked = {k: kwargs.pop(k) for k in list(kwargs) if k in keys}
        return f(**kwargs, **{name: choice_cls(**picked)})

    return wrapper


def _backend_options(f):
    f = _folded(BackendChoice, "choice", f)
    opts = [
        click.option("--backend", type=click.Choice(BACKENDS.names()), default="local", show_default=True),
        click.option("--work-dir", type=click.Path(file_okay=False),
                     help="local: pids, logs and run folders [$BENCH_CACHE_DIR/fleet or ~/.cache/bench/fleet]."),
        click.option("--pack", is_flag=True, help="local: shards at once on disjoint GPUs of this box (docs/packing.md)."),
        click.option("--parallel", type=click.IntRange(min=1), help="local: shards at once without --pack [1]."),
        click.option("--ray-address", help="ray: the cluster's address [$RAY_ADDRESS, else auto]."),
        click.option("--spot/--on-demand", default=True, show_default=True, help="skypilot: spot instances."),
        click.option("--recovery", type=click.Choice(["EAGER_NEXT_REGION", "FAILOVER"]), default="EAGER_NEXT_REGION",
                     show_default=True, help="skypilot: job recovery strategy after a preemption."),
        click.option("--max-restarts", type=click.IntRange(min=0), default=1, show_default=True,
                     help="skypilot: restarts of a shard that failed by itself (preemptions are always recovered)."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def _control_options(f):
    """The backend status, logs and cancel ask: named here, never taken from the store."""
    f = _folded(ControlChoice, "ask", f)
    opts = [
        click.option("--backend", "backend_name", type=click.Choice(BACKENDS.names()),
                     help="The fleet's backend [the one this machine launched it with, else local]."),
        click.option("--work-dir", type=click.Path(file_okay=False),
                     help="local: the folder given to launch [$BENCH_CACHE_DIR/fleet or ~/.cache/bench/fleet]."),
        click.option("--ray-address", help="ray: the cluster's address [the launch's, else $RAY_ADDRESS, else auto]."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


@click.group()
def fleet():
    """Run a sweep as shards (one engine configuration on one hardware type each) on this
    box, a Ray cluster or SkyPilot managed jobs; each shard publishes its run to the store,
    which says what is done."""


@fleet.command("plan")
@click.argument("sweep_file", type=click.Path(dir_okay=False, exists=True))
@_hardware
@_backend_options
@click.option("--store", "store_url", envvar="BENCH_STORE", help=STORE_HELP + " With it: each shard's state.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False),
              help="skypilot: write one task YAML per shard here (needs --store, which is written into them, not read).")
def plan_cmd(sweep_file, hardware, store_url, out_dir, choice: BackendChoice):
    """Show the shards of SWEEP_FILE, where each would run, and (with --store) what a launch
    would submit. Starts nothing."""
    from bench.errors import ConfigError
    from bench.fleet import control

    backend = choice.build()
    the_fleet = control.load_fleet(sweep_file, hardware, choice.backend)
    planned = control.plan(the_fleet, backend, None if out_dir else store_url)  # --out: files only, no store read
    click.echo(_fleet_header(the_fleet, choice.backend))
    states = {s.shard.shard_id: s for s in planned.states or []}
    rows = [{**s.model_dump(), "hardware": s.hardware_arg, "points": s.n_points, "placement": planned.placements[s.shard_id],
             "state": states[s.shard_id].state if states else None} for s in the_fleet.shards]
    columns = ["shard_id", "model", "precision", "parallel", "hardware", "points", "placement"] + (["state"] if states else [])
    click.echo(format_table(rows, columns) if rows else "no shards")
    for skipped in the_fleet.skipped:
        click.echo(f"skipped: {skipped.config_id} on {skipped.hardware}: {skipped.reason}")
    if planned.states is not None:
        click.echo(f"launch would submit {len(planned.to_submit)} of {len(rows)} shards")
    if out_dir:
        if choice.backend != "skypilot" or not store_url:
            raise ConfigError("--out writes SkyPilot task files: use it with --backend skypilot --store URL")
        for path in backend.write(the_fleet, the_fleet.shards, store_url, out_dir):
            click.echo(f"wrote {path}")


@fleet.command()
@click.argument("sweep_file", type=click.Path(dir_okay=False, exists=True))
@_hardware
@_backend_options
@click.option("--store", "store_url", envvar="BENCH_STORE", required=True, help=STORE_HELP)
@click.option("--wait", "wait_", is_flag=True, help="Then wait until no shard is running (progress lines).")
@click.option("--timeout", "timeout_s", type=float, help="With --wait: stop waiting after this many seconds.")
def launch(sweep_file, hardware, store_url, wait_, timeout_s, choice: BackendChoice):
    """Submit the shards of SWEEP_FILE that are not done and not running; launching again
    resumes a fleet (done shards are never run twice)."""
    from bench.fleet import control

    backend = choice.build()
    the_fleet = control.load_fleet(sweep_file, hardware, choice.backend)
    click.echo(_fleet_header(the_fleet, choice.backend))
    todo, states, lines = control.launch(the_fleet, backend, store_url, choice.work_dir)
    counts = {name: sum(1 for s in states if s.state == name) for name in ("done", "running")}
    click.echo(f"{len(todo)} to submit ({counts['done']} done, {counts['running']} running)")
    for line in lines:
        click.echo(f"  {line}")
    if wait_:
        _wait(store_url, the_fleet.fleet_id, backend, timeout_s)


@fleet.command()
@click.option("--store", "store_url", envvar="BENCH_STORE", required=True, help=STORE_HELP)
@click.option("--fleet", "fleet_id", help="One fleet [every fleet in the store].")
@_control_options
@click.option("--ask-backend", is_flag=True, help="Ask Ray / SkyPilot too (the local backend is always asked).")
@click.option("--wait", "wait_", is_flag=True, help="Wait until no shard is running; exit 1 unless all are done.")
@click.option("--timeout", "timeout_s", type=float, help="With --wait: stop waiting after this many seconds.")
@click.option("--json", "as_json", is_flag=True, help="Print the states as JSON.")
def status(store_url, fleet_id, ask_backend, wait_, timeout_s, as_json, ask: ControlChoice):
    """Each shard: done (its run is in the store), running, failed or missing."""
    from bench.fleet import control
    from bench.store import Store

    store = Store(store_url)
    found, notes = [], []
    records = [control.one_record(store, fleet_id)] if wait_ else control.records(store, fleet_id)
    for record in records:
        backend = control.asked(ask.backend_for(record.fleet_id), ask_backend)
        if wait_:
            states = _wait(store_url, record.fleet_id, backend, timeout_s, show=False)
        else:
            states = control.status(store, record, backend)
        found.append((record, states))
        notes.append(control.backend_note(record, backend))
    if as_json:
        click.echo(json.dumps([{"fleet_id": r.fleet_id, "shards": [s.row() for s in st]} for r, st in found], indent=2))
    else:
        for (record, states), note in zip(found, notes):
            click.echo(control.progress_line(record, states))
            if note:
                click.echo(note)
            click.echo(format_table([s.row() for s in states],
                                    ["shard", "model", "precision", "hardware", "state", "points", "host", "updated",
                                     "detail"]))
        if not found:
            click.echo(f"no fleets in {store.where}")
    if wait_ and any(s.state != "done" for _, st in found for s in st):
        raise SystemExit(1)


@fleet.command()
@click.argument("shard_id")
@click.option("--store", "store_url", envvar="BENCH_STORE", required=True, help=STORE_HELP)
@click.option("--fleet", "fleet_id", help="The fleet [the store's only one].")
@_control_options
@click.option("--tail", type=click.IntRange(min=1), default=200, show_default=True)
def logs(shard_id, store_url, fleet_id, tail, ask: ControlChoice):
    """The latest output of SHARD_ID: from its backend, else the copy in the store."""
    from bench.fleet import control, state
    from bench.store import Store

    store = Store(store_url)
    record = control.one_record(store, fleet_id)
    control.known_shards(record, [shard_id])
    text = ask.backend_for(record.fleet_id).logs(record, shard_id, tail)
    if text is None:
        try:
            data = store.fs.cat_file(store.path(state.rel(record.fleet_id, "shards", shard_id, "shard.log")))
        except FileNotFoundError:
            data = b""
        text = "\n".join(data.decode(errors="replace").splitlines()[-tail:]) or f"no output of {shard_id} yet"
    click.echo(text)


@fleet.command()
@click.argument("shard_ids", nargs=-1)
@click.option("--store", "store_url", envvar="BENCH_STORE", required=True, help=STORE_HELP)
@click.option("--fleet", "fleet_id", help="The fleet [the store's only one].")
@_control_options
def cancel(shard_ids, store_url, fleet_id, ask: ControlChoice):
    """Stop SHARD_IDS (default: every shard not done); each keeps the points it finished.
    Only shards of the backend asked (the user's own) are stopped."""
    from bench.fleet import control
    from bench.store import Store

    store = Store(store_url)
    record = control.one_record(store, fleet_id)
    backend = ask.backend_for(record.fleet_id)
    ids = control.known_shards(record, shard_ids) if shard_ids else [
        s.shard.shard_id for s in control.status(store, record, control.asked(backend, False)) if s.state != "done"]
    for line in backend.cancel(record, ids):
        click.echo(line)


@fleet.command("shard", hidden=True)
@click.argument("sweep_file", type=click.Path(dir_okay=False, exists=True))
@click.option("--config", "config_id", required=True)
@click.option("--hardware", required=True, metavar="ID[|ID...]")
@click.option("--fleet", "fleet_id", required=True)
@click.option("--store", "store_url", envvar="BENCH_STORE", required=True, help=STORE_HELP)
@click.option("--backend", type=click.Choice(BACKENDS.names()), default="local")
@click.option("--work-dir", type=click.Path(file_okay=False))
def shard(sweep_file, config_id, hardware, fleet_id, store_url, backend, work_dir):
    """Run one shard on this machine (what a backend starts): restore, sweep, mirror, publish."""
    from bench.fleet.shard import ShardRun

    run = ShardRun(sweep_file, config_id, hardware.split("|"), fleet_id, store_url, work_dir=work_dir,
                   backend=backend, echo=lambda line: click.echo(line, err=True))
    raise SystemExit(run.run())


def _fleet_header(the_fleet, backend_name: str) -> str:
    n_cfg = len({s.config_id for s in the_fleet.shards})
    kinds = ", ".join("|".join(g) for g in the_fleet.hardware)
    return (f"fleet {the_fleet.fleet_id}: sweep '{the_fleet.name}' ({the_fleet.sweep_path}), {n_cfg} engine configs "
            f"on {kinds}: {len(the_fleet.shards)} shards; backend {backend_name}")


def _wait(store_url, fleet_id, backend, timeout_s, show=True):
    from bench.fleet import control
    from bench.store import Store

    store = Store(store_url)
    states = control.wait(store, fleet_id, backend, lambda line: click.echo(line, err=True), timeout_s)
    if show:
        click.echo(format_table([s.row() for s in states], ["shard", "state", "points", "detail"]))
    return states
