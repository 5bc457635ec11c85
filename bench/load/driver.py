"""One load point: warm-up, then the measured requests under a concurrency or a request rate.

The measurement window (measurement.md section 2) is, for a concurrency load, from the
`t_send` at which the in-flight count first reaches the target (min(concurrency,
n_requests)) to the `t_send` of the last measured request; for a rate load, from the
first measured send to the last. When a concurrency target is never reached the window
starts at the first send and `target_reached` is false (a validity reason).
All times are `time.perf_counter()` seconds.

Request launches are paced to at most `LAUNCHES_PER_ITERATION` per event-loop iteration.
At high concurrency a decode step ends many streams at once (the fake server, like vLLM,
emits in lockstep), and launching all the follow-up requests in one iteration (~0.1 ms
of aiohttp work each, 30-50 ms for 256) would keep the loop from reading its sockets, so
the first tokens of the requests launched first would be stamped late. Paced, the loop
reads between batches; the requests still go out as fast as the client can write them,
and `t_send` is each one's write time either way.

Client-side noise is kept out of the measured phase: request bodies are JSON-encoded
before the point starts, and the garbage collector's heap is frozen (`gc.freeze`, as
vLLM's own bench client does) before the warm-up and again before the measured phase, so
a full collection scans only the objects made during the point instead of pausing the
event loop for every module the process has imported (100+ ms with vLLM or torch loaded).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from bench.errors import ConfigError
from bench.load.arrivals import (
    ConcurrencyLoad,
    LoadSpec,
    RateLoad,
    arrival_offsets_s,
    parse_load,
)
from bench.load.client import (
    DEFAULT_STALL_TIMEOUT_S,
    ClientConfig,
    StreamingClient,
    raise_fd_limit,
)
from bench.load.looplag import LoopLagMonitor
from bench.load.records import RequestRecord
from bench.load.workload import Workload

Progress = Callable[[int, int], None]
Stalled = Callable[[int], None]  # called with the number of in-flight requests quiet for STALL_SHOW_S
LAUNCHES_PER_ITERATION = 16  # request launches per event-loop iteration; 0: no pacing
STALL_SHOW_S = 10.0  # an in-flight request with no token for this long is shown as stalled


@dataclass
class PointRun:
    """What the driver saw of one load point (records in request order, warm-up first)."""

    records: list[RequestRecord]
    window_t0_s: float
    window_t1_s: float
    span_t0_s: float  # first measured send
    span_t1_s: float  # last measured completion
    max_in_flight: int  # measured phase
    target_concurrency: int | None  # concurrency loads: min(concurrency, n_requests)
    target_reached: bool
    target_rate_rps: float | None  # rate loads
    achieved_rate_rps: float | None  # measured sends per second over the window
    client: dict = field(default_factory=dict)  # ClientConfig.describe() + request_id_prefix
    load: dict = field(default_factory=dict)
    loop_lag: dict = field(default_factory=dict)  # LoopLagMonitor.summary() over the measured phase

    @property
    def measured(self) -> list[RequestRecord]:
        return [r for r in self.records if r.phase == "measured"]

    def facts(self) -> dict:
        """The figures `bench.measure.validity.check_point` needs."""
        return {"max_in_flight": self.max_in_flight, "target_concurrency": self.target_concurrency,
                "target_reached": self.target_reached, "target_rate_rps": self.target_rate_rps,
                "achieved_rate_rps": self.achieved_rate_rps, **self.loop_lag}

    def client_token_counts(self) -> dict:
        """Tokens of every request the client ran here, warm-up included (compare with server counter deltas)."""
        return {"generation_tokens": sum(r.n_out for r in self.records),
                "prompt_tokens": sum(r.n_in or 0 for r in self.records)}


class _LaunchGate:
    """Lets at most `per_iteration` callers of `wait()` through per event-loop iteration, in FIFO order."""

    def __init__(self, per_iteration: int):
        self.per_iteration = per_iteration
        self.passed = 0  # in the current iteration
        self.waiters: collections.deque[asyncio.Future] = collections.deque()
        self.reset_scheduled = False

    async def wait(self) -> None:
        if self.per_iteration <= 0:
            return
        if self.passed >= self.per_iteration or self.waiters:
            fut = asyncio.get_running_loop().create_future()
            self.waiters.append(fut)
            await fut  # granted by _next_iteration, which counted it
        else:
            self.passed += 1
        if not self.reset_scheduled:
            self.reset_scheduled = True
            asyncio.get_running_loop().call_soon(self._next_iteration)

    def _next_iteration(self) -> None:
        self.reset_scheduled = False
        self.passed = 0
        while self.waiters and self.passed < self.per_iteration:
            fut = self.waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                self.passed += 1


class _Tracker:
    """In-flight count, its peak, the request that first reached the target, and progress."""

    def __init__(self, progress: Progress | None, n_total: int):
        self.gate = _LaunchGate(LAUNCHES_PER_ITERATION)
        self.progress, self.n_total, self.n_done = progress, n_total, 0
        self.in_flight = self.max_in_flight = 0
        self.target = 0
        self.reach_record: RequestRecord | None = None
        self.open: dict[int, RequestRecord] = {}  # in flight by request_id, for the stalled count

    def n_stalled(self, now_s: float, quiet_s: float | None = None) -> int:
        """In-flight requests with neither a send nor a token in the last `quiet_s` s (default STALL_SHOW_S)."""
        quiet_s = STALL_SHOW_S if quiet_s is None else quiet_s
        return sum(1 for r in self.open.values() if now_s - max(r.t_send, r.t_last or 0.0) >= quiet_s)

    def reset(self, target: int) -> None:
        self.in_flight = self.max_in_flight = 0
        self.target, self.reach_record = target, None

    async def send(self, client: StreamingClient, rec: RequestRecord, body: bytes) -> None:
        await self.gate.wait()
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        if self.reach_record is None and self.target and self.in_flight >= self.target:
            self.reach_record = rec  # the window starts at its t_send (read once the point is over)
        self.open[rec.request_id] = rec
        try:
            await client.send(rec, body=body)
        finally:
            self.open.pop(rec.request_id, None)
            self.in_flight -= 1
            self.n_done += 1
            if self.progress is not None:
                self.progress(self.n_done, self.n_total)


def _freeze_heap() -> None:
    """Collect, then move every tracked object to the GC's permanent generation (off its scans)."""
    gc.collect()
    gc.freeze()


