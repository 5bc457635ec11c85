"""One engine configuration's session: start its engine once on its devices, measure its
points in order, restart the engine when it dies mid-point, and hand every finished point to
a `Sink`. The runner (one configuration after another), the capacity search (probes chosen as
it goes) and `--pack` (configurations side by side, in worker processes) all run this.

Faults are data: a point whose engine dies is recorded as failed (log tail kept) and the
engine is restarted, at most 3 times; a configuration that does not fit is recorded as such.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from bench.engines.base import EngineDied, EngineDoesNotFit
from bench.engines.node_wire import NodeDevice
from bench.errors import EngineError, one_line
from bench.load.workers import ClientWorkerDied
from bench.plan import EngineConfig, Plan, PointSpec
from bench.results import PointResult, write_requests
from bench.results.point import failed_point, utc_now
from bench.results.timing import EngineStart
from bench.run.environment import RunEnvironment
from bench.run.events import (
    EngineReady,
    EngineStarting,
    OnEvent,
    PointDone,
    PointStarting,
)
from bench.run.measure_point import measure_point
from bench.run.scope import idle_baseline, open_scoped, power_frame
from bench.run.startcost import VLLM_CACHE_ENV, Prepared, compile_cache_root, model_folder, start_phases
from bench.run.status import settle_point

MAX_RESTARTS = 3  # an engine that dies more often than this abandons its configuration


class Sink(Protocol):
    """Where an engine session's results go. The run's own sink (bench.run.scope.ResultSink)
    appends them to run.json at once; a packed worker's sends them to that one (bench.run.pack)."""

    def point(self, pr: PointResult) -> None:
        """A finished point (ok, failed or skipped)."""

    def note(self, key: str, config_id: str, value: Any) -> None:
        """result.extra[key][config_id] = value: idle baselines, telemetry descriptions, versions."""

    def power(self, frame) -> None:
        """A telemetry session's power samples (a DataFrame; None or empty: nothing)."""

    def server_metrics(self, frame) -> None:
        """A point's /metrics samples (a DataFrame; None or empty: nothing)."""

    # time breakdown (issue 22)
    def engine_started(self, start: EngineStart) -> None:
        """One engine start: its wall time and logged phases (bench.results.timing)."""


@dataclass(frozen=True)
class RunContext:
    """What every engine session of one run shares."""

    plan: Plan
    run_dir: Path
    env: RunEnvironment
    sink: Sink
    emit: OnEvent
    visible: list[int] | None  # device indices the run may use; None on a CPU host
    prepared: Prepared | None = None  # model folders prepared ahead (time breakdown, issue 22)


Started = tuple[Any, Any, EngineStart]  # (engine, catalog model, its start): timed_start's answer


@dataclass(frozen=True)
class Handover:
    """A sequential run's hand-over between configurations (`--prestart`, bench.run.prestart).

    `first_start()`: this configuration's engine, already started on a spare device while the
    previous one measured (it raises what its start raised); restarts after a death start
    normally. `on_ready()`: called once, after the first start is ready and its idle baseline
    taken (the next configuration's pre-start begins there). `beside`: devices another engine
    may hold during this session, left out of the other devices' idle power."""

    first_start: Callable[[], Started] | None = None
    on_ready: Callable[[], None] | None = None
    beside: tuple[int, ...] = ()


