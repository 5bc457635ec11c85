"""Engines die with bench: the two helpers a child process group is started with.

Measured with vLLM 0.32's CPU build: after a SIGKILL of its api_server, EngineCore, its
Worker and multiprocessing's resource tracker (all in the api_server's process group) kept
running, reparented to pid 1, at 24-90 % CPU each. A bench killed with SIGKILL (or by the OOM
killer) never runs its `finally`, so its engine needs protection that does not depend on it:

- `exec`: run as the child itself, it asks Linux for a parent-death signal (SIGTERM when
  bench's starting thread ends; `prctl(PR_SET_PDEATHSIG)`, kept across `execve`) and then
  becomes the engine (same pid). vLLM's api_server stops its EngineCore on SIGTERM.
- `watch`: a watchdog in the engine's process group holding the read end of a pipe whose
  write end only bench holds. The kernel closes it however bench dies; on EOF the watchdog
  sends SIGTERM to the whole group, SIGKILL to what is left after a grace period, then exits.
  It also covers what the parent-death signal does not: an engine started from a thread
  that ends before bench does (the signal fires when that thread exits, so it is not asked for
  there), and children that a SIGKILLed leader would orphan.

Run as a file (`python -I -S lifeline.py ...`): standard library only, so it starts in
milliseconds and imports nothing of bench or of the environment's site-packages.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import time
from pathlib import Path

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def stat_fields(pid: int) -> list[str] | None:
    """/proc/<pid>/stat after the command name: [state, ppid, pgid, ...] (field 3 on); None when gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return None
    return text.rsplit(")", 1)[1].split()


def start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks after boot (/proc/<pid>/stat field 22); None when gone."""
    fields = stat_fields(pid)
    return int(fields[19]) if fields else None


def group_members(pgid: int, exclude: int | None = None) -> list[int]:
    """Live processes of process group `pgid` (zombies, which an init that does not reap can
    leave behind, do not count); without /proc, [pgid] while the group answers a signal."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return []
        except PermissionError:
            pass
        return [pgid]
    out = []
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == exclude:
            continue
        fields = stat_fields(int(entry.name))
        if fields and int(fields[2]) == pgid and fields[0] != "Z":
            out.append(int(entry.name))
    return out


def end_group(pgid: int, grace_s: float, exclude: int | None = None) -> bool:
    """SIGTERM every process of the group, SIGKILL what is left after `grace_s`; True once
    none is left (within 5 s of the SIGKILL)."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        if not group_members(pgid, exclude):
            return True
        for pid in group_members(pgid, exclude):  # one by one: `exclude` (the watchdog) stays
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and group_members(pgid, exclude):
            time.sleep(0.1)
    return not group_members(pgid, exclude)


def _exec(parent: int, argv: list[str]) -> None:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) != 0:
        print(f"bench lifeline: prctl(PR_SET_PDEATHSIG) failed: errno {ctypes.get_errno()}", file=sys.stderr)
    if os.getppid() != parent:  # bench died before the signal was armed
        sys.exit(f"bench lifeline: parent {parent} exited before the engine started")
    os.execvp(argv[0], argv)


def _watch(fd: int, pgid: int, grace_s: float) -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # bench's stop() signals the group: end quietly
    while True:
        select.select([fd], [], [])
        if not os.read(fd, 4096):  # EOF: bench is gone
            break
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the group's SIGTERM is for the engine
    if group_members(pgid, exclude=os.getpid()):
        print(f"bench lifeline: bench exited; stopping engine process group {pgid}", file=sys.stderr, flush=True)
        end_group(pgid, grace_s, exclude=os.getpid())


def main(argv: list[str]) -> None:
    """`exec PARENT_PID -- ARGV...` or `watch FD PGID GRACE_S`."""
    if argv[:1] == ["exec"] and len(argv) >= 4 and argv[2] == "--":
        _exec(int(argv[1]), argv[3:])
    elif argv[:1] == ["watch"] and len(argv) == 4:
        _watch(int(argv[1]), int(argv[2]), float(argv[3]))
    else:
        sys.exit("usage: lifeline.py exec PARENT_PID -- ARGV... | watch FD PGID GRACE_S")


if __name__ == "__main__":
    main(sys.argv[1:])
