"""What a plan will do, for a person to read before anything starts (`bench plan`, and
`bench sweep` before it runs): its points, the skipped ones grouped by reason, and how long it
should take. Content only; the CLI lays it out as text."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench.plan import preflight as pf
from bench.plan.accuracy import EST_OUTPUT_TOKENS_PER_QUESTION, EST_STREAM_TOK_S, TASK_QUESTIONS, AccuracySettings
from bench.plan.plan import Plan
from bench.plan.pointid import PointId


@dataclass(frozen=True)
class PlanDescription:
    """A plan described: a header line, one row per point, notes, the skipped points (one row
    per configuration, workload and reason), the duration estimate and what it assumes."""

    header: str
    rows: list[dict[str, Any]]  # config, model, precision, weights, parallel, workload, load, repeat, ...
    notes: list[str]
    skipped: list[dict[str, Any]]  # config, precision, workload, loads, reason
    n_skipped: int  # skipped points (a row of `skipped` may stand for several)
    estimate: str
    assumptions: str
    accuracy: str = ""  # accuracy gate: what runs beside the points and its time estimate


def describe_plan(plan: Plan, hardware: Any, catalog: Any = None) -> PlanDescription:
    """`plan` on `hardware` (a catalog HardwareSpec) described; `catalog` (default bench.catalog)
    gives the models whose sizes the duration estimate needs."""
    if catalog is None:
        from bench import catalog
    kind = "cpu" if hardware.vendor == "cpu" else "gpu"
    configs = {c.config_id(): c for c in [*plan.engine_configs, *plan.skipped_engine_configs]}
    header = (
        f"plan '{plan.name}': {len(plan.points)} points on {len(plan.engine_configs)} engine configs, "
        f"{len(plan.skipped)} skipped; hardware {hardware.id} ({hardware.name}) x{plan.n_devices}"
    )
    rows = []
    for p in plan.points:
        cfg = configs[p.engine_config_id]
        pid = PointId.parse(p.point_id)
        est_s = pf.estimate_point_s(p, cfg, catalog.get_model(cfg.model), hardware)
        rows.append({
            "config": p.engine_config_id, "model": cfg.model, "precision": cfg.precision(), "weights": cfg.weights,
            "parallel": cfg.parallel_label(), "workload": pid.workload, "load": pid.load, "repeat": p.repeat,
            "warmup": p.n_warmup, "requests": p.n_requests, "est_s": round(est_s),
        })
    groups: dict[tuple[str, str, str], list[str]] = {}
    for s in plan.skipped:
        sid = PointId.parse(s.point.point_id)
        loads = groups.setdefault((sid.config, sid.workload, s.reason), [])
        if sid.load not in loads:
            loads.append(sid.load)
    skipped = [{"config": cid, "precision": configs[cid].precision(), "workload": wl, "loads": ",".join(loads),
                "reason": reason} for (cid, wl, reason), loads in groups.items()]
    start_s, points_s = pf.estimate_plan_s(plan, catalog, hardware)
    estimate = (
        f"estimate: {len(plan.engine_configs)} engine starts x {pf.ENGINE_START_S[kind]:.0f} s + load points "
        f"{points_s:.0f} s = {(start_s + points_s) / 60:.1f} min (download and compile time not included)"
    )
    assumptions = (
        f"  assumes decode steps moving weights + KV at {pf.BANDWIDTH_EFFICIENCY:g} x {hardware.bandwidth_tbs:g} TB/s, "
        f"at least {pf.STEP_FLOOR_S[kind] * 1000:g} ms + {pf.SEQ_STEP_S[kind] * 1000:g} ms per sequence each; prefill at {pf.COMPUTE_EFFICIENCY:g} x catalog TFLOPS; "
        "no queueing"
    )
    notes = sorted({n for p in plan.points for n in p.notes})
    return PlanDescription(header, rows, notes, skipped, len(plan.skipped), estimate, assumptions,
                           accuracy=accuracy_line(plan.accuracy, len(plan.engine_configs)))


def accuracy_line(settings: AccuracySettings, n_configs: int) -> str:
    """The accuracy gate's line of `bench plan`: what runs and, for a task, its time on a GPU."""
    line = settings.describe()
    if not settings.runs_task:
        return line
    per_s = settings.estimate_s()
    if per_s is None:
        return f"{line} (time unknown: question count of '{settings.task}' not known to bench)"
    n = settings.limit or TASK_QUESTIONS.get(settings.task)
    return (f"{line}: {n} questions x {n_configs} configs, about {per_s * n_configs / 60:.0f} min on a GPU "
            f"({EST_OUTPUT_TOKENS_PER_QUESTION} output tokens per question, {settings.num_concurrent} at once at "
            f"{EST_STREAM_TOK_S:g} tok/s each; not in the estimate above; far longer on CPU)")
