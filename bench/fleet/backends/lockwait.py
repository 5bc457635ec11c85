"""The local backend's lock waiter: `python -m bench.fleet.backends.lockwait SHARD_DIR
LOCK_DIR LOCK... -- COMMAND...` takes the locks (waiting while another shard holds one),
then becomes COMMAND with the locks held (bench.fleet.backends.local).

Standard library only: it runs once per shard before the shard's own process, and every
second it spends importing is a second the shard starts later (bench.fleet.backends.local
imports the store and the fleet's pydantic records: about 1.4 s on a busy 2-core box, 3 s while
bench.results.schema imported pandas at its top; this module 0.05 s).
"""

from __future__ import annotations

import fcntl
import os
import sys
from pathlib import Path


def main(argv: list[str]) -> None:
    """Take each lock (exclusive, in one order for every shard: no two wait on each other),
    drop the shard's `queued` mark, then exec COMMAND."""
    sep = argv.index("--")
    folder, lock_dir, locks, command = Path(argv[0]), Path(argv[1]), argv[2:sep], argv[sep + 1:]
    for name in sorted(locks):
        fd = os.open(lock_dir / f"{name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.set_inheritable(fd, True)  # held by COMMAND after the exec; the OS drops it when it dies
    (folder / "queued").unlink(missing_ok=True)
    os.execv(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1:])
