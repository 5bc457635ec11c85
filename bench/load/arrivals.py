"""Arrival times of an open-loop (rate) load.

The load a point runs under is `bench.plan.points.LoadSpec` (ConcurrencyLoad | RateLoad |
TraceLoad | OfflineLoad); a rate load's arrival process is drawn here.

Rate arrivals follow vLLM's `--burstiness`: gaps ~ Gamma(shape=b, scale=1/(rate*b)), so
the mean gap is 1/rate and the coefficient of variation is 1/sqrt(b); b = 1 is Poisson
(exponential gaps), b < 1 burstier, b > 1 more regular. Seeded, never the global RNG.
"""

from __future__ import annotations

import math

import numpy as np

from bench.errors import ConfigError
from bench.plan.points import ARRIVALS  # the names, once (bench.plan.points.Arrival)


def arrival_gaps_s(n: int, rate_rps: float, arrival: str = "poisson", burstiness: float = 1.0,
                   seed: int = 0) -> np.ndarray:
    """`n` gaps in seconds between consecutive sends; the first request goes at gap[0] = 0."""
    if arrival not in ARRIVALS:
        raise ConfigError(f"unknown arrival {arrival!r} (known: {', '.join(ARRIVALS)})")
    if n <= 0:
        return np.zeros(0)
    if math.isinf(rate_rps):
        return np.zeros(n)
    rng = np.random.default_rng(seed)
    shape = 1.0 if arrival == "poisson" else burstiness
    gaps = rng.gamma(shape, 1.0 / (rate_rps * shape), size=n)
    gaps[0] = 0.0
    return gaps


def arrival_offsets_s(n: int, rate_rps: float, arrival: str = "poisson", burstiness: float = 1.0,
                      seed: int = 0) -> np.ndarray:
    """Send times in seconds after the start of the load, nondecreasing, first = 0."""
    return np.cumsum(arrival_gaps_s(n, rate_rps, arrival, burstiness, seed))
