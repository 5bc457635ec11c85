"""One process per run folder (issue 11, defect 2).

A run holds an exclusive OS lock (`fcntl.flock`) on RUN_DIR/.lock while it executes, with
its host and pid written inside. The OS drops the lock when the process dies, however it
dies, so a `running` run.json whose lock is free belongs to a process that is gone: it is
"stale" and may be resumed. A second process (a `--resume` of a run still going) is refused.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from pathlib import Path
from typing import Self

from bench.errors import BenchError

LOCK_FILE = ".lock"


class RunLocked(BenchError):
    """The run folder is held by another live process."""


class RunLock:
    """The exclusive lock of one run folder; `acquire()` / `release()`, or a context manager."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> Self:
        """Take the lock now or raise RunLocked naming the holder (one line)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = read_holder(self.path.parent)
            who = f"pid {holder.get('pid')} on {holder.get('host')}" if holder else "another process"
            raise RunLocked(f"{self.path.parent} is in use by {who}; wait for it or stop it first") from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"host": socket.gethostname(), "pid": os.getpid()}).encode())
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> Self:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def read_holder(run_dir: Path) -> dict:
    """{"host", "pid"} of the last process that took the lock ({} when unknown)."""
    try:
        return json.loads((Path(run_dir) / LOCK_FILE).read_text() or "{}")
    except (OSError, ValueError):
        return {}


def is_locked(run_dir: Path) -> bool:
    """True while some live process holds the run folder's lock."""
    path = Path(run_dir) / LOCK_FILE
    if not path.exists():
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops a shared lock taken just now
    return False


def run_state(run_dir: Path, status: str) -> str:
    """What a run's status means now: a `running` run whose lock is free is "stale (process gone)"."""
    if status == "running" and not is_locked(run_dir):
        return "stale (process gone)"
    return status