def run_engine_session(ctx: RunContext, cfg: EngineConfig, points: list[PointSpec], devices: list[int] | None, *,
                       raise_start: bool = False, measure_others: bool = True,
                       more: Callable[[PointResult], list[PointSpec]] | None = None,
                       handover: Handover | None = None) -> None:
    """Start `cfg`'s engine once on `devices`, run `points`, restart it if it dies mid-point.

    Telemetry covers exactly `devices`; with `measure_others` the idle power of the run's
    other visible devices is recorded beside it (never added). `raise_start`: an engine that
    fails to start raises (nothing else of the run could be measured) instead of failing the
    points. `more(point_result)`, when given, returns the points to run next on the same engine
    (an adaptive search). `handover`: a pre-started first engine and the hook after it is ready."""
    plan, env, sink, emit = ctx.plan, ctx.env, ctx.sink, ctx.emit
    cid = cfg.config_id()
    telemetry = open_scoped(plan.telemetry, env, devices, nodes=cfg.nodes if cfg.nnodes > 1 else None)
    if telemetry is not None:
        sink.note("telemetry", cid, telemetry.describe())
    hand = handover or Handover()
    held = {*(devices or []), *hand.beside}  # a pre-starting engine's devices are not idle
    others = [d for d in (ctx.visible or []) if d not in held] if measure_others else []
    first_start, on_ready = hand.first_start, hand.on_ready
    engine = spec = None
    pending = list(points)
    restarts = 0
    adaptive = None
    if plan.repeat_until is not None:  # issue 20 item 2: a point's later repeats dropped once converged
        from bench.run.repeats import AdaptiveRepeats

        adaptive = AdaptiveRepeats(plan.repeat_until)
    try:
        while pending:
            if engine is None:
                emit(EngineStarting(cid, cfg.model, devices))
                try:
                    if first_start is not None:  # started while the previous configuration measured
                        begun, first_start = first_start, None
                        engine, spec, started_engine = begun()
                    else:
                        engine, spec, started_engine = timed_start(cfg, env, ctx.run_dir, devices, ctx.prepared)
                except EngineDoesNotFit as e:
                    fail_all(pending, f"does not fit: {e}", sink, emit)
                    return
                except EngineError as e:
                    if raise_start:
                        raise
                    fail_all(pending, f"engine failed to start: {e}", sink, emit)
                    return
                emit(EngineReady(cid, getattr(engine, "pid", None)))  # an endpoint has no process of ours
                sink.engine_started(started_engine)
                sink.note("engine_version", cid, engine.version())  # as started (an endpoint's own report)
                if cfg.nnodes > 1:
                    sink.note("nodes", cid, engine.describe())
                if telemetry is not None:  # after every (re)start: the loaded, idle engine
                    sink.note("idle_baseline", cid, idle_baseline(telemetry, plan.telemetry, env, others))
                if on_ready is not None:  # once: after the first start and its idle baseline
                    ready, on_ready = on_ready, None
                    ready()
            point = pending[0]
            started = utc_now()
            emit(PointStarting(point.point_id, point.n_warmup + point.n_requests))
            try:
                pr = settle_point(measure_point(point, cfg, engine, spec, plan, env, telemetry, ctx.run_dir, emit,
                                                started, sink))  # no successful request: failed
            except EngineDied as e:
                pr = died_point(point, f"engine died: {e}", e.records, started, ctx.run_dir)
                engine.stop()
                engine = None
                restarts += 1
            except ClientWorkerDied as e:  # the engine is fine: the next point runs on it
                pr = died_point(point, str(e), e.records, started, ctx.run_dir)
            sink.point(pr)
            emit(PointDone(pr))
            pending.pop(0)
            if adaptive is not None:
                pending, dropped = adaptive.after(pr, pending)
                for skipped, why in dropped:
                    done = failed_point(skipped, "skipped", why)
                    sink.point(done)
                    emit(PointDone(done))
            if more is not None:
                pending.extend(more(pr))
            if restarts > MAX_RESTARTS:
                fail_all(pending, f"engine died more than {MAX_RESTARTS} times; configuration abandoned", sink, emit)
                return
        if engine is not None and plan.accuracy.mode != "off":  # accuracy gate, on the engine the points ran on
            from bench.run.accuracy_gate import probe_config

            probe_config(plan, cfg, engine, ctx.run_dir)
    finally:
        if engine is not None:
            engine.stop()
        if telemetry is not None:
            telemetry.stop()
            sink.power(power_frame(telemetry, cid))


