"""Execute a plan: one engine session per engine configuration (bench.run.engine_session),
its load points in order, every finished point on disk before the next begins.

The runner owns the run folder: run.json opened (or resumed), skipped points recorded, the
final status; Ctrl-C (or SIGTERM) marks the run interrupted and keeps every point already
measured. A capacity search (bench.run.capacity) and `--pack` (bench.run.pack) run their
engine sessions through the same context; `--prestart` starts the next configuration's
engine beside the one measuring (bench.run.prestart).
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from bench.errors import BenchError, ConfigError, one_line
from bench.plan import EngineConfig, Plan
from bench.redact import redact, redact_text
from bench.results import Harness, RunResult, read_summary, write_summary
from bench.results.config import StoredEngineConfig
from bench.results.estimate import plan_check
from bench.results.point import failed_point, utc_now
from bench.results.timing import run_timing
from bench.run.devices import plan_devices
from bench.run.engine_session import RunContext
from bench.run.environment import RunEnvironment
from bench.run.events import Notice, OnEvent, ignore
from bench.run.prestart import check_prestart, prestart_devices, run_in_order
from bench.run.provenance import collect, harness
from bench.run.scope import ResultSink, write_power, write_server_metrics
from bench.run.startcost import Prepared
from bench.run.status import final_status, interruption


def check_pack(env: RunEnvironment) -> None:
    """ConfigError unless this machine can pack configurations (`--pack` needs GPUs); the CLI
    asks before it prints the plan or creates a run folder."""
    if env.visible_devices() is None:
        raise ConfigError("--pack needs GPUs: on a CPU host every configuration would share the same cores")


def new_run_dir(out_dir: Path, name: str) -> Path:
    stamp = utc_now().replace(":", "").replace("-", "")
    path = Path(out_dir) / f"{stamp}_{re.sub(r'[^A-Za-z0-9._-]+', '-', name)}"
    path.mkdir(parents=True, exist_ok=False)
    return path


def execute(plan: Plan, run_dir: Path, env: RunEnvironment, *, resume: bool = False,
            on_event: OnEvent | None = None, pack: bool = False, search=None, estimate=None,
            prestart: bool = False) -> RunResult:
    """Run every point of `plan` into `run_dir`; returns the final RunResult.

    Each engine configuration runs on its own devices (bench.run.devices), measured by a
    telemetry session scoped to exactly those devices (bench.run.engine_session). `pack=True`
    runs configurations on disjoint devices at the same time (bench.run.pack, docs/packing.md).
    `on_event(event)` receives the run's progress (bench.run.events); it never affects results.
    The run folder is locked for the call (bench.run.lock): a second process is refused.
    `search` (a bench.plan.capacity.CapacitySearch) replaces the plan's points by an SLO
    capacity search on its one configuration and workload (bench.run.capacity).
    `estimate` (bench.results.estimate.PlanEstimate): recorded beside the run's wall time.
    `prestart=True` starts the next configuration's engine on spare devices while the current
    one measures (bench.run.prestart, docs/timing.md).
    """
    from bench.run.lock import RunLock

    with RunLock(run_dir):
        return _execute(plan, Path(run_dir), env, resume, on_event or ignore, pack, search, estimate, prestart)


def _execute(plan: Plan, run_dir: Path, env: RunEnvironment, resume: bool, emit: OnEvent, pack: bool,
             search=None, estimate=None, prestart: bool = False) -> RunResult:
    t_run = time.perf_counter()  # the run's wall time (time breakdown, issue 22)
    visible = env.visible_devices()  # devices checked before anything is written
    if pack:
        check_pack(env)
    if prestart:
        check_prestart(env, pack)
    devices = plan_devices(plan.engine_configs, visible)
    result = _open_result(plan, run_dir, env, resume)
    _stop_stale_engines(run_dir, result, emit)
    done = {p.point_id for p in result.points if p.status in ("ok", "skipped")}
    todo = {c.config_id(): [p for p in plan.points_for(c.config_id()) if p.point_id not in done]
            for c in plan.engine_configs}
    configs = [c for c in plan.engine_configs if todo[c.config_id()]]
    ahead: dict[str, list[int]] = {}
    if prestart and search is None:  # a pre-started configuration runs on its pre-start devices
        ahead = prestart_devices(configs, visible, devices)
        devices.update(ahead)
    result.points = [p for p in result.points if p.point_id in done]
    for s in plan.skipped:
        if s.point.point_id not in done:
            result.points.append(failed_point(s.point, "skipped", s.reason))
    for cid, devs in devices.items():
        own = result.config.engine_configs.setdefault(cid, StoredEngineConfig())
        own.devices = devs
    write_summary(run_dir, result)

    sink = ResultSink(run_dir, result)
    prepared = Prepared(env)
    ctx = RunContext(plan, run_dir, env, sink, emit, visible, prepared)
    try:
        if search is not None:
            from bench.run.capacity import run_capacity

            run_capacity(ctx, search, devices[plan.engine_configs[0].config_id()], result)
        elif pack:
            from bench.run.pack import execute_packed

            execute_packed(ctx, result, todo, devices)
        else:  # one configuration after another (the next one's engine pre-started where planned)
            run_in_order(ctx, configs, todo, devices, ahead, raise_start=lambda: len(plan.engine_configs) == 1
                         and not any(p.status == "ok" for p in result.points))
        result.status, result.error = final_status(result.points)
        if plan.accuracy.mode != "off":  # accuracy gate: verdicts once the reference has run
            from bench.run.accuracy_gate import finish_accuracy

            result.accuracy = finish_accuracy(plan, run_dir)
    except KeyboardInterrupt as e:
        result.status = "interrupted"
        result.error = f"{interruption(e)}; finished points are kept"
        raise
    except BaseException as e:
        result.status = "failed"
        result.error = one_line(redact_text(f"{type(e).__name__}: {e}"))  # redacted whole: a cut secret is no secret's shape
        raise
    finally:
        prepared.close()
        write_power(run_dir, sink.power_frames, result)
        write_server_metrics(run_dir, sink.server_metrics_frames, result)
        result.timing = run_timing([p.timing for p in result.points if p.timing is not None],
                                   wall_s=time.perf_counter() - t_run, hardware=env.hardware,
                                   n_devices=max(1, plan.n_devices or 1), engine_starts=sink.engine_starts,
                                   previous=result.timing)
        if estimate is not None and not resume:  # the plan's estimate vs this run (bench.results.estimate)
            result.timing.plan_check = plan_check(estimate, result.timing.wall_s)
        result.finished_utc = utc_now()
        write_summary(run_dir, result)
    return result


def _open_result(plan: Plan, run_dir: Path, env: RunEnvironment, resume: bool) -> RunResult:
    config = run_config(plan, env)
    if not resume and (run_dir / "run.json").exists():
        raise BenchError(f"{run_dir} already holds a run; resume it (--resume) or choose another folder")
    if resume and (run_dir / "run.json").exists():
        old = read_summary(run_dir)
        if old.config.plan_points != config["plan_points"]:
            raise BenchError(f"{run_dir}: cannot resume: the plan differs from the one this run was started with")
        # the caller holds the folder's lock: a run.json still "running" lost its process
        old.extra.setdefault("resumed_from", []).append("stale (process gone)" if old.status == "running" else old.status)
        old.status, old.error, old.finished_utc = "running", None, None
        old.extra.setdefault("resumed_utc", []).append(utc_now())
        return old
    engine_args = {c.config_id(): engine_launch_args(c, env) for c in plan.engine_configs}
    return RunResult(
        run_id=run_dir.name,
        created_utc=utc_now(),
        harness=Harness(**harness()),
        config=redact(config),  # secrets (api_key, user:pass@ URLs) stay in memory only
        provenance=collect(env.device, engine_args,
                           {cid: c["engine_version"] for cid, c in config["engine_configs"].items()}),
    )


def _stop_stale_engines(run_dir: Path, result: RunResult, emit) -> None:
    """Stop an engine an earlier process of this run left running (it would hold the devices the
    next engine needs); its one line goes to the progress output and to `extra.stale_engines_stopped`.
    Called with the folder's lock held: the process that started that engine is gone."""
    from bench.engines.process import stop_stale

    for line in stop_stale(run_dir):
        emit(Notice(line))
        result.extra.setdefault("stale_engines_stopped", []).append(line)


