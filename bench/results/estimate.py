"""What a plan will cost, from earlier runs of the same model and hardware (`bench plan`
pricing, docs/timing.md). Pure but for `read_history`, which reads run folders.

    history = read_history(Path("runs"))                  # earlier run.json files
    est = estimate_plan(plan, hardware, history)           # -> PlanEstimate
    est.total_s, est.device_hours, est.usd, est.basis_counts()

Each engine start: the median start of earlier starts of the same model, engine and hardware
(`timing.engine_starts`), else the stated fallback. Each point: the median seconds per
measured request of earlier points of the same model, engine, hardware, workload and load
(its wall time, warm-up and drain included, / its measured requests) x its measured requests;
else of any load of that model, engine and hardware; else the fallback. The fallback model is
the plan's own roofline estimate (bench.plan.preflight: a catalog engine start, decode steps at
a share of the catalog bandwidth). The run's fixed overhead (process start, stops, writes) is
the median of earlier runs' wall time not spent in starts or points, else 0.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from bench.errors import BenchError
from bench.plan.plan import Plan
from bench.plan.pointid import PointId
from bench.results.schema import RunResult, read_summary
from bench.results.timing import PlanCheck

Basis = Literal["same load", "same model", "fallback"]
MAX_HISTORY_RUNS = 200  # the newest run folders read; an old results folder stays fast


@dataclass(frozen=True)
class PlanEstimate:
    """A plan's estimated seconds (per start, per point, overhead), its device-hours and dollars."""

    start_s: dict[str, float]  # by config id
    point_s: dict[str, float]  # by point id
    overhead_s: float
    n_devices: int
    usd_per_device_h: float | None
    basis: dict[str, Basis] = field(default_factory=dict)  # by config or point id
    n_runs: int = 0  # earlier runs the estimate read

    @property
    def total_s(self) -> float:
        return self.overhead_s + sum(self.start_s.values()) + sum(self.point_s.values())

    @property
    def device_hours(self) -> float:
        return self.total_s / 3600 * self.n_devices

    @property
    def usd(self) -> float | None:
        return self.device_hours * self.usd_per_device_h if self.usd_per_device_h is not None else None

    def basis_text(self) -> str:
        """'3 from the same load, 1 from the same model, 2 fallback (of 6 starts and points; 4 earlier runs)'."""
        counts = {b: sum(1 for v in self.basis.values() if v == b) for b in ("same load", "same model", "fallback")}
        said = ", ".join(f"{n} {'from the ' + b if b != 'fallback' else b}" for b, n in counts.items() if n)
        return f"{said} (of {len(self.basis)} starts and points; {self.n_runs} earlier runs)"


