"""Intervals over repeats, pure: n, mean, sd, CV and the Student-t 95% interval of the mean
of a figure measured N times, the ratio of two such figures with its interval, and the
convergence rule of adaptive repeats.

    iv = summarize([101.0, 98.5, 103.2])    # Interval(n=3, mean=100.9, sd=2.35, cv=0.0233, lo=95.06, hi=106.7)
    r = ratio_interval(b, a)                 # Ratio(value=b.mean / a.mean, lo, hi, verdict)
    converged([101.0, 98.5, 103.2], 0.05)   # the 95% interval narrower than 5% of the mean (either side)

A ratio's interval is the delta method on the log of the ratio (docs/compare.md, "Significance"):
se(log R)^2 = CV_a^2 / n_a + CV_b^2 / n_b, with Welch-Satterthwaite degrees of freedom and
Student t; R x exp(+-t x se). With three to five repeats a bootstrap has too few distinct
resamples (10 for n = 3) to give a stable interval; the delta method is closed form,
deterministic and is what AIPerf's per-figure intervals extend to. A figure measured once has
no interval: its Interval says `single`, a ratio with it is labelled "single run".
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable
from dataclasses import dataclass

CONFIDENCE = 0.95  # two-sided
NOT_DISTINGUISHABLE = "not distinguishable"
SINGLE_RUN = "single run"

# Two-sided 95% Student t quantiles, t(0.975, df), to 4 decimals (any statistics table); used
# only where scipy is missing. Between rows the next smaller df is used (a wider interval).
T95 = {1: 12.7062, 2: 4.3027, 3: 3.1824, 4: 2.7764, 5: 2.5706, 6: 2.4469, 7: 2.3646, 8: 2.3060, 9: 2.2622,
       10: 2.2281, 11: 2.2010, 12: 2.1788, 13: 2.1604, 14: 2.1448, 15: 2.1314, 16: 2.1199, 17: 2.1098,
       18: 2.1009, 19: 2.0930, 20: 2.0860, 21: 2.0796, 22: 2.0739, 23: 2.0687, 24: 2.0639, 25: 2.0595,
       26: 2.0555, 27: 2.0518, 28: 2.0484, 29: 2.0452, 30: 2.0423, 40: 2.0211, 60: 2.0003, 120: 1.9799}
Z95 = 1.9600


@functools.lru_cache(maxsize=1024)  # scipy's ppf costs ~1 ms a call; a comparison asks the same df hundreds of times
def t_quantile(df: float, confidence: float = CONFIDENCE) -> float:
    """The two-sided Student t quantile t((1 + confidence) / 2, df); df may be fractional
    (Welch). scipy's when installed, else the pinned 95% table (only 95% without scipy)."""
    if not df >= 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    try:
        from scipy.stats import t
    except ImportError:
        return t95_table(df, confidence)
    return float(t.ppf((1 + confidence) / 2, df))


def t95_table(df: float, confidence: float = CONFIDENCE) -> float:
    """t(0.975, df) from the pinned table: the row of the largest tabled df <= `df`."""
    if confidence != CONFIDENCE:
        raise ValueError("without scipy only 95% intervals are available")
    rows = [k for k in T95 if k <= df]
    return T95[max(rows)] if df < 1000 else Z95


@dataclass(frozen=True)
class Interval:
    """One figure over its repeats: n values, their mean, sample sd (n - 1), CV = sd / |mean|,
    the standard error `sem` with its degrees of freedom `df`, and the Student-t interval
    [lo, hi] of the mean, in the figure's own unit. n = 1: sd, cv, sem, lo and hi are None."""

    n: int
    mean: float
    sd: float | None = None
    cv: float | None = None
    sem: float | None = None
    df: float | None = None
    lo: float | None = None
    hi: float | None = None
    confidence: float = CONFIDENCE

    @property
    def single(self) -> bool:
        """Measured once (or with no spread estimate): no interval."""
        return self.sem is None

    @property
    def half_width(self) -> float | None:
        return None if self.lo is None or self.hi is None else (self.hi - self.lo) / 2

    def text(self, fmt=lambda v: f"{v:.4g}") -> str:
        """'mean [lo, hi] (n=3)' or 'value (single run)'."""
        if self.single or self.lo is None or self.hi is None:
            return f"{fmt(self.mean)} ({SINGLE_RUN})"
        return f"{fmt(self.mean)} [{fmt(self.lo)}, {fmt(self.hi)}] (n={self.n})"