@contextlib.contextmanager
def _gc_frozen():
    """Freeze the heap for a load point; unfreeze afterwards unless the caller had frozen it already."""
    was_frozen = gc.get_freeze_count() > 0
    _freeze_heap()
    try:
        yield
    finally:
        if not was_frozen:
            gc.unfreeze()


async def _closed_loop(client, tracker: _Tracker, recs, bodies, concurrency: int) -> None:
    work = iter(range(len(recs)))

    async def worker() -> None:
        for i in work:
            await tracker.send(client, recs[i], bodies[i])

    await asyncio.gather(*(worker() for _ in range(min(concurrency, len(recs)))))


async def _open_loop(client, tracker: _Tracker, recs, bodies, load: RateLoad, seed: int) -> None:
    offsets = arrival_offsets_s(len(recs), load.rate_rps, load.arrival, load.burstiness, seed)
    cap = asyncio.Semaphore(load.max_concurrency) if load.max_concurrency else None

    async def one(i: int) -> None:
        try:
            await tracker.send(client, recs[i], bodies[i])
        finally:
            if cap is not None:
                cap.release()

    tasks = []
    t_start = time.perf_counter()
    for i, offset in enumerate(offsets.tolist()):
        delay = t_start + offset - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if cap is not None:
            await cap.acquire()
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)