def run_config(plan: Plan, env: RunEnvironment) -> dict[str, Any]:
    """The full resolved configuration stored with the result."""
    from bench.catalog.engines import installed_version

    cfgs = {c.config_id(): {**c.model_dump(), "n_gpus": c.n_gpus, "precision": c.precision(),
                            "engine_version": installed_version(c.engine)}
            for c in [*plan.engine_configs, *plan.skipped_engine_configs]}
    config: dict[str, Any] = {
        "name": plan.name,
        "hardware_id": getattr(env.hardware, "id", None) or plan.hardware_id,
        "n_devices": plan.n_devices,
        "endpoint": plan.endpoint,
        "telemetry": plan.telemetry,
        "seed": plan.seed,
        "engine_configs": cfgs,
        "plan_points": [p.point_id for p in plan.points],
        "plan": plan.model_dump(mode="json"),
    }
    if len(cfgs) == 1:  # single-configuration runs: the common fields at the top level too
        only = next(iter(cfgs.values()))
        config.update({k: only[k] for k in ("model", "weights", "engine", "engine_version", "dtype",
                                             "quantization", "kv_cache_dtype", "n_gpus", "precision")})
        config["engine_args"] = only["extra_args"]
    return config


def engine_launch_args(cfg: EngineConfig, env: RunEnvironment) -> dict[str, Any]:
    """The arguments `cfg`'s engine starts with, as that engine builds them (for provenance)."""
    from bench.engines import engine_class

    return engine_class(cfg.engine).launch_args(cfg, "cpu" if env.on_cpu else "cuda")
