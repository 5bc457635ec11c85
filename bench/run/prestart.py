"""`--prestart` (issue 22 item 2): start the next engine configuration's engine on spare
devices while the current one measures, so its start is off the run's critical path
(docs/timing.md, "Pre-starting the next engine").

- `prestart_devices`: which configurations can be pre-started, and on which devices: never
  on a device of the configuration measuring beside it (never two engines on one device).
- `EngineAhead`: one pre-start, on a background thread; `take()` hands the started engine to
  its session (or raises what its start raised), `close()` stops one never taken.
- `run_in_order`: the runner's sequential loop over configurations, with the pre-starts wired
  in (none planned: exactly one configuration after another, as without the option).

Off by default; refused on a CPU host (every configuration shares the same cores) and beside
`--pack` (which already runs configurations side by side).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from bench.errors import ConfigError, EngineError, one_line
from bench.results.point import utc_now
from bench.run.engine_session import Handover, RunContext, Started, run_engine_session, timed_start
from bench.run.events import Notice
from bench.run.startcost import PREPARE_TIMEOUT_S

CLOSE_TIMEOUT_S = 60.0  # an engine stop takes up to ~25 s (SIGINT, SIGTERM, SIGKILL); a start in progress, one more
NOTE_KEY = "prestart"  # run.json extra["prestart"][config_id]
NO_GPUS = "--prestart needs GPUs: on a CPU host every configuration would share the same cores"


def check_prestart(env: Any, pack: bool = False) -> None:
    """ConfigError unless this run can pre-start engines: it needs GPUs (on a CPU host every
    configuration shares the same cores) and excludes `--pack`. Asked before any folder exists."""
    if pack:
        raise ConfigError("--prestart and --pack exclude each other: --pack already runs configurations side by side")
    if env.visible_devices() is None:
        raise ConfigError(NO_GPUS)


def prestart_devices(configs: list, visible: list[int] | None,
                     devices: dict[str, list[int] | None]) -> dict[str, list[int]]:
    """config_id -> devices for each configuration that can start while the one before it
    (in `configs` order) measures: disjoint from that one's devices. A configuration with
    explicit `gpus` keeps them (pre-started only if they are free); the others take the lowest
    free indices. A configuration left out starts after the previous one stops, on its planned
    `devices`, as without the option. Only server engines (a process of their own) are
    pre-started; never a batch engine (it loads inside bench's worker) or a multi-node one."""
    from bench.catalog.engines import get_engine
    from bench.run.devices import devices_for

    if visible is None:
        raise ConfigError(NO_GPUS)
    out: dict[str, list[int]] = {}
    for prev, cfg in zip(configs, configs[1:], strict=False):
        busy = set(out.get(prev.config_id()) or devices[prev.config_id()] or visible)  # what prev's engine holds
        if cfg.nnodes > 1 or prev.nnodes > 1 or get_engine(cfg.engine).kind != "server":
            continue
        try:
            chosen = devices_for(cfg, visible, exclude=busy)
        except ConfigError:  # no room beside it
            continue
        if not busy & set(chosen):  # explicit gpus are returned as they are: check them
            out[cfg.config_id()] = chosen
    return out


class EngineAhead:
    """One configuration's engine started on a background thread while `during` measures.

        ahead = EngineAhead(ctx, cfg, devices, during="cfg-a")
        ahead.begin()                      # after cfg-a's engine is ready and its idle baseline taken
        engine, spec, start = ahead.take()  # when cfg-a is done (raises what the start raised)
        ahead.close()                      # always: stops an engine never taken (bounded)

    Launch, ready and the run's need are stamped on the client's perf_counter clock (the clock
    of the points' windows, `launch_t_s` / `ready_t_s`), and in UTC."""

    def __init__(self, ctx: RunContext, cfg: Any, devices: list[int], during: str):
        self.ctx, self.cfg, self.devices, self.during = ctx, cfg, list(devices), during
        self.config_id = cfg.config_id()
        self.launch_t_s: float | None = None
        self.end_t_s: float | None = None  # the start's end: ready, or failed
        self.ready_t_s: float | None = None
        self.started_utc: str | None = None
        self.ready_utc: str | None = None
        self._engine: Any = None  # built (maybe starting): what close() stops
        self._result: Started | None = None
        self._error: BaseException | None = None
        self._closed = self._taken = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=f"bench-prestart-{self.config_id}", daemon=True)

    def begin(self) -> None:
        """Launch the start on its thread; its record goes to run.json's extra at once."""
        self.launch_t_s, self.started_utc = time.perf_counter(), utc_now("milliseconds")
        self._thread.start()
        self._note()
        self.ctx.emit(Notice(f"pre-starting {self.config_id} on device(s) {self.devices} while {self.during} measures"))

    def _run(self) -> None:
        ctx = self.ctx
        try:
            started = timed_start(self.cfg, ctx.env, ctx.run_dir, self.devices, ctx.prepared, on_built=self._built)
        except BaseException as e:  # noqa: BLE001  (take() raises it in the run's thread)
            self._error, self.end_t_s = e, time.perf_counter()
            return
        with self._lock:
            closed = self._closed
            self.ready_t_s = self.end_t_s = time.perf_counter()
            self.ready_utc = utc_now("milliseconds")
            if not closed:
                self._result = started
        if closed:  # the run ended (or failed) while it started: nobody will take it
            started[0].stop()

    def _built(self, engine: Any) -> None:
        with self._lock:
            if self._closed:
                raise EngineError("pre-start cancelled: the run no longer needs this engine")
            self._engine = engine

    def overlaps(self, t0_s: float, t1_s: float) -> bool:
        """Did this start run at any moment of [t0_s, t1_s] (perf_counter s)?"""
        if self.launch_t_s is None:
            return False
        end = self.end_t_s if self.end_t_s is not None else time.perf_counter()
        return self.launch_t_s < t1_s and end > t0_s

    def take(self) -> Started:
        """(engine, catalog model, EngineStart) once the start is done (bounded wait); raises
        the start's own error (EngineDoesNotFit, EngineError, ...) for the session to record."""
        need_t = time.perf_counter()
        self._thread.join(timeout=self.ctx.env.startup_timeout_s + PREPARE_TIMEOUT_S + CLOSE_TIMEOUT_S)
        if self._thread.is_alive():
            raise EngineError(f"pre-started engine of {self.config_id} not ready in time")
        if self._error is not None:
            self._note(error=one_line(f"{type(self._error).__name__}: {self._error}"))
            raise self._error
        with self._lock:
            if self._result is None:
                raise EngineError(f"pre-started engine of {self.config_id} was stopped")
            self._taken = True
            engine, spec, start = self._result
        assert self.launch_t_s is not None and self.ready_t_s is not None
        # the start's own clock began just after launch_t_s (the thread's start): at most its start_s
        hidden_s = min(start.start_s, max(0.0, min(self.ready_t_s, need_t) - self.launch_t_s))
        self._note()
        return engine, spec, start.model_copy(update={"prestart_during": self.during, "hidden_s": hidden_s})

    def close(self) -> None:
        """Stop the engine unless it was taken; wait for the thread (bounded: CLOSE_TIMEOUT_S).
        A start still in progress is stopped too: its process group ends and the start fails."""
        with self._lock:
            self._closed = True
            if self._taken or self.launch_t_s is None:
                return
        deadline = time.monotonic() + CLOSE_TIMEOUT_S
        while True:  # again each second: the child may be spawned just after a stop found none
            if self._engine is not None:
                self._engine.stop()
            self._thread.join(timeout=1.0)
            if not self._thread.is_alive() or time.monotonic() > deadline:
                break
        if self._thread.is_alive():  # its process group still has bench's watchdog (bench.engines.lifeline)
            self.ctx.emit(Notice(f"pre-started engine of {self.config_id} did not stop in {CLOSE_TIMEOUT_S:.0f} s"))

    def _note(self, error: str | None = None) -> None:
        record = {"devices": self.devices, "during": self.during, "started_utc": self.started_utc,
                  "ready_utc": self.ready_utc, "launch_t_s": self.launch_t_s, "ready_t_s": self.ready_t_s}
        if error is not None:
            record["error"] = error
        self.ctx.sink.note(NOTE_KEY, self.config_id, record)


