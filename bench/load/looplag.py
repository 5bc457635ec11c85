"""How late the client's event loop runs: a self-check that the client is not the bottleneck.

Every arrival and send stamp is taken on the event loop; when the loop is busy (or the
client process is starved of CPU) stamps are late by up to the loop's lag. A task that
asks to sleep `interval_s` and records how late it wakes measures that lag directly.
"""

from __future__ import annotations

import asyncio
import time
from typing import Self

import numpy as np


class LoopLagMonitor:
    """Async context manager sampling the running loop's lag (s) while it is entered."""

    def __init__(self, interval_s: float = 0.01, clock=time.perf_counter):
        self.interval_s = interval_s
        self.clock = clock
        self.lags_s: list[float] = []
        self._task: asyncio.Task | None = None

    async def _run(self) -> None:
        while True:
            t0 = self.clock()
            await asyncio.sleep(self.interval_s)
            self.lags_s.append(max(0.0, self.clock() - t0 - self.interval_s))

    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc) -> None:
        task = self._task
        if task is None:  # never entered
            return
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass

    def summary(self) -> dict:
        """`loop_lag_s_p50/p99/max` and the sample count; None figures without samples."""
        if not self.lags_s:
            return {"loop_lag_s_p50": None, "loop_lag_s_p99": None, "loop_lag_s_max": None, "loop_lag_samples": 0}
        a = np.asarray(self.lags_s)
        return {"loop_lag_s_p50": float(np.percentile(a, 50)), "loop_lag_s_p99": float(np.percentile(a, 99)),
                "loop_lag_s_max": float(a.max()), "loop_lag_samples": int(a.size)}
