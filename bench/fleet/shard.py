"""What runs on a shard's machine (`bench fleet shard`, started by a backend).

1. Check the machine: the device it has must be one of the shard's hardware types (with no
   GPU here, a single named type is taken as named, as `bench sweep --hardware` does: an
   endpoint engine measures a device elsewhere).
2. Find what is already measured (same hardware, same plan): a finished run an earlier
   attempt left on this machine is published at once (bench.fleet.localruns); else the
   shard's mirror in the store is restored, and whichever of it and the local runs holds
   more finished points continues with `--resume` (a finished mirror is published at once).
3. Run `bench sweep SWEEP --config ID --hardware HW` as a child process that the kernel
   stops when the shard dies (bench.engines.lifeline.guarded); after each finished point (each new
   run.json) mirror the run folder to the store, and beat a heartbeat into the shard's
   status object.
4. When the sweep ends complete or partial, publish the run (bench.store) and write status
   "done" with its run id; otherwise status "failed" with the reason. A store that fails
   the publish is retried with backoff for PUBLISH_RETRY_S; past it the run stays complete
   on this machine, the shard says how to publish it, and a relaunch here publishes it
   without measuring.

Credentials are read from the environment by the store's own backend and never written:
the store URL comes from `--store` or $BENCH_STORE, messages show it redacted.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import deque
from pathlib import Path

from bench.engines.lifeline import guarded
from bench.errors import (
    BenchError,
    ConfigError,
    ResultError,
    StoreError,
    StoreUnavailable,
    one_line,
)
from bench.fleet import localruns, state
from bench.fleet.partial import PartialRun
from bench.fleet.records import ShardStatus
from bench.fleet.shards import shard_id as make_shard_id
from bench.redact import redact_text

FINISHED = localruns.FINISHED
try:  # seconds the final publish is retried through a store outage
    PUBLISH_RETRY_S = max(0.0, float(os.environ.get("BENCH_FLEET_PUBLISH_RETRY_S", "600")))
except ValueError:
    PUBLISH_RETRY_S = 600.0


def machine_hardware(wanted: list[str], detect=None) -> tuple[str, str]:
    """(hardware id to run as, how it was decided) for a shard wanting any of `wanted`."""
    from bench.catalog.device import CPU_HOST_ID, detect_device, require_hardware

    detected = (detect or detect_device)()
    if detected.vendor == "cpu":
        if CPU_HOST_ID in wanted:
            return CPU_HOST_ID, "detected: no GPU on this machine"
        if len(wanted) == 1:
            return wanted[0], "named (no GPU on this machine to check)"
        raise ConfigError(f"no GPU on this machine: cannot tell which of {', '.join(wanted)} it is")
    try:
        here = require_hardware(detected).id
    except ConfigError:
        raise ConfigError(f"this machine's {detected.name} is not in the hardware catalog; "
                          f"the shard wants {' or '.join(wanted)}") from None
    if here not in wanted:
        raise ConfigError(f"this machine has {detected.name} ({here}); the shard wants {' or '.join(wanted)}")
    return here, f"detected {detected.count} x {detected.name}"


def shard_plan(sweep_path: str, config_id: str, hardware_id: str, detect=None):
    """The plan `bench sweep SWEEP --config ID --hardware HW` builds on this machine."""
    from bench.catalog.device import detect_device
    from bench.plan import build_plan, load_sweep
    from bench.plan.plan import select_config

    sweep = load_sweep(sweep_path, {"hardware": hardware_id})
    n_devices = sweep.devices or (detect or detect_device)().count or 1
    return select_config(build_plan(sweep, hardware_id, n_devices), config_id)


def plan_digest(plan) -> str:
    return hashlib.sha256("\n".join(p.point_id for p in plan.points).encode()).hexdigest()[:8]


def default_work_dir(fleet_id: str, shard_id: str) -> Path:
    from bench.fleet.backends.local import default_root

    return default_root() / fleet_id / shard_id


NODES_ENV = "BENCH_NODES"  # "host:port,..." of a multi-node shard's follower agents (bench.fleet.backends.skypilot)


class ShardRun:
    """One attempt at one shard on this machine."""

    def __init__(self, sweep_path: str, config_id: str, hardware: list[str], fleet_id: str, store_url: str,
                 work_dir: Path | None = None, backend: str = "local", echo=print):
        from bench.store import Store

        self.sweep_path = str(sweep_path)
        self.config_id = config_id
        self.fleet_id = fleet_id
        self.shard_id = make_shard_id(config_id, hardware)
        self.hardware = sorted(hardware)
        self.store = Store(store_url)
        self.url = store_url
        self.attempt = f"{state.utc_now().replace(':', '').replace('-', '')}-{uuid.uuid4().hex[:6]}"
        self.work = Path(work_dir or default_work_dir(fleet_id, self.shard_id)) / self.attempt
        self.echo = echo
        self.status = ShardStatus(state="running", fleet_id=fleet_id, shard_id=self.shard_id, attempt=self.attempt,
                                  host=socket.gethostname(), pid=os.getpid(), backend=backend,
                                  started_utc=state.utc_now())
        self.log_lines: deque[str] = deque(maxlen=5000)  # the tail of the shard's output, for the store
        self.log = PartialRun(self.store, state.rel(fleet_id, "shards", self.shard_id))
        self.child: subprocess.Popen | None = None

    # -- the attempt ----------------------------------------------------------------------
    def run(self) -> int:
        """Run the attempt; returns the process exit code (0: the run is published)."""
        try:
            self._check_sweep()
            hw, how = machine_hardware(self.hardware)
            plan = shard_plan(self.sweep_path, self.config_id, hw)
            self.status.hardware, self.status.hardware_check = hw, how
            self.status.points_total = len(plan.points)
            self.mirror = PartialRun(self.store, state.rel(self.fleet_id, "shards", self.shard_id, "partial",
                                                           f"{hw}-{plan_digest(plan)}"))
            self._beat()
            localruns.mark_attempt(self.work, hw, plan_digest(plan))
            run_dir = self._start_from(hw, plan_digest(plan))
            if run_dir is None or self._run_status(run_dir) not in FINISHED:
                code, run_dir = self._sweep(hw, run_dir)
                if run_dir is None or self._run_status(run_dir) not in FINISHED:
                    why = self._run_error(run_dir) or self._child_error() or _exit_text(code)
                    return self._fail(why, code if code and code > 0 else 1)  # killed by a signal: 1
            return self._publish(run_dir)
        except BenchError as e:
            return self._fail(str(e), e.exit_code)

    def _start_from(self, hw: str, digest: str) -> Path | None:
        """The run to publish or continue: a finished local run first, else the store's mirror
        or the local run with more finished points (None: a new run)."""
        local = localruns.best_local(self.work.parent, hw, digest)
        if local is not None and local.finished:
            self._say(f"publishing the complete run {local.path.name} found on this machine "
                      f"({local.points_done} points); nothing is measured again")
            return local.path
        restored = self.mirror.restore(self.work / "restored")
        if restored is not None:
            self._say(f"restored {restored.name} from the store ({self._points(restored)} points done)")
        if local is not None and (restored is None or (self._run_status(restored) not in FINISHED
                                                       and local.points_done >= self._points(restored))):
            self._say(f"continuing {local.path} from this machine ({local.points_done} points done)")
            return local.path
        return restored

    def _check_sweep(self) -> None:
        record = state.read_fleet(self.store, self.fleet_id)
        sha = hashlib.sha256(Path(self.sweep_path).read_bytes()).hexdigest()
        if record is not None and record.sweep_sha256 != sha:
            raise ConfigError(f"{self.sweep_path} is not the sweep file fleet {self.fleet_id} was launched with")

    def _sweep(self, hw: str, restored: Path | None) -> tuple[int, Path | None]:
        """Run `bench sweep` for this shard; mirror and heartbeat until it exits."""
        argv = [sys.executable, "-m", "bench", "sweep", self.sweep_path, "--config", self.config_id, "--hardware", hw]
        out = self.work / "runs"
        argv += ["--resume", str(restored)] if restored else ["--out", str(out)]
        nodes = [n for n in os.environ.get(NODES_ENV, "").split(",") if n]
        if nodes:  # a multi-node shard's followers (their `bench node serve` agents), from its launcher
            argv += ["--set", f"nodes={json.dumps(nodes)}"]
        self._say("running: " + " ".join(argv[1:]))
        # its own process group: one signal from us, never a second from a group signal; and
        # SIGTERM from the kernel if this process dies first (a killed shard stops its sweep)
        self.child = subprocess.Popen(guarded(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True, process_group=0, stdin=subprocess.DEVNULL)
        reader = threading.Thread(target=self._tee, args=(self.child.stdout,), daemon=True)
        reader.start()
        previous = {s: signal.signal(s, self._forward) for s in (signal.SIGTERM, signal.SIGINT)}
        run_dir, seen, last_beat, retry_at = restored, None, time.monotonic(), 0.0
        try:
            while True:
                code = self.child.poll()
                run_dir = run_dir or _only_run(out)
                stamp = _stamp(run_dir)
                if stamp != seen and run_dir is not None and time.monotonic() >= retry_at:
                    if self._quietly(self._sync, run_dir):
                        seen = stamp
                    else:
                        retry_at = time.monotonic() + 10.0
                    last_beat = time.monotonic()
                elif time.monotonic() - last_beat > state.HEARTBEAT_S:
                    self._quietly(self._beat)
                    last_beat = time.monotonic()
                if code is not None:
                    break
                time.sleep(0.5)
        finally:
            for s, h in previous.items():
                signal.signal(s, h)
            if self.child.poll() is None:  # we are leaving early: never leave the sweep behind
                self.child.terminate()
                self.child.wait(timeout=120)
        reader.join(timeout=10)
        if run_dir is not None:
            self._quietly(self._sync, run_dir)  # a store that is down now: the publish retries
        return code, run_dir

    def _publish(self, run_dir: Path) -> int:
        """Publish the finished run, retrying a failing store with backoff for PUBLISH_RETRY_S;
        past it the run stays complete here and the shard says how to publish it."""
        from bench.store import prepare

        try:
            prepared = prepare(run_dir)  # a refusal is the run's, not the store's: never retried
        except ResultError as e:
            raise StoreError(f"refused: {e}") from None
        deadline, delay_s, done = time.monotonic() + PUBLISH_RETRY_S, 2.0, None
        while True:
            try:
                if done is None:
                    done = self.store.upload(prepared)
                    self._update(state="done", run_id=done.run_id, run_status=self._run_status(run_dir),
                                 finished_utc=state.utc_now())
                self._beat()
                break
            except StoreUnavailable as e:  # a refusal of the content is not retried: it fails now
                left_s = deadline - time.monotonic()
                if left_s <= 0 and done is not None:  # published: a relaunch finds it done, or publishes it again
                    self._say(f"published {done.run_id}, but the shard's status could not be written: {e}")
                    return 0
                if left_s <= 0:
                    return self._publish_later(run_dir, e)
                wait_s = min(delay_s, left_s)
                what = "status write" if done is not None else "publish"
                self._say(f"{what} failed, retrying in {wait_s:.0f} s (for {left_s:.0f} s more): {e}")
                time.sleep(wait_s)
                delay_s = min(2 * delay_s, 60.0)
        self._say(f"{'published' if done.status == 'published' else 'already in the store'}: {done.run_id}")
        return 0

    def _publish_later(self, run_dir: Path, error: StoreError) -> int:
        import shlex

        self._say(f"publish later with: bench upload {shlex.quote(str(run_dir))} --to {shlex.quote(self.store.where)}"
                  " (or relaunch the fleet: a shard that starts on this machine publishes this run, measuring nothing)")
        return self._fail(f"publish failed for {PUBLISH_RETRY_S:.0f} s ({error}); the run is complete on "
                          f"{socket.gethostname()} at {run_dir}", error.exit_code)

    def _fail(self, why: str, code: int) -> int:
        why = one_line(redact_text(str(why)))
        self._say(f"failed: {why}")
        self._update(state="failed", error=why, exit_code=code, finished_utc=state.utc_now())
        try:
            self._beat()
        except BenchError as e:  # the store itself failed: say so here, the heartbeat goes stale
            self._say(f"cannot write the shard's status: {e}")
        return code

    # -- helpers --------------------------------------------------------------------------
    def _quietly(self, fn, *args) -> bool:
        """A store write during the run; a failure (a network blip) is said and retried later."""
        try:
            fn(*args)
            return True
        except BenchError as e:
            self._say(f"store write failed, retried at the next point or heartbeat: {e}")
            return False

    def _update(self, **fields) -> None:
        for name, value in fields.items():  # each checked (ShardStatus validates assignments)
            setattr(self.status, name, value)

    def _sync(self, run_dir: Path) -> None:
        self.mirror.sync(run_dir)
        self.status.points_done = self._points(run_dir)
        self._beat()

    def _beat(self) -> None:
        self.status.heartbeat_utc = state.utc_now()
        self.log.put_text("shard.log", "".join(self.log_lines))
        state.write_status(self.store, self.fleet_id, self.shard_id, self.status)

    def _forward(self, signum, frame) -> None:
        if self.child is not None and self.child.poll() is None:
            self.child.send_signal(signum)

    def _tee(self, stream) -> None:
        for line in stream:
            self.log_lines.append(line)
            sys.stdout.write(line)
            sys.stdout.flush()

    def _say(self, text: str) -> None:
        line = f"bench fleet shard {self.shard_id}: {text}\n"
        self.log_lines.append(line)
        self.echo(line.rstrip("\n"))

    def _run_status(self, run_dir: Path | None) -> str | None:
        run = localruns.read_result(run_dir)
        return run.status if run else None

    def _run_error(self, run_dir: Path | None) -> str | None:
        run = localruns.read_result(run_dir)
        return f"run {run.status}: {run.error}" if run and run.error else None

    def _child_error(self) -> str | None:
        """The sweep's own one-line error (`bench: error: ...`), when it printed one."""
        errors = [line.strip() for line in self.log_lines if line.startswith("bench: ")]
        return errors[-1] if errors else None

    def _points(self, run_dir: Path) -> int:
        run = localruns.read_result(run_dir)
        return localruns.points_done(run) if run else 0


def _exit_text(code: int) -> str:
    if code < 0:
        return f"bench sweep was stopped by {signal.Signals(-code).name} before its run began"
    return f"bench sweep exited with code {code}"


def _only_run(out: Path) -> Path | None:
    """The run folder `bench sweep --out OUT` created (None until it exists)."""
    try:
        found = [p for p in out.iterdir() if (p / "run.json").is_file()]
    except FileNotFoundError:
        return None
    return found[0] if len(found) == 1 else None


def _stamp(run_dir: Path | None):
    if run_dir is None:  # Path(None): the TypeError below
        return None
    try:
        st = (Path(run_dir) / "run.json").stat()
    except (OSError, TypeError):
        return None
    return st.st_mtime_ns, st.st_size
