"""A child server process in its own process group, with its log kept in a file.

The child gets its own process group (so `stop()` ends it and every process it started,
and a Ctrl-C at the terminal reaches bench alone) but stays in bench's session. A new
session (`setsid`) would also put it in a scheduler autogroup of its own on Linux kernels
with `sched_autogroup_enabled` (the default on most distributions): the scheduler then
shares CPU between the two groups, not between processes, and on a small box an engine
that busy-polls its cores starved the load client of bench's group. Measured on 2 cores
with vLLM's CPU build (tiny Llama, c=1/4/16): in its own session, the client waited on the
run queue 94% of the time and its event loop lagged 100-1600 ms (p99); in the same session,
0.25 s of wait per point and 1.3-2.6 ms lag p99 (docs/reliability.md, "CPU placement").

The group dies with bench, however bench ends (bench.engines.lifeline), and is recorded beside
its log so that a `--resume` finds one that did not (`stop_stale`; docs/reliability.md).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bench.engines.lifeline import end_group, group_members, start_ticks
from bench.errors import EngineError

# Between /health checks while a server starts: a ready server is seen at most this late (a
# check on the local host costs about a millisecond; every start waited 0.25 s more on average
# at 0.5 s).
HEALTH_POLL_S = 0.1


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def log_tail(path: Path, n: int = 20) -> str:
    """The last n lines of a log file ('' if it does not exist)."""
    try:
        with open(path, "rb") as f:
            lines = deque(f, maxlen=n)
    except FileNotFoundError:
        return ""
    return b"".join(lines).decode("utf-8", "replace").rstrip()


def http_get(url: str, timeout_s: float = 5.0, headers: dict[str, str] | None = None) -> tuple[int, str]:
    """Status and body of a GET (with `headers`, e.g. an endpoint's Authorization); (0, reason) when nothing answered."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=timeout_s) as r:
            return r.status, r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, ""
    except (urllib.error.URLError, OSError) as e:
        return 0, str(e)


def wait_healthy(child: ChildProcess, health_url: str, timeout_s: float) -> Literal["ready", "exited", "timeout"]:
    """Poll a starting server's HEALTH_URL every HEALTH_POLL_S: "ready" at its first 200,
    "exited" once CHILD has exited, "timeout" after TIMEOUT_S (the caller says why, its way)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not child.alive():
            return "exited"
        if http_get(health_url, timeout_s=2.0)[0] == 200:  # 503 or no answer while it starts
            return "ready"
        time.sleep(HEALTH_POLL_S)
    return "timeout"


def http_post(url: str, timeout_s: float = 5.0) -> tuple[int, str]:
    """Status and body of a POST without a body; (0, reason) when nothing answered."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=b"", method="POST"), timeout=timeout_s) as r:
            return r.status, r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, ""
    except (urllib.error.URLError, OSError) as e:
        return 0, str(e)


CHILD_PROCESS_GROUP = 0  # Popen(process_group=): a process group of its own, in bench's session (see above)
LIFELINE = str(Path(__file__).with_name("lifeline.py"))  # run as a file: stdlib only, starts in ms
WATCHDOG_GRACE_S = 10.0  # SIGTERM to SIGKILL, when bench is gone and its watchdog stops an engine
RECORD_GLOB = ".*.proc.json"


class EngineRecord(BaseModel):
    """`.<log stem>.proc.json`: the process group a child engine was started in, so a later
    process of the same run can stop it (`stop_stale`). `start_ticks`: the leader's start time
    in clock ticks after boot (/proc/<pid>/stat field 22)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    host: str
    boot_id: str | None = None
    pid: int = Field(gt=1)
    pgid: int = Field(gt=1)  # never 0 or 1: a signal to group 0 is a signal to our own
    start_ticks: int | None = None
    bench_pid: int | None = None  # the bench process that started it
    watchdog_pid: int | None = None


def record_path(log_path: Path) -> Path:
    """Where a child's record lies: `.<log stem>.proc.json` beside its log (hidden: never uploaded)."""
    return Path(log_path).with_name(f".{Path(log_path).stem}.proc.json")


class ChildProcess:
    """Runs `argv` in its own process group (bench's session) with stdout+stderr to `log_path`.

    The group dies with bench (bench.engines.lifeline): on Linux the child gets a parent-death
    signal when started from the main thread, and a watchdog in its group stops the whole
    group once bench's end of a pipe closes, however bench ended. Its pid, process group and
    start time are recorded beside the log (`record_path`) until `stop()`, so a later
    `--resume` can find an engine that outlived both (`stop_stale`)."""

    def __init__(self, argv: list[str], log_path: Path, env: dict[str, str] | None = None):
        self.argv = argv
        self.log_path = Path(log_path)
        self.env = env
        self.proc: subprocess.Popen | None = None
        self.watchdog: subprocess.Popen | None = None
        self._lifeline_fd: int | None = None  # the write end the watchdog waits on; never written
        # stop() may come from two threads at once (a pre-start cancelled mid-start, bench.run.prestart):
        # one at a time, or both would close the same lifeline fd number
        self._stop_lock = threading.Lock()

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = self._spawn(log, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    @property
    def pid(self) -> int:
        """The started process's id (start() sets it, or raises)."""
        if self.proc is None:
            raise EngineError(f"{self.argv[0]} was never started")
        return self.proc.pid

    def _spawn(self, log, **streams) -> subprocess.Popen:
        """Popen of argv with `streams` in a new group, with its parent-death signal, watchdog
        (which writes to `log`, an open file) and record."""
        env = {**os.environ, **(self.env or {})}
        if shutil.which(self.argv[0], path=env.get("PATH")) is None:  # the exec shim would hide it
            raise EngineError(f"could not start {self.argv[0]}: no such executable")
        argv = self.argv
        if sys.platform.startswith("linux") and threading.current_thread() is threading.main_thread():
            # the signal fires when the starting *thread* ends: a request thread (bench node serve) must not ask
            argv = [sys.executable, "-I", "-S", LIFELINE, "exec", str(os.getpid()), "--", *argv]
        try:
            proc = subprocess.Popen(argv, env=env, process_group=CHILD_PROCESS_GROUP, **streams)
        except OSError as e:
            raise EngineError(f"could not start {self.argv[0]}: {e}") from None
        self._start_watchdog(proc.pid, log)
        try:
            self._write_record(proc.pid)
        except BaseException:
            self.proc = proc
            self.stop(grace_s=2.0)
            raise
        return proc

    def _start_watchdog(self, pgid: int, log) -> None:
        read_fd, write_fd = os.pipe()  # not inheritable: no other child of bench holds the write end
        try:
            self.watchdog = subprocess.Popen(
                [sys.executable, "-I", "-S", LIFELINE, "watch", str(read_fd), str(pgid), str(WATCHDOG_GRACE_S)],
                pass_fds=(read_fd,), process_group=pgid, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
            self._lifeline_fd = write_fd
        except (OSError, subprocess.SubprocessError):  # the child is gone already: nothing to watch
            os.close(write_fd)
        finally:
            os.close(read_fd)

    def _write_record(self, pid: int) -> None:
        from bench.atomicio import atomic_write_text

        record = EngineRecord(host=socket.gethostname(), boot_id=boot_id(), pid=pid, pgid=pid,
                              start_ticks=start_ticks(pid), bench_pid=os.getpid(),
                              watchdog_pid=self.watchdog.pid if self.watchdog else None)
        atomic_write_text(record_path(self.log_path), record.model_dump_json() + "\n")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def stop(self, grace_s: float = 20.0) -> None:
        """SIGINT, then SIGTERM the whole process group, then SIGKILL what is left after `grace_s`."""
        with self._stop_lock:
            self._stop(grace_s)

    def _stop(self, grace_s: float) -> None:
        if self.proc is None:
            return
        pgid = self.proc.pid
        for sig, wait_s in ((signal.SIGINT, grace_s / 2), (signal.SIGTERM, grace_s / 2), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + wait_s
            while time.monotonic() < deadline and self.proc.poll() is None:
                time.sleep(0.1)
            if self.proc.poll() is not None and not group_members(pgid):
                break
        self.proc.poll()
        self._release_watchdog()
        if not group_members(pgid):
            record_path(self.log_path).unlink(missing_ok=True)

    def _release_watchdog(self) -> None:
        if self._lifeline_fd is not None:
            os.close(self._lifeline_fd)  # a watchdog still alive sees EOF, finds the group empty, exits
            self._lifeline_fd = None
        if self.watchdog is not None:
            try:
                self.watchdog.wait(timeout=5.0)
            except subprocess.TimeoutExpired:
                self.watchdog.kill()
                self.watchdog.wait()


def boot_id() -> str | None:
    """This boot's id (Linux): a pid recorded before a reboot names another process."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def stop_stale(run_dir: Path, grace_s: float = WATCHDOG_GRACE_S) -> list[str]:
    """Stop every process group recorded in `run_dir` (`record_path`) that still runs on this
    host: an engine of an earlier process of this run that outlived it. Call only while holding
    the run folder's lock (its writer is gone). One line per group stopped; EngineError when
    one cannot be stopped (a second engine beside it would not fit, or would share its devices)."""
    said = []
    for path in sorted(Path(run_dir).glob(RECORD_GLOB)):
        try:
            rec = EngineRecord.model_validate_json(path.read_bytes())
        except (OSError, ValidationError):
            path.unlink(missing_ok=True)  # not a record this code wrote: nothing to trust in it
            continue
        if rec.host != socket.gethostname():
            said.append(f"engine record {path.name} is from host {rec.host[:100]}: not checked from here")
            continue
        pgid = rec.pgid
        members = _recorded_group(pgid, rec.start_ticks, rec.boot_id)
        if members:
            if not end_group(pgid, grace_s):
                raise EngineError(f"a stale engine of this run (process group {pgid}) would not stop; "
                                  f"stop it (kill -9 -- -{pgid}) and resume again")
            said.append(f"stopped a stale engine left by an earlier process of this run "
                        f"(process group {pgid}, {len(members)} process(es))")
        path.unlink(missing_ok=True)
    return said


def _recorded_group(pgid: int, ticks: int | None, recorded_boot: str | None) -> list[int]:
    """The live processes of the recorded group, or [] when it is gone or its number now names
    another process (a reboot, or the leader gone and the pid reused with another start time).
    While any process of a group lives, Linux does not reuse its number for a new process."""
    if recorded_boot and recorded_boot != boot_id():
        return []
    leader = start_ticks(pgid)
    if leader is not None and ticks is not None and leader != ticks:
        return []
    uid = os.getuid()
    return [pid for pid in group_members(pgid) if _owner(pid) == uid]


def _owner(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return None
