"""Children die with bench: the parent-death helpers, one module for engines and fleet shards.

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
- `guard` (`guarded(argv)`): a one-thread process between a parent and its command that sends
  the command one signal (SIGTERM) when the parent dies, however it dies. A fleet shard runs
  its `bench sweep` through it (and a Ray task its shard), so a killed shard never leaves a
  sweep measuring on its own; SIGTERM lets the sweep end as Ctrl-C does, its finished points
  kept. It sits in between for two reasons: the kernel sends the parent-death signal each
  time a thread of a dying multi-threaded parent exits (the child is handed to the next
  thread first), so a shard (threads: its output reader, fsspec's I/O loop) killed by SIGKILL
  would signal its child several times, and a second SIGTERM interrupts the sweep's own
  clean-up: here it arrives as PARENT_GONE and becomes exactly one signal; and
  `Popen(preexec_fn=...)` is not safe in a threaded parent, while this process has one thread.
  Signals the parent sends on purpose (SIGTERM, SIGINT, SIGHUP: a cancel, a Ctrl-C) are passed
  on as they come; the exit status is the command's (a signal death is re-raised). Where
  prctl is missing (not Linux) the command runs without the guard.

Run as a file (`python -I -S lifeline.py ...`): standard library only, so it starts in
milliseconds and imports nothing of bench or of the environment's site-packages.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

PR_SET_PDEATHSIG = 1  # linux/prctl.h
PARENT_GONE = signal.SIGUSR2  # what the kernel sends a guard when its parent dies
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)  # passed on by a guard as they come


def guarded(command: list[str], sig: int = signal.SIGTERM) -> list[str]:
    """The argv that runs COMMAND under a guard: COMMAND gets `sig` once when this process
    dies. Start it from the main thread: the guard is armed against the thread that forks it."""
    return [sys.executable, "-I", "-S", __file__, "guard", str(os.getpid()), str(int(sig)), "--", *command]


def set_parent_death_signal(sig: int) -> bool:
    """Ask the kernel for `sig` when this process's parent (thread) ends; False where it cannot."""
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


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
    if not set_parent_death_signal(signal.SIGTERM):
        print("bench lifeline: prctl(PR_SET_PDEATHSIG) failed", file=sys.stderr)
    if os.getppid() != parent:  # bench died before the signal was armed
        sys.exit(f"bench lifeline: parent {parent} exited before the engine started")
    os.execvp(argv[0], argv)


def _guard(parent: int, sig: int, command: list[str]) -> None:
    """Run COMMAND; send it `sig` once when `parent` dies; exit with its status."""
    proc: subprocess.Popen | None = None
    pending: list[int] = []
    gone = False

    def deliver(signum: int) -> None:
        if proc is None:
            pending.append(signum)
        else:
            proc.send_signal(signum)  # a no-op once it has exited

    def on_parent_gone(_signum, _frame) -> None:
        nonlocal gone
        if not gone:  # the first of possibly several: one signal only
            gone = True
            deliver(sig)

    signal.signal(PARENT_GONE, on_parent_gone)
    for s in FORWARDED:
        signal.signal(s, lambda signum, _frame: deliver(signum))
    set_parent_death_signal(PARENT_GONE)
    if os.getppid() != parent:  # the parent died before the guard was set: never start unguarded
        sys.exit(128 + sig)
    # COMMAND also gets `sig` if this process is killed
    proc = subprocess.Popen(command, preexec_fn=lambda: set_parent_death_signal(sig))
    for signum in pending:
        proc.send_signal(signum)
    code = proc.wait()
    if code < 0:  # died of a signal: so does this process, for the parent to see
        if -code != signal.SIGKILL:  # SIGKILL's action is the default already, and cannot be set
            signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    sys.exit(code)


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
    """`exec PARENT_PID -- ARGV...`, `watch FD PGID GRACE_S` or `guard PARENT_PID SIG -- ARGV...`."""
    if argv[:1] == ["exec"] and len(argv) >= 4 and argv[2] == "--":
        _exec(int(argv[1]), argv[3:])
    elif argv[:1] == ["watch"] and len(argv) == 4:
        _watch(int(argv[1]), int(argv[2]), float(argv[3]))
    elif argv[:1] == ["guard"] and len(argv) >= 5 and argv[3] == "--":
        _guard(int(argv[1]), int(argv[2]), argv[4:])
    else:
        sys.exit("usage: lifeline.py exec PARENT_PID -- ARGV... | watch FD PGID GRACE_S | guard PARENT_PID SIG -- ARGV...")


if __name__ == "__main__":
    main(sys.argv[1:])
