"""A plan trimmed to a budget in dollars or device-hours (`bench plan/sweep --budget-usd X
--budget-h H`, docs/timing.md). Pure: the seconds come from an estimate (bench.results.estimate).

Order: points are dropped from the end of the plan (its last configuration's last point
first), one at a time, until the estimate fits; a configuration left with no point drops its
engine start too. The first configurations are kept whole as long as possible, so what is
kept is what `bench sweep` would have measured first anyway. A plan whose first point (with
its engine start) does not fit is refused.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.errors import ConfigError
from bench.plan.plan import Plan, Skipped


@dataclass(frozen=True)
class Budget:
    """A spending limit: dollars and/or device-hours (None: no limit of that kind)."""

    usd: float | None = None
    device_hours: float | None = None

    def fits(self, seconds: float, n_devices: int, usd_per_device_h: float | None) -> bool:
        hours = seconds / 3600 * n_devices
        if self.device_hours is not None and hours > self.device_hours:
            return False
        if self.usd is not None:
            if usd_per_device_h is None:
                raise ConfigError("--budget-usd needs a rental price: the hardware's catalog entry has none "
                                  "(give --price-usd-h, or use --budget-h)")
            if hours * usd_per_device_h > self.usd:
                return False
        return True


def plan_seconds(plan: Plan, start_s: dict[str, float], point_s: dict[str, float], overhead_s: float = 0.0) -> float:
    """Estimated wall seconds of `plan`: one start per configuration that has points, every
    point, and the run's fixed overhead."""
    configs = {p.engine_config_id for p in plan.points}
    return overhead_s + sum(start_s[c] for c in configs) + sum(point_s[p.point_id] for p in plan.points)


def trim_plan(plan: Plan, budget: Budget, start_s: dict[str, float], point_s: dict[str, float], *,
              usd_per_device_h: float | None, overhead_s: float = 0.0) -> Plan:
    """`plan` with points dropped from its end until its estimate fits `budget`; the dropped
    points are `skipped` with the reason, configurations left empty move to
    `skipped_engine_configs`. ConfigError when not even the first point fits."""
    n = plan.n_devices
    kept = list(plan.points)
    while kept and not budget.fits(plan_seconds(plan.model_copy(update={"points": kept}), start_s, point_s,
                                                overhead_s), n, usd_per_device_h):
        kept.pop()
    if not kept:
        first = plan.points[0] if plan.points else None
        need = plan_seconds(plan.model_copy(update={"points": [first]}), start_s, point_s, overhead_s) if first else 0
        raise ConfigError(f"over budget: not even the first point fits (it needs about {need / 3600 * n:.3g} "
                          f"device-hours{_usd(need, n, usd_per_device_h)}); raise --budget-usd/--budget-h")
    if len(kept) == len(plan.points):
        return plan
    reason = f"over budget ({_limit(budget)}): dropped from the end of the plan"
    dropped = [Skipped(point=p, reason=reason) for p in plan.points[len(kept):]]
    live = {p.engine_config_id for p in kept}
    return plan.model_copy(update={
        "points": kept, "skipped": [*plan.skipped, *dropped],
        "engine_configs": [c for c in plan.engine_configs if c.config_id() in live],
        "skipped_engine_configs": [*plan.skipped_engine_configs,
                                   *[c for c in plan.engine_configs if c.config_id() not in live]],
    })


def _usd(seconds: float, n: int, price: float | None) -> str:
    return f", ${seconds / 3600 * n * price:.3g}" if price is not None else ""


def _limit(budget: Budget) -> str:
    parts = ([f"${budget.usd:g}"] if budget.usd is not None else []) + (
        [f"{budget.device_hours:g} device-h"] if budget.device_hours is not None else [])
    return ", ".join(parts)