class _BesideSink:
    """The run's sink, marking each point whose window overlapped the next configuration's
    start (`engine_starting_beside`; a note, never a reason to invalidate)."""

    def __init__(self, parent: Any, ahead: list[EngineAhead]):
        self.parent, self.ahead = parent, ahead

    def point(self, pr) -> None:
        w = pr.window
        if self.ahead and w is not None and w.t0_s is not None and w.t1_s is not None \
                and self.ahead[0].overlaps(w.t0_s, w.t1_s):
            pr = pr.model_copy(update={"engine_starting_beside": self.ahead[0].config_id})
        self.parent.point(pr)

    def note(self, key: str, config_id: str, value) -> None:
        self.parent.note(key, config_id, value)

    def power(self, frame) -> None:
        self.parent.power(frame)

    def server_metrics(self, frame) -> None:
        self.parent.server_metrics(frame)

    def engine_started(self, start) -> None:
        self.parent.engine_started(start)


def run_in_order(ctx: RunContext, configs: list, todo: dict[str, list], devices: dict[str, list[int] | None],
                 ahead_devices: dict[str, list[int]], raise_start: Callable[[], bool]) -> None:
    """Each configuration of `configs` in turn (its `todo` points on its `devices`); one in
    `ahead_devices` is started on those devices once the configuration before it is ready
    (`EngineAhead`). `raise_start()`: whether a start failure should end the run. Every engine
    pre-started and never taken is stopped before this returns or raises."""
    ahead: list[EngineAhead] = []  # at most one: the next configuration's pre-start, once begun
    try:
        for i, cfg in enumerate(configs):
            cid = cfg.config_id()
            nxt = configs[i + 1] if i + 1 < len(configs) else None
            if nxt is not None and ctx.prepared is not None:  # the next folder is ready when this one ends
                ctx.prepared.ahead(nxt)
            mine = ahead.pop() if ahead else None  # this configuration's own pre-start
            pre = ahead_devices.get(nxt.config_id()) if nxt is not None else None
            hand = Handover(first_start=mine.take if mine is not None else None,
                            on_ready=_begin(ctx, ahead, nxt, pre, cid) if nxt is not None and pre else None,
                            beside=tuple(pre or ()))
            try:
                run_engine_session(replace(ctx, sink=_BesideSink(ctx.sink, ahead)), cfg, todo[cid],
                                   devices[cid], raise_start=raise_start(), handover=hand)
            finally:
                if mine is not None:
                    mine.close()  # taken: nothing to do; a session that never took it: stopped
    finally:
        for a in ahead:
            a.close()


def _begin(ctx: RunContext, ahead: list[EngineAhead], cfg: Any, devices: list[int], during: str):
    def begin() -> None:
        a = EngineAhead(ctx, cfg, devices, during)
        ahead.append(a)  # before begin(): close() then covers it whatever happens next
        a.begin()
    return begin
