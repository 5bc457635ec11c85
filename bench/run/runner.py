"""Execute a plan: one engine start per engine configuration, its load points in order,
every finished point on disk before the next begins.

Faults are data: a point whose engine dies is recorded as failed (log tail kept) and the
engine is restarted; a configuration that does not fit is recorded as such; Ctrl-C marks
the run interrupted and keeps every point already measured.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.engines.base import EngineDied, EngineDoesNotFit
from bench.errors import BenchError, EngineError
from bench.measure.point import build_point_result, failed_point, make_workload
from bench.plan import EngineConfig, Plan, PointSpec
from bench.run.provenance import collect, harness, utc_now
from bench.results import Harness, PointResult, RunResult, read_summary, write_requests, write_summary

IDLE_BASELINE_S = 3.0
POWER_FILE = "power.parquet"


class RunEnvironment:
    """What the runner needs from the machine: device, hardware entry, caches, output."""

    def __init__(self, device: dict[str, Any], hardware=None, cache_dir: Path | None = None,
                 startup_timeout_s: float = 900.0, probe: dict | None = None):
        self.device = device  # detect_device() as a dict
        self.hardware = hardware  # catalog HardwareSpec or None
        self.cache_dir = Path(cache_dir or Path.home() / ".cache" / "bench" / "models")
        self.startup_timeout_s = startup_timeout_s
        self.probe = probe

    @property
    def on_cpu(self) -> bool:
        return self.device.get("vendor") == "cpu"


def new_run_dir(out_dir: Path, name: str) -> Path:
    stamp = utc_now().replace(":", "").replace("-", "")
    path = Path(out_dir) / f"{stamp}_{re.sub(r'[^A-Za-z0-9._-]+', '-', name)}"
    path.mkdir(parents=True, exist_ok=False)
    return path


def execute(plan: Plan, run_dir: Path, env: RunEnvironment, *, resume: bool = False,
            on_event: Callable[[str, dict], None] | None = None) -> RunResult:
    """Run every point of `plan` into `run_dir`; returns the final RunResult.

    `on_event(kind, info)` receives progress events ("engine_start", "point_start",
    "request_done", "point_done", "engine_failed") for progress bars; it never affects results.
    """
    emit = on_event or (lambda kind, info: None)
    run_dir = Path(run_dir)
    result = _open_result(plan, run_dir, env, resume)
    done = {p.point_id for p in result.points if p.status in ("ok", "skipped")}
    result.points = [p for p in result.points if p.point_id in done]
    for s in plan.skipped:
        if s.point.point_id not in done:
            result.points.append(failed_point(s.point, "skipped", s.reason))
    write_summary(run_dir, result)

    telemetry = _open_telemetry(plan, env)
    if telemetry is not None:
        result.extra["telemetry"] = telemetry.describe()
    try:
        for cfg in plan.engine_configs:
            todo = [p for p in plan.points_for(cfg.config_id()) if p.point_id not in done]
            if todo:
                _run_config(cfg, todo, plan, run_dir, env, result, telemetry, emit)
        result.status = "complete"
    except KeyboardInterrupt:
        result.status = "interrupted"
        result.error = "interrupted by the user (Ctrl-C); finished points are kept"
        raise
    except BaseException as e:
        result.status = "failed"
        result.error = f"{type(e).__name__}: {e}".splitlines()[0][:500]
        raise
    finally:
        if telemetry is not None:
            telemetry.stop()
            _write_power(run_dir, telemetry, result)
        result.finished_utc = utc_now()
        write_summary(run_dir, result)
    return result


def _open_result(plan: Plan, run_dir: Path, env: RunEnvironment, resume: bool) -> RunResult:
    config = run_config(plan, env)
    if not resume and (run_dir / "run.json").exists():
        raise BenchError(f"{run_dir} already holds a run; resume it (--resume) or choose another folder")
    if resume and (run_dir / "run.json").exists():
        old = read_summary(run_dir)
        if old.config.get("plan_points") != config["plan_points"]:
            raise BenchError(f"{run_dir}: cannot resume: the plan differs from the one this run was started with")
        old.status, old.error, old.finished_utc = "running", None, None
        old.extra.setdefault("resumed_utc", []).append(utc_now())
        return old
    engine_args = {c.config_id(): server_args(c, env) for c in plan.engine_configs}
    return RunResult(
        run_id=run_dir.name,
        created_utc=utc_now(),
        harness=Harness(**harness()),
        config=config,
        provenance=collect(env.device, engine_args),
    )


def run_config(plan: Plan, env: RunEnvironment) -> dict[str, Any]:
    """The full resolved configuration stored with the result."""
    cfgs = {c.config_id(): {**c.model_dump(), "n_gpus": c.n_gpus, "precision": c.precision()}
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
        config.update({k: only[k] for k in ("model", "weights", "engine", "dtype", "quantization",
                                             "kv_cache_dtype", "n_gpus", "precision")})
        config["engine_args"] = only["extra_args"]
    return config


def server_args(cfg: EngineConfig, env: RunEnvironment) -> dict[str, Any]:
    """The engine arguments vLLM is started with (besides model, name, host, port)."""
    args: dict[str, Any] = {"dtype": cfg.dtype, "tensor_parallel_size": cfg.tensor_parallel_size}
    if cfg.weights == "dummy":
        args["load_format"] = "dummy"
    if cfg.quantization and not cfg.weights_prequantized:
        args["quantization"] = cfg.quantization
    if cfg.kv_cache_dtype != "auto":
        args["kv_cache_dtype"] = cfg.kv_cache_dtype
    for key in ("max_num_seqs", "max_model_len"):
        if getattr(cfg, key) is not None:
            args[key] = getattr(cfg, key)
    if env.on_cpu and args["tensor_parallel_size"] == 1:
        args.pop("tensor_parallel_size")
    return {**args, **cfg.extra_args}


def _model_path(cfg: EngineConfig, env: RunEnvironment) -> tuple[str, Any]:
    from bench.catalog import get_model

    spec = get_model(cfg.model)
    if cfg.weights == "dummy":
        from bench.catalog.prepare import prepare_model

        return str(prepare_model(spec, env.cache_dir)), spec
    return cfg.weights, spec


def _start_engine(cfg: EngineConfig, env: RunEnvironment, run_dir: Path):
    from bench.engines import engine_class

    log_path = run_dir / f"engine-{cfg.config_id()}.log"
    if cfg.engine == "endpoint":
        engine = engine_class("endpoint")(cfg.endpoint_url, cfg.weights if cfg.weights != "dummy" else cfg.model,
                                          log_path, n_gpus=cfg.n_gpus)
        engine.start()
        from bench.catalog import get_model

        return engine, get_model(cfg.model)
    model_path, spec = _model_path(cfg, env)
    kwargs = dict(engine_args=server_args(cfg, env), device="cpu" if env.on_cpu else "cuda",
                  n_gpus=cfg.n_gpus, startup_timeout_s=env.startup_timeout_s)
    if cfg.engine == "hf":
        kwargs = dict(config=cfg, model_spec=spec, device="cpu" if env.on_cpu else "cuda")
    engine = engine_class(cfg.engine)(model_path, cfg.model, log_path, **kwargs)
    try:
        engine.start()
    except BaseException:
        engine.stop()
        raise
    return engine, spec


def _run_config(cfg, todo, plan, run_dir, env, result, telemetry, emit) -> None:
    """Start the engine once, run its points, restart it if it dies mid-point."""
    engine = None
    pending = list(todo)
    restarts = 0
    try:
        while pending:
            if engine is None:
                emit("engine_start", {"config_id": cfg.config_id(), "model": cfg.model})
                try:
                    engine, spec = _start_engine(cfg, env, run_dir)
                except EngineDoesNotFit as e:
                    _fail_all(pending, "failed", f"does not fit: {e}", result, run_dir, emit)
                    return
                except EngineError as e:
                    if len(plan.engine_configs) == 1 and not any(p.status == "ok" for p in result.points):
                        raise
                    _fail_all(pending, "failed", f"engine failed to start: {e}", result, run_dir, emit)
                    return
                emit("engine_ready", {"config_id": cfg.config_id(), "pid": getattr(engine, "pid", None)})
                if telemetry is not None:  # after every (re)start: the loaded, idle engine
                    result.extra.setdefault("idle_baseline", {})[cfg.config_id()] = telemetry.idle_baseline(IDLE_BASELINE_S)
            point = pending[0]
            started = utc_now()
            emit("point_start", {"point_id": point.point_id, "n": point.n_warmup + point.n_requests})
            try:
                pr = _measure(point, cfg, engine, spec, plan, env, telemetry, run_dir, emit, started)
            except EngineDied as e:
                pr = failed_point(point, "failed", f"engine died: {e}", started)
                engine.stop()
                engine = None
                restarts += 1
            result.points.append(pr)
            write_summary(run_dir, result)
            emit("point_done", {"point_id": point.point_id, "point": pr})
            pending.pop(0)
            if restarts > 3:
                _fail_all(pending, "failed", "engine died more than 3 times; configuration abandoned", result, run_dir, emit)
                return
    finally:
        if engine is not None:
            engine.stop()


def _fail_all(points, status, reason, result, run_dir, emit) -> None:
    for p in points:
        pr = failed_point(p, status, reason.splitlines()[0][:600])
        result.points.append(pr)
        emit("point_done", {"point_id": p.point_id, "point": pr})
    write_summary(run_dir, result)


def _measure(point: PointSpec, cfg, engine, spec, plan, env, telemetry, run_dir, emit, started) -> PointResult:
    if hasattr(engine, "run_point"):  # in-process engines measure themselves
        records, facts = engine.run_point(point, spec, seed=plan.seed + point.repeat)
        before = after = client = None
    else:
        from bench.load.driver import run_point_sync

        vocab = spec.config_json().get("vocab_size") if spec is not None else None
        workload = make_workload(point.workload, vocab_size=vocab or 32000, seed=plan.seed + point.repeat)
        before = engine.server_counters()
        pr = run_point_sync(
            engine.base_url, engine.served_model, workload, point.load, point.n_warmup, point.n_requests,
            endpoint=plan.endpoint, progress=lambda done, total: emit("request_done", {"done": done, "total": total}),
        )
        records = pr.records
        client = pr.client_token_counts()
        after = _settled_counters(engine, before, client)
        facts = {**pr.facts(), "window_t0_s": pr.window_t0_s, "window_t1_s": pr.window_t1_s,
                 "span_t0_s": pr.span_t0_s, "span_t1_s": pr.span_t1_s, "client": pr.client}
        if not engine.alive() or (any(not r.ok for r in records) and not engine.healthy()):
            raise EngineDied(f"engine exited during point {point.point_id}; log tail: {engine.log_tail(3)}")
    t0, t1 = facts["window_t0_s"], facts["window_t1_s"]
    if t1 <= t0:  # no steady-state window: metrics fall back to the span, so does energy
        t0, t1 = facts["span_t0_s"], facts["span_t1_s"]
    energy = telemetry.energy_between(t0, t1) if telemetry else None
    delta = _counter_delta(before, after)
    result = build_point_result(
        point, cfg, records, facts, n_gpus=cfg.n_gpus, energy=energy, server_delta=delta,
        client_tokens_in_counter_interval=client, model=spec, hardware=env.hardware, probe=env.probe,
        started_utc=started,
    )
    result.requests_file = write_requests(run_dir, point.point_id, records)
    return result


def _settled_counters(engine, before: dict | None, client: dict, timeout_s: float = 3.0) -> dict | None:
    """Server counters once they have caught up with the client (they are updated per engine
    step, a moment after the last response), or as they stand after `timeout_s`."""
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        after = engine.server_counters()
        if before is None or after is None:
            return after
        done = after.get("generation_tokens", 0) - before.get("generation_tokens", 0) >= client["generation_tokens"]
        if done or time.monotonic() > deadline:
            return after
        time.sleep(0.2)


def _counter_delta(before: dict | None, after: dict | None) -> dict | None:
    if not before or not after:
        return None
    return {k: after[k] - before.get(k, 0.0) for k in after}


def _open_telemetry(plan: Plan, env: RunEnvironment):
    if plan.telemetry == "none":
        return None
    from bench.telemetry import open_telemetry

    gpus = None if env.on_cpu else visible_gpu_indices(env.device.get("count") or 1)
    return open_telemetry(plan.telemetry, hardware=env.hardware, gpu_indices=gpus).start()


def visible_gpu_indices(count: int, visible: str | None = None) -> list[int]:
    """NVML indices of the GPUs the engine can use: CUDA_VISIBLE_DEVICES when it lists
    indices (NVML ignores it), else all `count`."""
    import os

    visible = os.environ.get("CUDA_VISIBLE_DEVICES") if visible is None else visible
    if visible and all(part.strip().isdigit() for part in visible.split(",")):
        return [int(part) for part in visible.split(",")]
    return list(range(count))


def _write_power(run_dir: Path, telemetry, result: RunResult) -> None:
    try:
        frame = telemetry.power_series()
        if frame is not None and len(frame):
            frame.to_parquet(run_dir / POWER_FILE, index=False)
            result.extra["power_file"] = POWER_FILE
    except OSError as e:  # a full disk must not hide the points already written
        result.extra["power_file_error"] = str(e)