async def run_point(base_url: str, model: str, workload: Workload, load: LoadSpec | dict, n_warmup: int,
                    n_requests: int, endpoint: str = "completions", timeout_s: float | None = None,
                    progress: Progress | None = None, temperature: float = 0.0, seed: int = 0,
                    client_config: ClientConfig | None = None,
                    stall_timeout_s: float | None = DEFAULT_STALL_TIMEOUT_S,
                    stalled: Stalled | None = None) -> PointRun:
    """Run one load point against an OpenAI-compatible server; failed requests are recorded, not raised.

    `load` is a concurrency or rate `LoadSpec` (a dict is parsed; ConfigError when invalid or
    offline); `seed` drives the arrival process; `timeout_s` limits each request (None: from its expected lengths, see
    `ClientConfig`), `stall_timeout_s` the time without a byte; a request past either is
    recorded as failed with a `timeout: ...` error. `stalled(n)` is called (about once a
    second, when n changes) with the in-flight requests quiet for STALL_SHOW_S s.
    `client_config` overrides endpoint/timeouts/temperature when given.
    """
    spec = parse_load(load)
    if not isinstance(spec, (ConcurrencyLoad, RateLoad)):
        raise ConfigError(f"a {spec.kind} load needs an offline engine (vllm-offline, hf), not a server")
    if n_requests < 1 or n_warmup < 0:
        raise ValueError(f"need n_requests >= 1 and n_warmup >= 0, got {n_requests}, {n_warmup}")
    cfg = client_config or ClientConfig(endpoint=endpoint, timeout_s=timeout_s, temperature=temperature,
                                        stall_timeout_s=stall_timeout_s)
    prompts = workload.prompts(n_warmup + n_requests)
    payloads = [p.for_endpoint(cfg.endpoint) for p in prompts]
    records = [RequestRecord(i, "warmup" if i < n_warmup else "measured", p.n_in_expected, p.n_out_expected)
               for i, p in enumerate(prompts)]
    width = spec.concurrency if isinstance(spec, ConcurrencyLoad) else (spec.max_concurrency or n_requests)
    raise_fd_limit(4 * max(width, n_warmup) + 256)
    tracker = _Tracker(progress, len(records))
    warm, meas = records[:n_warmup], records[n_warmup:]
    async with StreamingClient(base_url, model, cfg) as client:
        bodies = [client.body(p, r.n_out_expected) for p, r in zip(payloads, records)]
        with _gc_frozen(), _stall_reporter(tracker, stalled):
            if warm:
                tracker.reset(0)
                await _closed_loop(client, tracker, warm, bodies[:n_warmup], min(width, n_warmup))
                _freeze_heap()
            async with LoopLagMonitor() as lag:
                if isinstance(spec, ConcurrencyLoad):
                    tracker.reset(min(spec.concurrency, n_requests))
                    await _closed_loop(client, tracker, meas, bodies[n_warmup:], spec.concurrency)
                else:
                    tracker.reset(0)
                    await _open_loop(client, tracker, meas, bodies[n_warmup:], spec, seed)
    run = _point_run(records, meas, tracker, spec, cfg.describe() | {"request_id_prefix": client.tag})
    run.loop_lag = lag.summary()
    return run


@contextlib.contextmanager
def _stall_reporter(tracker: _Tracker, stalled: Stalled | None, every_s: float = 1.0):
    """While the point runs: `stalled(n)` each `every_s` s when the stalled count changes."""
    if stalled is None:
        yield
        return
    loop = asyncio.get_running_loop()
    state = {"n": 0, "handle": None}

    def tick() -> None:
        n = tracker.n_stalled(time.perf_counter())
        if n != state["n"]:
            state["n"] = n
            stalled(n)
        state["handle"] = loop.call_later(every_s, tick)

    state["handle"] = loop.call_later(every_s, tick)
    try:
        yield
    finally:
        state["handle"].cancel()
        if state["n"]:
            stalled(0)


def _point_run(records, meas, tracker: _Tracker, spec, client: dict) -> PointRun:
    sends = [r.t_send for r in meas]
    span_t0, last_send = min(sends), max(sends)
    span_t1 = max([r.t_last or r.t_send for r in meas] + [last_send])
    if isinstance(spec, ConcurrencyLoad):
        reached = tracker.reach_record is not None
        t0 = tracker.reach_record.t_send if reached else span_t0
        target_c, target_rate = min(spec.concurrency, len(meas)), None
    else:
        reached, t0, target_c, target_rate = True, span_t0, None, spec.rate_rps
    window_s = last_send - t0
    n_sent_in_window = sum(1 for s in sends if s >= t0)
    achieved = (n_sent_in_window - 1) / window_s if window_s > 0 and n_sent_in_window > 1 else None
    return PointRun(records=records, window_t0_s=t0, window_t1_s=last_send, span_t0_s=span_t0,
                    span_t1_s=span_t1, max_in_flight=tracker.max_in_flight, target_concurrency=target_c,
                    target_reached=reached, target_rate_rps=target_rate, achieved_rate_rps=achieved,
                    client=client, load=spec.model_dump(mode="json"))


def run_point_sync(*args, **kwargs) -> PointRun:
    """`run_point` on a fresh event loop (uvloop when importable)."""
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(run_point(*args, **kwargs))