def timed_start(cfg: EngineConfig, env: RunEnvironment, run_dir: Path, devices: list[int] | None,
                prepared: Prepared | None = None, on_built: Callable[[Any], None] | None = None) -> Started:
    """`start_engine`, timed: the engine, its catalog model and its EngineStart (launch to
    healthy, the phases its log names from the bytes this start appended). `on_built(engine)`:
    see `start_engine`."""
    log = run_dir / f"engine-{cfg.config_id()}.log"
    offset = log.stat().st_size if log.exists() else 0  # a restart appends to the same log
    t0 = time.perf_counter()
    if prepared is not None:  # its folder was prepared while the previous configuration measured
        prepared.wait(cfg)
    t1 = time.perf_counter()
    if on_built is None:  # the plain call: tests replace start_engine with fakes of this shape
        engine, spec = start_engine(cfg, env, run_dir, devices)
    else:
        engine, spec = start_engine(cfg, env, run_dir, devices, on_built=on_built)
    start_s = time.perf_counter() - t0
    phases = start_phases(cfg.engine, log, offset)
    logged = phases.logged()
    if phases.log_span_s is not None:  # before vLLM's first log line: the interpreter's start and imports
        logged["before_log_s"] = max(0.0, start_s - (t1 - t0) - phases.log_span_s)
    return engine, spec, EngineStart(config_id=cfg.config_id(), start_s=start_s, phases=logged,
                                     compile_cache=phases.compile_cache,
                                     prepare_s=t1 - t0 if prepared is not None else None)


def start_engine(cfg: EngineConfig, env: RunEnvironment, run_dir: Path, devices: list[int] | None = None,
                 on_built: Callable[[Any], None] | None = None):
    """The started engine of `cfg` (pinned to `devices`; None: every visible one) and its catalog model.

    `on_built(engine)` is called with the engine object before it starts (nothing runs yet), so
    that another thread can stop a start in progress (bench.run.prestart); raising there
    starts nothing."""
    from bench.catalog import get_model
    from bench.catalog.engines import get_engine
    from bench.engines import engine_class

    if get_engine(cfg.engine).needs_model_files:
        model_path, spec = model_folder(cfg, env)
    else:
        model_path, spec = None, get_model(cfg.model)
    device: NodeDevice = "cpu" if env.on_cpu else "cuda"
    engine = engine_class(cfg.engine).from_config(
        cfg, model_path=model_path, model_spec=spec, log_path=run_dir / f"engine-{cfg.config_id()}.log",
        device=device, devices=devices, vendor=env.device.vendor, startup_timeout_s=env.startup_timeout_s)
    if cfg.engine.startswith("vllm") and isinstance(getattr(engine, "env", None), dict):
        # torch.compile artifacts persist in bench's cache folder across runs (docs/timing.md)
        engine.env.setdefault(VLLM_CACHE_ENV, str(compile_cache_root(env.cache_dir)))
    if cfg.nnodes > 1:  # the followers' headless processes through their agents (bench.engines.multinode)
        from bench.engines.multinode import over_nodes

        engine = over_nodes(engine, cfg, device)
    if on_built is not None:
        on_built(engine)
    try:
        engine.start()
    except BaseException:
        engine.stop()
        raise
    return engine, spec


def died_point(point: PointSpec, reason: str, records, started: str, run_dir: Path) -> PointResult:
    """A point whose engine or client worker died: failed, with the requests that finished before it on disk."""
    pr = failed_point(point, "failed", reason, started)
    records = records or []
    if records:
        measured = [r for r in records if r.phase == "measured"]
        pr.n_requests = len(measured)
        pr.n_failed = sum(1 for r in measured if not r.ok)
        pr.requests_file = write_requests(run_dir, point.point_id, records)
    return pr


def fail_all(points: list[PointSpec], reason: str, sink: Sink, emit: OnEvent) -> None:
    """Every point of `points` failed for one `reason` (its first line), each on disk at once."""
    for p in points:
        pr = failed_point(p, "failed", one_line(reason))
        sink.point(pr)
        emit(PointDone(pr))