def summarize(values: Iterable[float | None], confidence: float = CONFIDENCE) -> Interval | None:
    """The Interval of the finite values (None and NaN left out); None when there are none."""
    xs = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not xs:
        return None
    n = len(xs)
    mean = math.fsum(xs) / n
    if n == 1:
        return Interval(n=1, mean=mean, confidence=confidence)
    sd = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1))
    sem = sd / math.sqrt(n)
    half = t_quantile(n - 1, confidence) * sem
    return Interval(n=n, mean=mean, sd=sd, cv=sd / abs(mean) if mean else None, sem=sem, df=n - 1,
                    lo=mean - half, hi=mean + half, confidence=confidence)


def blend(a: Interval, b: Interval, w: float) -> Interval:
    """(1 - w) x a + w x b (a value read between two measured points, 0 <= w <= 1), the two
    independent: sem^2 = (1-w)^2 sem_a^2 + w^2 sem_b^2, Welch-Satterthwaite df; single when
    either side with a weight is single. n is the smaller n of the sides weighed in."""
    mean = (1 - w) * a.mean + w * b.mean
    sides = [(c, s) for c, s in ((1 - w, a), (w, b)) if c > 0]
    n = min(s.n for _, s in sides)
    if any(s.single for _, s in sides):
        return Interval(n=n, mean=mean, confidence=a.confidence)
    parts = [(c * s.sem) ** 2 for c, s in sides]  # type: ignore[operator]
    var = math.fsum(parts)
    df = _welch(parts, [s.df for _, s in sides])  # type: ignore[misc]
    sem = math.sqrt(var)
    half = t_quantile(df, a.confidence) * sem if sem > 0 else 0.0
    return Interval(n=n, mean=mean, sd=sem * math.sqrt(n), cv=sem * math.sqrt(n) / abs(mean) if mean else None,
                    sem=sem, df=df, lo=mean - half, hi=mean + half, confidence=a.confidence)


@dataclass(frozen=True)
class Ratio:
    """num / den of two figures' means, with the interval of the ratio (delta method on the log)
    and the verdict: "higher" / "lower" (the interval excludes 1), "not distinguishable" (it
    covers 1) or "single run" (a side measured once: no interval, lo and hi None)."""

    value: float
    lo: float | None
    hi: float | None
    verdict: str
    n_num: int
    n_den: int

    def text(self) -> str:
        if self.lo is None or self.hi is None:
            return f"{self.value:.3f} ({self.verdict})"
        return f"{self.value:.3f} [{self.lo:.3f}, {self.hi:.3f}] {self.verdict}"


def ratio_interval(num: Interval, den: Interval) -> Ratio | None:
    """The ratio num.mean / den.mean with its interval; None when either mean is not positive
    (a ratio of throughputs, energies or prices is of positive figures)."""
    if not (num.mean > 0 and den.mean > 0):
        return None
    value = num.mean / den.mean
    if num.single or den.single:
        return Ratio(value, None, None, SINGLE_RUN, num.n, den.n)
    parts = [(num.sem / num.mean) ** 2, (den.sem / den.mean) ** 2]  # type: ignore[operator]
    se = math.sqrt(math.fsum(parts))
    if se == 0:
        lo = hi = value
    else:
        t = t_quantile(_welch(parts, [num.df, den.df]), num.confidence)  # type: ignore[list-item]
        lo, hi = value * math.exp(-t * se), value * math.exp(t * se)
    verdict = NOT_DISTINGUISHABLE if lo <= 1 <= hi else ("higher" if lo > 1 else "lower")
    return Ratio(value, lo, hi, verdict, num.n, den.n)


def converged(values: Iterable[float | None], share: float, confidence: float = CONFIDENCE) -> bool:
    """AIPerf's convergence rule: at least two values and the interval's half-width at most
    `share` x |mean| (share 0.05: mean +- 5%)."""
    iv = summarize(values, confidence)
    if iv is None or iv.single or iv.half_width is None:
        return False
    return iv.half_width <= share * abs(iv.mean)


def _welch(variances: list[float], dfs: list[float]) -> float:
    """Welch-Satterthwaite degrees of freedom of a sum of independent variance terms (>= 1)."""
    num = math.fsum(variances) ** 2
    den = math.fsum(v * v / d for v, d in zip(variances, dfs) if d)
    return max(1.0, num / den) if den > 0 else max(1.0, min(dfs))
