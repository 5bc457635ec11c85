"""The SLO capacity search: the largest request rate (or concurrency) whose repeated
measurements meet every SLO with a stated confidence. Pure: no I/O; the runner measures.

    search = CapacitySearch(parse_slo("ttft_p95=2s,tpot_p95=100ms"), kind="rate", repeats=3)
    while (level := search.next_level()) is not None:
        search.record(level, [metrics_of_each_repeat...])     # dicts with e.g. ttft_s_p95
    search.boundary   # the largest level that passed (None: none did)

Bracket, then bisect. From `start` the level doubles until one fails (or `max_level` passes);
if `start` fails it halves until one passes (at most `MAX_HALVINGS` times). Then the midpoint
of the last pass and the first fail is measured, and the bracket shrinks, until its width is
at most `tolerance` x the passing level (rates) or 1 (concurrency), or `max_steps` bisections.
A level passes when, for every SLO, the one-sided upper confidence bound of the repeats'
values, mean + t(confidence, repeats - 1) x sd / sqrt(repeats) (Student t), is within the
limit; with one repeat, the value itself.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, model_validator

from bench.errors import ConfigError
from bench.plan.points import PositiveInt, Rate

# The search's defaults, the one place: the sweep file's `capacity:` schema, `bench capacity`'s
# help and `CapacitySearch` read them.
DEFAULT_LOAD: Literal["rate", "concurrency"] = "rate"
DEFAULT_REPEATS = 3
DEFAULT_START = 1.0  # first level (requests/s or requests)
DEFAULT_TOLERANCE = 0.1  # rates: stop when the bracket is within this share of the passing level
DEFAULT_MAX_STEPS = 8  # bisections at most
MAX_LEVEL = {"concurrency": 4096.0, "rate": 1e4}  # highest level tried when none is given

METRICS = {"ttft": "ttft_s", "tpot": "tpot_s", "itl": "itl_s", "e2e": "e2e_s",
           "ttft_sched": "ttft_sched_s", "e2e_sched": "e2e_sched_s"}
STATS = ("p50", "p90", "p95", "p99", "mean")
MAX_HALVINGS = 8
# One-sided Student t quantiles for 95% confidence, by degrees of freedom (beyond: normal).
T95 = {1: 6.314, 2: 2.920, 3: 2.353, 4: 2.132, 5: 2.015, 6: 1.943, 7: 1.895, 8: 1.860, 9: 1.833, 10: 1.812}
_SLO_ITEM = re.compile(r"^\s*([a-z0-9_]+)_(p50|p90|p95|p99|mean)\s*=\s*([0-9.]+(?:e-?[0-9]+)?)\s*(ms|s)?\s*$")


def parse_slo(text: str) -> dict[str, float]:
    """'ttft_p95=2s,tpot_p95=100ms' -> {'ttft_s_p95': 2.0, 'tpot_s_p95': 0.1} (metric keys, seconds)."""
    out: dict[str, float] = {}
    for item in str(text).split(","):
        if not item.strip():
            continue
        m = _SLO_ITEM.match(item)
        if m is None or m.group(1) not in METRICS:
            raise ConfigError(f"bad SLO '{item.strip()}' (expected METRIC_STAT=VALUE[s|ms], METRIC one of "
                              f"{', '.join(METRICS)}, STAT one of {', '.join(STATS)}; e.g. ttft_p95=2s)")
        value = float(m.group(3)) * (1e-3 if m.group(4) == "ms" else 1.0)
        if value <= 0:
            raise ConfigError(f"bad SLO '{item.strip()}': the limit must be > 0")
        out[f"{METRICS[m.group(1)]}_{m.group(2)}"] = value
    if not out:
        raise ConfigError("no SLO given (e.g. --slo ttft_p95=2s,tpot_p95=100ms)")
    return out


def upper_bound(values: list[float], confidence_t: dict[int, float] = T95) -> float:
    """One-sided upper confidence bound of the mean of `values` (the value itself for one)."""
    n = len(values)
    mean = sum(values) / n
    if n == 1:
        return mean
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return mean + confidence_t.get(n - 1, 1.645) * sd / math.sqrt(n)


@dataclass
class Step:
    """One measured level: its repeats' SLO values and bounds, and the verdict."""

    level: float
    values: dict[str, list[float | None]]
    bounds: dict[str, float | None]
    passed: bool
    why: str = ""

    def to_dict(self) -> dict:
        return {"level": self.level, "passed": self.passed, "why": self.why, "values": self.values,
                "upper_bounds": self.bounds}


