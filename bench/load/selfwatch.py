"""Each client loop watches itself: is it the bottleneck of the point it drives?

Three figures over the measured phase, per worker (or for the in-process loop):
- event-loop lag (bench.load.looplag): every stamp is taken on the loop, so a late loop
  stamps late by as much;
- CPU share: CPU seconds of this process / wall seconds (1.0 = one core fully busy, the
  loop's capacity);
- socket backlog: bytes already received by the kernel but not yet read by the client
  (FIONREAD), sampled over a rotating handful of the open connections; data waiting
  there will be stamped late.
"""

from __future__ import annotations

import fcntl
import struct
import termios
import time
from typing import Self

from bench.load.looplag import LoopLagMonitor
from bench.load.types import LoopStats

BACKLOG_EVERY_S = 0.1  # between backlog samples
BACKLOG_SOCKETS = 32  # connections read per sample (rotating), so a sample costs microseconds


def _queued_bytes(conn) -> int | None:
    """Bytes waiting in the receive queue of `conn`'s socket; None when it cannot be read."""
    sock = conn.transport.get_extra_info("socket") if conn.transport is not None else None
    if sock is None:
        return None
    try:
        raw = fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0")
    except (OSError, ValueError):
        return None
    return struct.unpack("i", raw)[0]


class SelfWatch:
    """Async context manager over the measured phase of one loop; `stats()` after it."""

    def __init__(self, client, clock=time.perf_counter):
        self.client, self.clock = client, clock
        self.lag = LoopLagMonitor(clock=clock)
        self.backlog: list[int] = []
        self._rot = 0
        self._handle = None
        self._t0 = self._cpu0 = 0.0
        self.wall_s = self.cpu_s = 0.0

    async def __aenter__(self) -> Self:
        import asyncio

        self._t0, self._cpu0 = self.clock(), time.process_time()
        await self.lag.__aenter__()
        loop = asyncio.get_running_loop()
        self._handle = loop.call_later(BACKLOG_EVERY_S, self._sample, loop)
        return self

    async def __aexit__(self, *exc) -> None:
        await self.lag.__aexit__(*exc)
        if self._handle is not None:
            self._handle.cancel()
        self.wall_s = self.clock() - self._t0
        self.cpu_s = time.process_time() - self._cpu0

    def _sample(self, loop) -> None:
        conns = self.client.connections
        if conns:
            k = min(BACKLOG_SOCKETS, len(conns))
            start = self._rot % len(conns)
            picked = (conns[start:] + conns[:start])[:k]
            self._rot += k
            for c in picked:
                q = _queued_bytes(c)
                if q is not None:
                    self.backlog.append(q)
        self._handle = loop.call_later(BACKLOG_EVERY_S, self._sample, loop)

    def stats(self, index: int = 0, pid: int | None = None) -> LoopStats:
        """Loop lag (s), CPU (s and share of one core), socket backlog (bytes per connection) of
        worker `index` (process `pid`; None: the in-process loop)."""
        b = sorted(self.backlog)
        return LoopStats(
            **self.lag.summary(), cpu_s=self.cpu_s, wall_s=self.wall_s,
            cpu_share=self.cpu_s / self.wall_s if self.wall_s > 0 else None,
            backlog_bytes_max=b[-1] if b else None,
            backlog_bytes_p99=b[min(len(b) - 1, int(0.99 * len(b)))] if b else None,
            backlog_samples=len(b), index=index, pid=pid)
