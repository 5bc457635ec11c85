"""The adaptive stop of a concurrency point (bench.plan.adaptive.AdaptiveStop, docs/timing.md).

The headline figure is the point's output tokens per second. At a fixed concurrency c every
slot is busy, so by Little's law throughput = c x mean(output tokens) / mean(e2e): with equal
output lengths (ignore_eos) its relative interval is that of the mean end-to-end latency of the
finished measured requests, a Student-t interval (MLPerf's early stopping and AIPerf's
convergence rule stop on the same kind of bound). The check runs at most every CHECK_EVERY_S
of the client's clock: it scans the records, and must not load the event loop it shares with
the requests.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable

from bench.load.records import RequestRecord
from bench.plan.adaptive import AdaptiveStop

CHECK_EVERY_S = 0.2


def interval_share(e2e_s: list[float], confidence: float) -> float | None:
    """Half-width of the `confidence` interval of mean(e2e_s), as a share of the mean (None:
    fewer than 2 samples or a zero mean)."""
    from scipy.stats import t

    n = len(e2e_s)
    mean = statistics.fmean(e2e_s) if n else 0.0
    if n < 2 or mean <= 0:
        return None
    half = t.ppf(0.5 + confidence / 2, n - 1) * statistics.stdev(e2e_s) / math.sqrt(n)
    return float(half / mean)


class Convergence:
    """`should_stop()` for a point's LoadLoop: True once `rule` is met by the finished measured
    requests of `records` (the first `n_warmup` are the warm-up); `converged` stays True after."""

    def __init__(self, rule: AdaptiveStop, records: list[RequestRecord], n_warmup: int,
                 clock: Callable[[], float] = time.perf_counter):
        self.rule, self.records, self.n_warmup, self.clock = rule, records, n_warmup, clock
        self.converged = False
        self.share: float | None = None  # the last interval share computed
        self._next_check = 0.0

    def __call__(self) -> bool:
        if self.converged:
            return True
        now = self.clock()
        if now < self._next_check:
            return False
        self._next_check = now + CHECK_EVERY_S
        e2e = [r.e2e_s for r in self.records[self.n_warmup:] if r.t_done is not None and r.ok and r.e2e_s is not None]
        if len(e2e) < self.rule.min_requests:
            return False
        self.share = interval_share([x for x in e2e if x is not None], self.rule.confidence)
        self.converged = self.share is not None and self.share < self.rule.rel_half_width
        return self.converged
