"""A child that ends with its parent: `python -m bench.fleet.parentdeath PARENT SIG -- COMMAND...`
runs COMMAND and sends it SIG once when PARENT, the process that started this one, dies,
however it dies (SIGKILL included). A shard runs its `bench sweep` (and a Ray task its
shard) through this, so a killed shard never leaves a sweep measuring on its own; SIGTERM
lets the sweep end as Ctrl-C does, its finished points kept.

How: Linux `prctl(PR_SET_PDEATHSIG)`. This small process sits between the parent and
COMMAND, for two reasons:
- the kernel sends the parent-death signal each time a thread of a dying multi-threaded
  parent exits (the child is handed to the next thread first), so a shard (threads: its
  output reader, fsspec's I/O loop) killed by SIGKILL signals its child several times, and a
  second SIGTERM interrupts the sweep's own clean-up; here it arrives as PARENT_GONE and is
  turned into exactly one SIG;
- `Popen(preexec_fn=...)` is not safe in a threaded parent; this process has one thread.
Signals the parent sends on purpose (SIGTERM, SIGINT, SIGHUP: a cancel, a Ctrl-C) are passed
on as they come. The exit status is COMMAND's (a signal death is re-raised here). Where prctl
is missing (not Linux) COMMAND runs without the guard.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

PR_SET_PDEATHSIG = 1  # linux/prctl.h
PARENT_GONE = signal.SIGUSR2  # what the kernel sends this process when its parent dies
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def wrap(command: list[str], sig: int = signal.SIGTERM) -> list[str]:
    """The argv that runs COMMAND so that it gets `sig` once when this process dies. Start it
    from the main thread: the guard is armed against the thread that forks it."""
    return [sys.executable, "-m", __name__, str(os.getpid()), str(int(sig)), "--", *command]


def set_parent_death_signal(sig: int) -> bool:
    """Ask the kernel for `sig` when this process's parent dies; False where it cannot."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def main(argv: list[str]) -> None:
    parent, sig = int(argv[0]), int(argv[1])
    command = argv[argv.index("--") + 1:]
    state: dict = {"proc": None, "pending": [], "gone": False}

    def deliver(signum: int) -> None:
        if state["proc"] is None:
            state["pending"].append(signum)
        else:
            state["proc"].send_signal(signum)  # a no-op once it has exited

    def on_parent_gone(_signum, _frame) -> None:
        if not state["gone"]:  # the first of possibly several: one SIG only
            state["gone"] = True
            deliver(sig)

    signal.signal(PARENT_GONE, on_parent_gone)
    for s in FORWARDED:
        signal.signal(s, lambda signum, _frame: deliver(signum))
    set_parent_death_signal(PARENT_GONE)
    if os.getppid() != parent:  # the parent died before the guard was set: never start unguarded
        sys.exit(128 + sig)
    # COMMAND also gets SIG if this process is killed
    proc = subprocess.Popen(command, preexec_fn=lambda: set_parent_death_signal(sig))  # noqa: PLW1509 - one thread
    state["proc"] = proc
    for s in state.pop("pending"):
        proc.send_signal(s)
    code = proc.wait()
    if code < 0:  # died of a signal: so does this process, for the parent to see
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    sys.exit(code)


if __name__ == "__main__":
    main(sys.argv[1:])
