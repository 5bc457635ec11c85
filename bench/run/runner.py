"""Execute a plan: one engine start per engine configuration, its load points in order,
every finished point on disk before the next begins.

Faults are data: a point whose engine dies is recorded as failed (log tail kept) and the
engine is restarted; a configuration that does not fit is recorded as such; Ctrl-C (or SIGTERM) marks
the run interrupted and keeps every point already measured.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.engines.base import EngineDied, EngineDoesNotFit
from bench.errors import BenchError, ConfigError, EngineError
from bench.load.client import DEFAULT_STALL_TIMEOUT_S
from bench.load.workers import ClientWorkerDied
from bench.plan import EngineConfig, Plan
from bench.redact import redact, redact_text
from bench.results import (
    Harness,
    PointResult,
    RunResult,
    read_summary,
    write_requests,
    write_summary,
)
from bench.results.config import StoredEngineConfig
from bench.results.point import failed_point, utc_now
from bench.run.devices import devices_for, visible_gpu_indices
from bench.run.measure_point import measure_point
from bench.run.provenance import collect, harness
from bench.run.scope import (
    ResultSink,
    idle_baseline,
    open_scoped,
    power_frame,
    write_power,
    write_server_metrics,
)
from bench.run.status import final_status, interruption, settle_point

IDLE_BASELINE_S = 3.0


class RunEnvironment:
    """What the runner needs from the machine: device, hardware entry, caches, output."""

    def __init__(self, device: dict[str, Any], hardware=None, cache_dir: Path | None = None,
                 startup_timeout_s: float = 900.0, probe: dict | None = None, *,
                 telemetry_factory: Callable[..., Any] | None = None, idle_baseline_s: float = IDLE_BASELINE_S,
                 visible_devices: list[int] | None = None):
        self.device = device  # detect_device() as a dict
        self.hardware = hardware  # catalog HardwareSpec or None
        self.cache_dir = Path(cache_dir or Path.home() / ".cache" / "bench" / "models")
        self.startup_timeout_s = startup_timeout_s
        self.probe = probe
        # open_telemetry(requested, hardware=, gpu_indices=) -> unstarted session; injectable (tests: fake NVML)
        self.telemetry_factory = telemetry_factory
        self.idle_baseline_s = idle_baseline_s  # s of idle sampling after every engine (re)start
        self._visible = list(visible_devices) if visible_devices is not None else None
        # Client limits (s): per request (None: from its expected lengths) and without a byte (None: off).
        self.request_timeout_s: float | None = None
        self.stall_timeout_s: float | None = DEFAULT_STALL_TIMEOUT_S
        self.client_workers: int | None = None  # client worker processes; None: bench.load.workers.choose_workers

    def visible_devices(self) -> list[int] | None:
        """Device indices this run may use (None on CPU): injected, else CUDA_VISIBLE_DEVICES / the count."""
        if self._visible is not None:
            return list(self._visible)
        return None if self.on_cpu else visible_gpu_indices(self.device.get("count") or 1,
                                                             vendor=self.device.get("vendor"))

    @property
    def on_cpu(self) -> bool:
        return self.device.get("vendor") == "cpu"


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
            on_event: Callable[[str, dict], None] | None = None, pack: bool = False, search=None) -> RunResult:
    """Run every point of `plan` into `run_dir`; returns the final RunResult.

    Each engine configuration runs on its own devices (bench.run.devices), measured by a
    telemetry session scoped to exactly those devices. `pack=True` runs configurations on
    disjoint devices at the same time (bench.run.pack, docs/packing.md).
    `on_event(kind, info)` receives progress events ("engine_start", "point_start",
    "request_done", "point_done", "engine_failed", and "notice": one line to show) for progress
    bars; it never affects results.
    The run folder is locked for the call (bench.run.lock): a second process is refused.
    `search` (a bench.plan.capacity.CapacitySearch) replaces the plan's points by an SLO
    capacity search on its one configuration and workload (bench.run.capacity).
    """
    from bench.run.lock import RunLock

    with RunLock(run_dir):
        return _execute(plan, Path(run_dir), env, resume, on_event, pack, search)


def _execute(plan: Plan, run_dir: Path, env: RunEnvironment, resume: bool, on_event, pack: bool,
             search=None) -> RunResult:
    emit = on_event or (lambda kind, info: None)
    visible = env.visible_devices()  # devices checked before anything is written
    if pack:
        check_pack(env)
    devices = {c.config_id(): (devices_for(c, visible) if visible is not None else None) for c in plan.engine_configs}
    result = _open_result(plan, run_dir, env, resume)
    _stop_stale_engines(run_dir, result, emit)
    done = {p.point_id for p in result.points if p.status in ("ok", "skipped")}
    result.points = [p for p in result.points if p.point_id in done]
    for s in plan.skipped:
        if s.point.point_id not in done:
            result.points.append(failed_point(s.point, "skipped", s.reason))
    for cid, devs in devices.items():
        own = result.config.engine_configs.setdefault(cid, StoredEngineConfig())
        own.devices = devs
    write_summary(run_dir, result)

    sink = ResultSink(run_dir, result)
    try:
        todo = {c.config_id(): [p for p in plan.points_for(c.config_id()) if p.point_id not in done]
                for c in plan.engine_configs}
        if search is not None:
            from bench.run.capacity import run_capacity

            cid = plan.engine_configs[0].config_id()
            run_capacity(search, plan, run_dir, env, sink, emit, result, devices[cid], visible)
        elif pack:
            from bench.run.pack import execute_packed

            execute_packed(plan, env, sink, todo, devices, visible, emit)
        else:
            for cfg in plan.engine_configs:
                if todo[cfg.config_id()]:
                    raise_start = len(plan.engine_configs) == 1 and not any(p.status == "ok" for p in result.points)
                    _run_config(cfg, todo[cfg.config_id()], plan, run_dir, env, sink, emit,
                                devices=devices[cfg.config_id()], visible=visible, raise_start=raise_start)
        result.status, result.error = final_status(result.points)
    except KeyboardInterrupt as e:
        result.status = "interrupted"
        result.error = f"{interruption(e)}; finished points are kept"
        raise
    except BaseException as e:
        result.status = "failed"
        result.error = redact_text(f"{type(e).__name__}: {e}".splitlines()[0][:500])
        raise
    finally:
        write_power(run_dir, sink.power_frames, result)
        write_server_metrics(run_dir, sink.server_metrics_frames, result)
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
        emit("notice", {"text": line})
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


def _model_path(cfg: EngineConfig, env: RunEnvironment) -> tuple[str, Any]:
    from bench.catalog import get_model

    spec = get_model(cfg.model)
    if cfg.weights == "dummy":
        from bench.catalog.prepare import prepare_model

        return str(prepare_model(spec, env.cache_dir)), spec
    return cfg.weights, spec


def _start_engine(cfg: EngineConfig, env: RunEnvironment, run_dir: Path, devices: list[int] | None = None):
    """The started engine of `cfg` (pinned to `devices`; None: every visible one) and its catalog model."""
    from bench.catalog import get_model
    from bench.catalog.engines import get_engine
    from bench.engines import engine_class

    if get_engine(cfg.engine).needs_model_files:
        model_path, spec = _model_path(cfg, env)
    else:
        model_path, spec = None, get_model(cfg.model)
    device = "cpu" if env.on_cpu else "cuda"
    engine = engine_class(cfg.engine).from_config(
        cfg, model_path=model_path, model_spec=spec, log_path=run_dir / f"engine-{cfg.config_id()}.log",
        device=device, devices=devices, vendor=env.device.get("vendor"), startup_timeout_s=env.startup_timeout_s)
    if cfg.nnodes > 1:  # the followers' headless processes through their agents (bench.engines.multinode)
        from bench.engines.multinode import over_nodes

        engine = over_nodes(engine, cfg, device)
    try:
        engine.start()
    except BaseException:
        engine.stop()
        raise
    return engine, spec


def _run_config(cfg, todo, plan, run_dir, env, sink, emit, *, devices=None, visible=None,
                raise_start=False, measure_others=True, more=None) -> None:
    """Start the engine once, run its points, restart it if it dies mid-point.

    Telemetry is opened for exactly `devices`; with `measure_others` the idle power of the
    other visible devices is recorded beside it (never added). `more(point_result)`, when
    given, returns the points to run next (an adaptive search on the same engine)."""
    cid = cfg.config_id()
    telemetry = open_scoped(plan.telemetry, env, devices, nodes=cfg.nodes if cfg.nnodes > 1 else None)
    if telemetry is not None:
        sink.note("telemetry", cid, telemetry.describe())
    others = [d for d in (visible or []) if d not in (devices or [])] if measure_others else []
    engine = None
    pending = list(todo)
    restarts = 0
    try:
        while pending:
            if engine is None:
                emit("engine_start", {"config_id": cid, "model": cfg.model, "devices": devices})
                try:
                    engine, spec = _start_engine(cfg, env, run_dir, devices=devices)
                except EngineDoesNotFit as e:
                    _fail_all(pending, "failed", f"does not fit: {e}", sink, emit)
                    return
                except EngineError as e:
                    if raise_start:
                        raise
                    _fail_all(pending, "failed", f"engine failed to start: {e}", sink, emit)
                    return
                emit("engine_ready", {"config_id": cid, "pid": getattr(engine, "pid", None)})
                sink.note("engine_version", cid, engine.version())  # as started (an endpoint's own report)
                if cfg.nnodes > 1:
                    sink.note("nodes", cid, engine.describe())
                if telemetry is not None:  # after every (re)start: the loaded, idle engine
                    sink.note("idle_baseline", cid, idle_baseline(telemetry, plan.telemetry, env, others))
            point = pending[0]
            started = utc_now()
            emit("point_start", {"point_id": point.point_id, "n": point.n_warmup + point.n_requests})
            try:
                pr = settle_point(measure_point(point, cfg, engine, spec, plan, env, telemetry, run_dir, emit,
                                                started, sink))  # no successful request: failed
            except EngineDied as e:
                pr = _died_point(point, f"engine died: {e}", getattr(e, "records", None), started, run_dir)
                engine.stop()
                engine = None
                restarts += 1
            except ClientWorkerDied as e:  # the engine is fine: the next point runs on it
                pr = _died_point(point, str(e), e.records, started, run_dir)
            sink.point(pr)
            emit("point_done", {"point_id": point.point_id, "point": pr})
            pending.pop(0)
            if more is not None:
                pending.extend(more(pr))
            if restarts > 3:
                _fail_all(pending, "failed", "engine died more than 3 times; configuration abandoned", sink, emit)
                return
    finally:
        if engine is not None:
            engine.stop()
        if telemetry is not None:
            telemetry.stop()
            sink.power(power_frame(telemetry, cid))


def _died_point(point, reason: str, records, started: str, run_dir: Path) -> PointResult:
    """A point whose engine or client worker died: failed, with the requests that finished before it on disk."""
    pr = failed_point(point, "failed", reason, started)
    records = records or []
    if records:
        measured = [r for r in records if r.phase == "measured"]
        pr.n_requests = len(measured)
        pr.n_failed = sum(1 for r in measured if not r.ok)
        pr.requests_file = write_requests(run_dir, point.point_id, records)
    return pr


def _fail_all(points, status, reason, sink, emit) -> None:
    for p in points:
        pr = failed_point(p, status, reason.splitlines()[0][:600])
        sink.point(pr)
        emit("point_done", {"point_id": p.point_id, "point": pr})
