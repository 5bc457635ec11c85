"""Request indices for the client worker processes, with no lock a killed worker could hold.

A closed loop over several workers needs one global counter: the next request of the phase
goes to whichever slot, in whichever worker, frees first (so the last send is made while every
other slot is still busy, as with one loop: docs/measurement.md's window). The counter is a pipe.
The orchestrator writes the phase's request indices into it (4 bytes each); every worker
reads 4 bytes per request. The kernel serialises the reads of a pipe and hands each record to
exactly one reader, and it holds its pipe lock only inside the system call: a worker SIGKILLed
at any moment leaves nothing held (a record it had read is lost with it, and its point fails
anyway). A shared `multiprocessing.Value` with its lock, which this replaces, stayed locked
forever when its holder was killed.

Records never tear: every write is a multiple of 4 bytes and the kernel fills a pipe page by
page (4096 bytes = 1024 records), so a 4-byte read never straddles two pieces. The pipe is
sized to hold the whole phase where the kernel allows it (fs.pipe-max-size, 1 MiB = 262,144
requests by default); what does not fit is written by a feeder thread while the workers drain
it. Once everything is written the write end is closed, and a reader that finds the pipe empty
then reads end of file: the phase is over for it.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import select
import threading
from multiprocessing import connection

import numpy as np

RECORD_BYTES = 4  # one request index, little-endian unsigned
WAIT = -1  # take(): nothing queued just now, more is on its way (await more())
FEED_POLL_S = 0.2  # the feeder thread notices stop() within this
MAX_WRITE_BYTES = 1 << 16  # per write: the feeder keeps topping up rather than waiting for a big hole


def _grow(fd: int, wanted_bytes: int) -> int:
    """Ask the kernel for a pipe of at least `wanted_bytes` (capped by fs.pipe-max-size); the size it has."""
    if not hasattr(fcntl, "F_GETPIPE_SZ"):  # not Linux (macOS): the pipe's own size, topped up
        return 0
    size = fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ)
    if wanted_bytes <= size:
        return size
    try:
        with open("/proc/sys/fs/pipe-max-size") as f:
            cap = int(f.read())
    except (OSError, ValueError):
        cap = size
    try:
        return fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, min(wanted_bytes, cap))
    except OSError:  # over the user's pipe-buffer allowance: the feeder thread tops up instead
        return size


class IndexFeed:
    """The orchestrator's side: the indices begin..end-1 of one phase, queued for the workers.

    `reader` is the read end, passed to every worker (as a multiprocessing Connection, so it is
    duplicated into each child); `close()` stops feeding and releases both ends here."""

    def __init__(self, begin: int, end: int):
        r, self._w = os.pipe()
        self.reader = connection.Connection(r, writable=False)
        self.pipe_bytes = _grow(self._w, (end - begin) * RECORD_BYTES)  # 0: not known here
        os.set_blocking(self._w, False)
        self._pending = memoryview(np.arange(begin, end, dtype="<u4").tobytes())
        self._lock = threading.Lock()  # this process only: the feeder thread and stop() share the write end
        self._thread: threading.Thread | None = None
        self._write()
        if self._pending:
            self._thread = threading.Thread(target=self._feed, name="bench-index-feed", daemon=True)
            self._thread.start()
        else:
            self._close_write()

    def _write(self) -> None:
        while self._pending:
            try:
                n = os.write(self._w, self._pending[:MAX_WRITE_BYTES])
            except BlockingIOError:
                return
            self._pending = self._pending[n:]

    def _feed(self) -> None:
        while True:
            with self._lock:
                fd = self._w
            try:
                select.select([], [fd], [], FEED_POLL_S)
            except (OSError, ValueError):  # stop() closed it meanwhile
                pass
            with self._lock:
                if self._w < 0:  # stopped
                    return
                self._write()
                if not self._pending:
                    self._close_write_locked()
                    return

    def _close_write_locked(self) -> None:
        if self._w >= 0:
            os.close(self._w)
            self._w = -1

    def _close_write(self) -> None:
        with self._lock:
            self._close_write_locked()

    def stop(self) -> None:
        """Queue nothing more: the workers read what is queued, then end of file."""
        with self._lock:
            self._pending = self._pending[:0]
            self._close_write_locked()

    def close(self) -> None:
        self.stop()
        if self._thread is not None:
            self._thread.join(2 * FEED_POLL_S)
        self.reader.close()


class PipeWork:
    """A worker's side: the next request index of a phase (bench.load.loop.LoadLoop's `work`).

    `readers` maps each phase's first request index to its feed's read end (IndexFeed.reader)."""

    def __init__(self, readers: dict[int, connection.Connection]):
        self._readers = readers  # kept open for the worker's life
        self._fd = -1
        self._waiter: asyncio.Future | None = None

    def start(self, begin: int, end: int) -> None:
        self._fd = self._readers[begin].fileno()
        os.set_blocking(self._fd, False)
        self._waiter = None

    def take(self) -> int | None:
        """The next index; None at the phase's end; WAIT when none is queued just now."""
        try:
            b = os.read(self._fd, RECORD_BYTES)
        except BlockingIOError:
            return WAIT
        if len(b) == RECORD_BYTES:
            return int.from_bytes(b, "little")
        if not b:
            return None
        raise RuntimeError(f"read {len(b)} bytes of a {RECORD_BYTES}-byte request index from the work pipe")

    async def more(self) -> None:
        """Wait until the feed is readable again: more indices, or its end (the orchestrator's
        end of file: it closed the feed, or it is gone)."""
        if self._waiter is None or self._waiter.done():
            loop = asyncio.get_running_loop()
            fut, fd = loop.create_future(), self._fd

            def readable() -> None:
                loop.remove_reader(fd)
                if not fut.done():
                    fut.set_result(None)

            loop.add_reader(fd, readable)
            self._waiter = fut
        await self._waiter