def read_history(folder: Path, exclude: Path | None = None) -> list[RunResult]:
    """The run.json files directly under `folder` (its newest MAX_HISTORY_RUNS run folders by
    name, which start with a UTC stamp), finished or partial; unreadable ones are left out."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    runs = []
    dirs = sorted((d for d in folder.iterdir() if d.is_dir() and not d.is_symlink()), reverse=True)
    for d in dirs[:MAX_HISTORY_RUNS]:
        if exclude is not None and d.resolve() == Path(exclude).resolve():
            continue
        if (d / "run.json").is_file():
            try:
                runs.append(read_summary(d))
            except BenchError:
                continue
    return runs


def _seconds(a: str | None, b: str | None) -> float | None:
    try:
        return (datetime.fromisoformat(b.replace("Z", "+00:00")) - datetime.fromisoformat(a.replace("Z", "+00:00"))
                ).total_seconds() if a and b else None
    except ValueError:
        return None


def _observations(history: list[RunResult], hardware_id: str):
    """(starts by (model, engine), s/request by (model, engine, workload, load), overheads)."""
    starts: dict[tuple, list[float]] = {}
    per_req: dict[tuple, list[float]] = {}
    overheads: list[float] = []
    for run in history:
        if run.config.hardware_id != hardware_id:
            continue
        walls = []
        for p in run.points:
            cfg = run.config.engine_config(p.engine_config_id)
            wall = p.timing.wall_s if p.timing is not None and p.timing.wall_s else _seconds(p.started_utc, p.finished_utc)
            if p.status != "ok" or not p.n_requests or not wall or wall <= 0:
                continue
            walls.append(wall)
            try:
                pid = PointId.parse(p.point_id)
            except (BenchError, ValueError):
                continue
            per_req.setdefault((cfg.model, cfg.engine, pid.workload, pid.load), []).append(wall / p.n_requests)
        if run.timing is not None:
            for s in run.timing.engine_starts:
                cfg = run.config.engine_config(s.config_id)
                starts.setdefault((cfg.model, cfg.engine), []).append(s.start_s)
            if run.status == "complete":
                overheads.append(max(0.0, run.timing.wall_s - run.timing.start_s - sum(walls)))
    return starts, per_req, overheads


def estimate_plan(plan: Plan, hardware: Any, history: list[RunResult], catalog: Any = None,
                  usd_per_device_h: float | None = None) -> PlanEstimate:
    """`plan` priced on `hardware` from `history` (earlier runs; any hardware, filtered here).
    `usd_per_device_h`: the rental price chosen (default: the catalog's on-demand price)."""
    from bench.plan import preflight as pf

    if catalog is None:
        from bench import catalog
    starts, per_req, overheads = _observations(history, hardware.id)
    kind = "cpu" if hardware.vendor == "cpu" else "gpu"
    basis: dict[str, Basis] = {}
    start_s: dict[str, float] = {}
    point_s: dict[str, float] = {}
    for cfg in plan.engine_configs:
        seen = starts.get((cfg.model, cfg.engine))
        start_s[cfg.config_id()] = statistics.median(seen) if seen else pf.ENGINE_START_S[kind]
        basis[cfg.config_id()] = "same model" if seen else "fallback"
        model = catalog.get_model(cfg.model)
        same_model = [v for (m, e, _, _), vs in per_req.items() if (m, e) == (cfg.model, cfg.engine) for v in vs]
        for p in plan.points_for(cfg.config_id()):
            pid = PointId.parse(p.point_id)
            exact = per_req.get((cfg.model, cfg.engine, pid.workload, pid.load))
            if exact:
                point_s[p.point_id], basis[p.point_id] = statistics.median(exact) * p.n_requests, "same load"
            elif same_model:
                point_s[p.point_id], basis[p.point_id] = statistics.median(same_model) * p.n_requests, "same model"
            else:
                point_s[p.point_id], basis[p.point_id] = pf.estimate_point_s(p, cfg, model, hardware), "fallback"
    price = usd_per_device_h
    if price is None:
        rental = getattr(getattr(hardware, "prices", None), "rental_usd_per_gpu_hour", None)
        price = rental.value if rental is not None else None
    return PlanEstimate(start_s, point_s, statistics.median(overheads) if overheads else 0.0, max(1, plan.n_devices),
                        price, basis, n_runs=len(history))


def priced_plan(plan: Plan, hardware: Any, history: list[RunResult], *, usd_per_device_h: float | None = None,
                budget_usd: float | None = None, budget_h: float | None = None) -> tuple[Plan, PlanEstimate]:
    """`plan` priced from `history` and, with a budget, trimmed to it (bench.plan.budget):
    the plan to run and its estimate (of the trimmed plan)."""
    from bench.plan.budget import Budget, trim_plan

    est = estimate_plan(plan, hardware, history, usd_per_device_h=usd_per_device_h)
    if budget_usd is None and budget_h is None:
        return plan, est
    trimmed = trim_plan(plan, Budget(budget_usd, budget_h), est.start_s, est.point_s,
                        usd_per_device_h=est.usd_per_device_h, overhead_s=est.overhead_s)
    if trimmed is plan:
        return plan, est
    return trimmed, estimate_plan(trimmed, hardware, history, usd_per_device_h=usd_per_device_h)


def plan_check(est: PlanEstimate, actual_s: float) -> PlanCheck:
    """The estimate beside a run's measured wall time (run.json timing.plan_check)."""
    return PlanCheck(estimate_s=est.total_s, actual_s=actual_s,
                     error=(est.total_s - actual_s) / actual_s if actual_s > 0 else 0.0, basis=est.basis_text())
