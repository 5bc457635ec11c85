"""Load shapes: a fixed concurrency (closed loop) or a request rate with an arrival process.

    {"kind": "concurrency", "concurrency": 64}
    {"kind": "rate", "rate_rps": 8.0, "arrival": "poisson" | "gamma", "burstiness": 1.0,
     "max_concurrency": None}

Rate arrivals follow vLLM's `--burstiness`: gaps ~ Gamma(shape=b, scale=1/(rate*b)), so
the mean gap is 1/rate and the coefficient of variation is 1/sqrt(b); b = 1 is Poisson
(exponential gaps), b < 1 burstier, b > 1 more regular. Seeded, never the global RNG.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from bench.errors import ConfigError

ARRIVALS = ("poisson", "gamma")


@dataclass(frozen=True)
class ConcurrencyLoad:
    """Closed loop: `concurrency` requests in flight; a new one is sent as soon as one ends."""

    concurrency: int
    kind: str = "concurrency"


@dataclass(frozen=True)
class RateLoad:
    """Open loop: requests sent at `rate_rps` (inf = all at once), optionally capped in flight."""

    rate_rps: float
    arrival: str = "poisson"
    burstiness: float = 1.0
    max_concurrency: int | None = None
    kind: str = "rate"


def parse_load(load: dict) -> ConcurrencyLoad | RateLoad:
    """Validate a load dict; unknown kinds or keys raise ConfigError naming them."""
    if not isinstance(load, dict):
        raise ConfigError(f"load must be a mapping, got {type(load).__name__}")
    kind = load.get("kind")
    allowed = {"concurrency": {"kind", "concurrency"},
               "rate": {"kind", "rate_rps", "arrival", "burstiness", "max_concurrency"}}
    if kind not in allowed:
        raise ConfigError(f"unknown load kind {kind!r} (known: concurrency, rate)")
    extra = set(load) - allowed[kind]
    if extra:
        raise ConfigError(f"unknown key(s) in {kind} load: {', '.join(sorted(extra))}")
    if kind == "concurrency":
        c = load.get("concurrency")
        if not isinstance(c, int) or c < 1:
            raise ConfigError(f"concurrency must be an integer >= 1, got {c!r}")
        return ConcurrencyLoad(c)
    rate = float(load.get("rate_rps", 0))
    arrival = load.get("arrival") or "poisson"
    burstiness = float(load.get("burstiness") if load.get("burstiness") is not None else 1.0)
    cap = load.get("max_concurrency")
    if not rate > 0:
        raise ConfigError(f"rate_rps must be > 0 (inf for all at once), got {load.get('rate_rps')!r}")
    if arrival not in ARRIVALS:
        raise ConfigError(f"unknown arrival {arrival!r} (known: {', '.join(ARRIVALS)})")
    if not burstiness > 0:
        raise ConfigError(f"burstiness must be > 0, got {burstiness}")
    if arrival == "poisson" and burstiness != 1.0:
        raise ConfigError("poisson arrivals have burstiness 1; use arrival: gamma for another burstiness")
    if cap is not None and (not isinstance(cap, int) or cap < 1):
        raise ConfigError(f"max_concurrency must be an integer >= 1, got {cap!r}")
    return RateLoad(rate, arrival, burstiness, cap)


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