class CapacitySettings(BaseModel):
    """`capacity:` of a sweep file, with `bench capacity`'s flags applied: the SLO capacity
    search to run (`CapacitySearch.from_settings`)."""

    model_config = ConfigDict(extra="forbid")

    slo: str  # e.g. "ttft_p95=2s,tpot_p95=100ms" (parse_slo)
    load: Literal["rate", "concurrency"] = DEFAULT_LOAD
    repeats: PositiveInt = DEFAULT_REPEATS
    start: Rate | None = None  # None: DEFAULT_START
    max_level: Rate | None = None  # None: MAX_LEVEL of the load
    tolerance: Rate = DEFAULT_TOLERANCE
    max_steps: PositiveInt = DEFAULT_MAX_STEPS

    @model_validator(mode="after")
    def _slo_parses(self) -> CapacitySettings:
        parse_slo(self.slo)
        return self


@dataclass
class CapacitySearch:
    """Bracket-then-bisect over rate (float) or concurrency (int) levels."""

    slo: dict[str, float]
    kind: str = DEFAULT_LOAD  # "rate" | "concurrency"
    repeats: int = DEFAULT_REPEATS
    start: float | None = None
    max_level: float | None = None
    tolerance: float = DEFAULT_TOLERANCE  # rates: stop when (fail - pass) <= tolerance x pass
    max_steps: int = DEFAULT_MAX_STEPS  # bisections at most
    steps: list[Step] = field(default_factory=list)
    lo: float | None = None  # largest passing level so far
    hi: float | None = None  # smallest failing level so far
    _bisections: int = 0

    def __post_init__(self) -> None:
        if self.kind not in ("rate", "concurrency"):
            raise ConfigError(f"capacity search over 'rate' or 'concurrency', not {self.kind!r}")
        if self.repeats < 1:
            raise ConfigError("capacity search needs repeats >= 1")
        self.start = self.start or DEFAULT_START
        self.max_level = self.max_level or MAX_LEVEL[self.kind]
        if self.kind == "concurrency":
            self.start = float(max(1, round(self.start)))

    @classmethod
    def from_settings(cls, settings: CapacitySettings) -> CapacitySearch:
        """The search a sweep file's `capacity:` (with the CLI's flags) describes."""
        return cls(parse_slo(settings.slo), kind=settings.load, repeats=settings.repeats, start=settings.start,
                   max_level=settings.max_level, tolerance=settings.tolerance, max_steps=settings.max_steps)

    def _level(self, x: float) -> float:
        return float(max(1, round(x))) if self.kind == "concurrency" else float(f"{x:.4g}")

    def next_level(self) -> float | None:
        """The next level to measure; None when the search is over."""
        if not self.steps:
            return self.start
        if self.hi is None:  # still climbing
            top = self.max_level  # never None after __post_init__
            if self.lo is None or top is None or self.lo >= top:
                return None
            return self._level(min(self.lo * 2, top))
        if self.lo is None:  # still descending from a failing start
            halvings = sum(1 for s in self.steps if not s.passed) - 1
            if halvings >= MAX_HALVINGS or (self.kind == "concurrency" and self.hi <= 1):
                return None
            return self._level(self.hi / 2)
        if self._converged(self.lo, self.hi) or self._bisections >= self.max_steps:
            return None
        mid = self._level((self.lo + self.hi) / 2)
        if mid in (self.lo, self.hi):
            return None
        return mid

    def _converged(self, lo: float, hi: float) -> bool:
        """Whether the bracket [lo (passing), hi (failing)] is narrow enough."""
        if self.kind == "concurrency":
            return hi - lo <= 1
        return hi - lo <= self.tolerance * lo

    def record(self, level: float, repeats: list[dict]) -> Step:
        """The metrics of each repeat at `level` (dicts with the SLO keys; a failed repeat: {})."""
        values = {k: [m.get(k) for m in repeats] for k in self.slo}
        bounds: dict[str, float | None] = {}
        why = []
        for key, limit in self.slo.items():
            vals = values[key]
            measured = [v for v in vals if v is not None]
            if not vals or len(measured) < len(vals):
                bounds[key] = None
                why.append(f"{key} not measured in every repeat")
                continue
            bound = bounds[key] = upper_bound(measured)
            if bound > limit:
                why.append(f"{key} {bound:.4g} s > {limit:g} s")
        step = Step(level, values, bounds, passed=not why, why="; ".join(why))
        if self.lo is not None and self.hi is not None:
            self._bisections += 1
        self.steps.append(step)
        if step.passed:
            self.lo = level if self.lo is None else max(self.lo, level)
        else:
            self.hi = level if self.hi is None else min(self.hi, level)
        return step

    @property
    def boundary(self) -> float | None:
        return self.lo

    def summary(self) -> dict:
        return {"slo": self.slo, "kind": self.kind, "repeats": self.repeats, "confidence": "95% one-sided (Student t)",
                "start": self.start, "max_level": self.max_level, "tolerance": self.tolerance,
                "boundary": self.lo, "first_failing": self.hi, "steps": [s.to_dict() for s in self.steps]}
