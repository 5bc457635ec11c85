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
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections import deque
from pathlib import Path

from bench.errors import EngineError


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


def http_post(url: str, timeout_s: float = 5.0) -> tuple[int, str]:
    """Status and body of a POST without a body; (0, reason) when nothing answered."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=b"", method="POST"), timeout=timeout_s) as r:
            return r.status, r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, ""
    except (urllib.error.URLError, OSError) as e:
        return 0, str(e)


CHILD_GROUP = {"process_group": 0}  # Popen: a process group of its own, in bench's session (see above)


class ChildProcess:
    """Runs `argv` in its own process group (bench's session) with stdout+stderr to `log_path`."""

    def __init__(self, argv: list[str], log_path: Path, env: dict[str, str] | None = None):
        self.argv = argv
        self.log_path = Path(log_path)
        self.env = env
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **(self.env or {})},
                **CHILD_GROUP,
            )
        except OSError as e:
            raise EngineError(f"could not start {self.argv[0]}: {e}") from None
        finally:
            log.close()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def stop(self, grace_s: float = 20.0) -> None:
        """SIGTERM the whole process group, then SIGKILL what is left after `grace_s`."""
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
            if self.proc.poll() is not None and not _group_alive(pgid):
                break
        self.proc.poll()


def _group_alive(pgid: int) -> bool:
    """Whether any process of the group still runs (zombies, which an init that does not
    reap can leave behind, do not count)."""
    proc = Path("/proc")
    if proc.is_dir():
        for stat in proc.glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                return True
        return False
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
