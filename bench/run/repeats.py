"""Adaptive repeats on one engine: after each finished point, the later repeats of the same
load point are dropped once the Student-t 95% interval of the watched figure over its valid
repeats is narrow enough (bench.plan.sweepfile.RepeatUntil; AIPerf's convergence rule). A
dropped repeat is recorded as skipped with the reason, never silently left out.

    stop = AdaptiveRepeats(plan.repeat_until)
    keep, dropped = stop.after(point_result, pending)
"""

from __future__ import annotations

from bench.measure.intervals import converged, summarize
from bench.plan import PointSpec
from bench.plan.sweepfile import RepeatUntil
from bench.results import PointResult
from bench.results.repeats import HEADLINE, repeat_key
from bench.run.status import CONVERGED

_WHERE = {key: where for key, where, _ in HEADLINE}


class AdaptiveRepeats:
    """Per load point, the watched figure of each valid repeat so far."""

    def __init__(self, rule: RepeatUntil):
        self.rule = rule
        self.values: dict[str, list[float | None]] = {}

    def after(self, result: PointResult, pending: list[PointSpec]) -> tuple[list[PointSpec], list[tuple[PointSpec, str]]]:
        """(the pending points to run, [(dropped repeat, why)]) after `result` finished."""
        key = repeat_key(result.point_id)
        values = self.values.setdefault(key, [])
        if result.status == "ok" and result.valid:
            group = getattr(result, _WHERE[self.rule.metric], None)
            values.append(getattr(group, self.rule.metric, None) if group is not None else None)
        n = sum(v is not None for v in values)
        if n < self.rule.min_repeats or not converged(values, self.rule.share):
            return pending, []
        iv = summarize(values)
        why = (f"{CONVERGED}: the 95% interval of {self.rule.metric} over {n} valid repeats, "
               f"{iv.lo:.4g}-{iv.hi:.4g}, is within {self.rule.share:.0%} of its mean {iv.mean:.4g}"
               if iv is not None and iv.lo is not None and iv.hi is not None else CONVERGED)
        keep = [p for p in pending if repeat_key(p.point_id) != key]
        return keep, [(p, why) for p in pending if repeat_key(p.point_id) == key]
