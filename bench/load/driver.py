"""One load point: warm-up, then the measured requests under a concurrency or a request rate.

The load runs in client worker processes apart from the orchestrator (bench.load.workers;
`workers=K`), or in this process's event loop (`workers=0`, the library default). Either
way one `LoadLoop` per event loop sends its share of the point, and the records of all
loops are merged into one PointRun (bench.load.merge).

The measurement window (measurement.md section 2) is, for a concurrency load, from the
`t_send` at which the in-flight count first reaches the target (min(concurrency,
n_requests)) to the `t_send` of the last measured request; for a rate load, from the
first measured send to the last. When a concurrency target is never reached the window
starts at the first send and `target_reached` is false (a validity reason). In-flight
counts are computed from the merged records' `t_send` and `t_done`, so they are global
across workers. All times are `time.perf_counter()` seconds: CLOCK_MONOTONIC on Linux,
one clock for every process of the box, so records of all workers merge without offsets.

Request launches are paced to at most `LAUNCHES_PER_ITERATION` per event-loop iteration.
At high concurrency a decode step ends many streams at once (the fake server, like vLLM,
emits in lockstep), and launching all the follow-up requests in one iteration would keep
the loop from reading its sockets, so the first tokens of the requests launched first
would be stamped late. Paced, the loop reads between batches; `t_send` is each request's
write time either way.

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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from bench.errors import ConfigError
from bench.load.arrivals import ConcurrencyLoad, LoadSpec, RateLoad, arrival_offsets_s, parse_load
from bench.plan.points import TraceLoad
from bench.load.client import DEFAULT_STALL_TIMEOUT_S, ClientConfig, StreamingClient, raise_fd_limit
from bench.load.records import RequestRecord
from bench.load.selfwatch import SelfWatch
from bench.load.workload import Workload

Progress = Callable[[dict], None]  # {"done", "total", "in_flight", "output_tokens", "elapsed_s"}
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
    max_in_flight: int  # measured phase, over every worker
    target_concurrency: int | None  # concurrency loads: min(concurrency, n_requests)
    target_reached: bool
    target_rate_rps: float | None  # rate loads
    achieved_rate_rps: float | None  # measured sends per second over the window
    client: dict = field(default_factory=dict)  # ClientConfig.describe(), request_id_prefix, workers
    load: dict = field(default_factory=dict)
    loop_lag: dict = field(default_factory=dict)  # the worst worker's LoopLagMonitor.summary()
    schedule_lag_s_p99: float | None = None  # rate and trace loads: actual - scheduled send, p99 (s)

    @property
    def measured(self) -> list[RequestRecord]:
        return [r for r in self.records if r.phase == "measured"]

    def facts(self) -> dict:
        """The figures `bench.measure.validity.check_point` needs."""
        return {"max_in_flight": self.max_in_flight, "target_concurrency": self.target_concurrency,
                "target_reached": self.target_reached, "target_rate_rps": self.target_rate_rps,
                "achieved_rate_rps": self.achieved_rate_rps, **self.loop_lag,
                "schedule_lag_s_p99": self.schedule_lag_s_p99,
                "client_workers": self.client.get("workers") or []}

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
    """This loop's in-flight requests, its finished count and tokens, for progress and stalls."""

    def __init__(self, progress: Progress | None, n_total: int, worker: int = 0):
        self.gate = _LaunchGate(LAUNCHES_PER_ITERATION)
        self.worker = worker
        self.progress, self.n_total, self.n_done = progress, n_total, 0
        self.output_tokens = 0
        self.t_first_send: float | None = None
        self.open: dict[int, RequestRecord] = {}  # in flight by request_id, for the stalled count

    def n_stalled(self, now_s: float, quiet_s: float | None = None) -> int:
        """In-flight requests with neither a send nor a token in the last `quiet_s` s (default STALL_SHOW_S)."""
        quiet_s = STALL_SHOW_S if quiet_s is None else quiet_s
        return sum(1 for r in self.open.values() if now_s - max(r.t_send, r.t_last or 0.0) >= quiet_s)

    def info(self) -> dict:
        now = time.perf_counter()
        return {"done": self.n_done, "total": self.n_total, "in_flight": len(self.open),
                "output_tokens": self.output_tokens,
                "elapsed_s": 0.0 if self.t_first_send is None else now - self.t_first_send}

    async def send(self, client: StreamingClient, rec: RequestRecord, body: bytes) -> None:
        await self.gate.wait()
        rec.worker = self.worker
        self.open[rec.request_id] = rec
        try:
            await client.send(rec, body=body)
        finally:
            rec.t_done = time.perf_counter()
            if self.t_first_send is None:
                self.t_first_send = rec.t_send
            self.open.pop(rec.request_id, None)
            self.n_done += 1
            self.output_tokens += rec.n_out
            if self.progress is not None:
                self.progress(self.info())


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


class LocalWork:
    """Hands out request indices of a phase to the slots of one loop (a shared counter in workers)."""

    def __init__(self) -> None:
        self._next = 0
        self._end = 0

    def start(self, begin: int, end: int) -> None:
        self._next, self._end = begin, end

    def take(self) -> int | None:
        if self._next >= self._end:
            return None
        i, self._next = self._next, self._next + 1
        return i


@dataclass(frozen=True)
class Share:
    """One loop's part of a point: `index` of `n_workers`; concurrency slots split evenly."""

    index: int = 0
    n_workers: int = 1

    def part(self, total: int) -> int:
        """This loop's part of `total` slots (the first loops take the remainder)."""
        return total // self.n_workers + (1 if self.index < total % self.n_workers else 0)


Barrier = Callable[[str], Awaitable[float | None]]  # phase -> shared start time (perf_counter s) or None


async def _no_barrier(phase: str) -> float | None:
    return None


class LoadLoop:
    """Sends one loop's share of a point's requests: `await loop.run(...)` fills `records`.

    `records` and `bodies` hold every request of the point (warm-up first); which ones this
    loop sends is decided by `work` (closed loops: the next index of the phase) and `share`
    (rate loads: every n_workers-th arrival of the global schedule)."""

    def __init__(self, client: StreamingClient, records: list[RequestRecord], bodies: list[bytes], spec: LoadSpec,
                 n_warmup: int, *, share: Share = Share(), work=None, barrier: Barrier = _no_barrier,
                 progress: Progress | None = None, stalled: Stalled | None = None,
                 offsets: list[float] | None = None, should_stop: Callable[[], bool] = lambda: False):
        self.client, self.records, self.bodies, self.spec = client, records, bodies, spec
        self.n_warmup, self.share = n_warmup, share
        self.offsets = offsets or []  # open loops: send time of each measured request, s after the start
        self.work = work or LocalWork()
        self.barrier, self.stalled, self.should_stop = barrier, stalled, should_stop
        self.tracker = _Tracker(progress, len(records), share.index)
        self.watch: SelfWatch | None = None

    def width(self) -> int:
        spec = self.spec
        n = len(self.records) - self.n_warmup
        return spec.concurrency if isinstance(spec, ConcurrencyLoad) else (spec.max_concurrency or n)

    async def run(self) -> None:
        n_total, nw = len(self.records), self.n_warmup
        with _gc_frozen(), _stall_reporter(self.tracker, self.stalled):
            if nw:
                await self.barrier("warmup")
                self.work.start(0, nw)
                await self._closed(self.share.part(min(self.width(), nw)))
                _freeze_heap()
            t_start = await self.barrier("measured")
            self.watch = SelfWatch(self.client)
            async with self.watch:
                if isinstance(self.spec, ConcurrencyLoad):
                    self.work.start(nw, n_total)
                    await self._closed(self.share.part(self.spec.concurrency))
                else:
                    await self._open(t_start)

    async def _closed(self, slots: int) -> None:
        recs, bodies, tracker, client, work = self.records, self.bodies, self.tracker, self.client, self.work

        async def slot() -> None:
            while not self.should_stop():
                i = work.take()
                if i is None:
                    return
                await tracker.send(client, recs[i], bodies[i])

        await asyncio.gather(*(slot() for _ in range(slots)))

    async def _open(self, t_start: float | None) -> None:
        spec, nw, offsets = self.spec, self.n_warmup, self.offsets
        n = len(self.records) - nw
        cap_total = spec.max_concurrency
        cap = asyncio.Semaphore(max(self.share.part(cap_total), 1)) if cap_total else None

        async def one(i: int) -> None:
            try:
                await self.tracker.send(self.client, self.records[i], self.bodies[i])
            finally:
                if cap is not None:
                    cap.release()

        tasks = []
        t_start = time.perf_counter() if t_start is None else t_start
        for k in range(self.share.index, n, self.share.n_workers):  # the global schedule, every n-th arrival
            if self.should_stop():
                break
            t_sched = self.records[nw + k].t_sched = t_start + offsets[k]
            delay = t_sched - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if cap is not None:
                await cap.acquire()
            tasks.append(asyncio.create_task(one(nw + k)))
        await asyncio.gather(*tasks)


@dataclass
class Prepared:
    """A point ready to send: records and payloads (warm-up first) and, for open loops, the
    send offset of each measured request (s after the measured phase starts)."""

    records: list[RequestRecord]
    payloads: list
    offsets: list[float]


def prepare(workload: Workload, spec: LoadSpec, n_warmup: int, n_requests: int, cfg: ClientConfig,
            seed: int = 0) -> Prepared:
    """The point's records, payloads and schedule, checked before anything is sent.

    A rate load's schedule is drawn from `seed` (bench.load.arrivals); a trace load's is the
    workload's own (`Prompt.t_sched_s`, rebased to the first measured request), and a trace
    shorter than n_warmup + n_requests is replayed whole."""
    if not isinstance(spec, (ConcurrencyLoad, RateLoad, TraceLoad)):
        raise ConfigError(f"a {spec.kind} load needs an offline engine (vllm-offline, hf), not a server")
    if n_requests < 1 or n_warmup < 0:
        raise ValueError(f"need n_requests >= 1 and n_warmup >= 0, got {n_requests}, {n_warmup}")
    prompts = workload.prompts(n_warmup + n_requests)
    if len(prompts) <= n_warmup:
        raise ConfigError(f"the workload has {len(prompts)} requests: none left to measure after {n_warmup} warm-up")
    payloads = [p.for_endpoint(cfg.endpoint) for p in prompts]
    records = [RequestRecord(i, "warmup" if i < n_warmup else "measured", p.n_in_expected, p.n_out_expected)
               for i, p in enumerate(prompts)]
    n_meas = len(prompts) - n_warmup
    if isinstance(spec, RateLoad):
        offsets = arrival_offsets_s(n_meas, spec.rate_rps, spec.arrival, spec.burstiness, seed).tolist()
    elif isinstance(spec, TraceLoad):
        sched = [p.t_sched_s for p in prompts[n_warmup:]]
        if any(t is None for t in sched):
            raise ConfigError("a trace load replays a trace workload's timestamps; this workload has none")
        offsets = [t - sched[0] for t in sched]
    else:
        offsets = []
    return Prepared(records, payloads, offsets)


async def run_point(base_url: str, model: str, workload: Workload, load: LoadSpec | dict, n_warmup: int,
                    n_requests: int, endpoint: str = "completions", timeout_s: float | None = None,
                    progress: Progress | None = None, temperature: float = 0.0, seed: int = 0,
                    client_config: ClientConfig | None = None,
                    stall_timeout_s: float | None = DEFAULT_STALL_TIMEOUT_S,
                    stalled: Stalled | None = None, workers: int | None = 0) -> PointRun:
    """Run one load point against an OpenAI-compatible server; failed requests are recorded, not raised.

    `load` is a concurrency or rate `LoadSpec` (a dict is parsed; ConfigError when invalid or
    offline); `seed` drives the arrival process; `timeout_s` limits each request (None: from
    its expected lengths, see `ClientConfig`), `stall_timeout_s` the time without a byte; a
    request past either is recorded as failed with a `timeout: ...` error. `progress(info)`
    gets the finished count, in-flight requests and output tokens so far; `stalled(n)` is
    called (about once a second, when n changes) with the in-flight requests quiet for
    STALL_SHOW_S s. `client_config` overrides endpoint/timeouts/temperature when given.
    `workers`: 0 runs the load in this event loop; K >= 1 in K client worker processes;
    None chooses K from the load and the cores (bench.load.workers.choose_workers).
    """
    from bench.load.sessions import SessionWorkload, run_sessions_point

    if isinstance(workload, SessionWorkload):  # a turn needs the previous answer: this loop, no bodies, no workers
        return await run_sessions_point(base_url, model, workload, load, n_warmup, n_requests, timeout_s=timeout_s,
                                        progress=progress, temperature=temperature, client_config=client_config,
                                        stall_timeout_s=stall_timeout_s, stalled=stalled)
    if workers != 0:
        from bench.load.workers import run_point_workers

        return await asyncio.to_thread(
            run_point_workers, base_url, model, workload, load, n_warmup, n_requests, endpoint=endpoint,
            timeout_s=timeout_s, progress=progress, temperature=temperature, seed=seed,
            client_config=client_config, stall_timeout_s=stall_timeout_s, stalled=stalled, workers=workers)
    from bench.load.merge import merge_point

    spec = parse_load(load)
    cfg = client_config or ClientConfig(endpoint=endpoint, timeout_s=timeout_s, temperature=temperature,
                                        stall_timeout_s=stall_timeout_s)
    prep = prepare(workload, spec, n_warmup, n_requests, cfg, seed)
    records, payloads = prep.records, prep.payloads
    async with StreamingClient(base_url, model, cfg) as client:
        loop = LoadLoop(client, records, [], spec, n_warmup, progress=progress, stalled=stalled, offsets=prep.offsets)
        raise_fd_limit(4 * max(loop.width(), n_warmup) + 256)
        loop.bodies = [client.body(p, r.n_out_expected) for p, r in zip(payloads, records)]
        await loop.run()
    stats = loop.watch.summary() | {"index": 0, "pid": None}
    return merge_point(records, spec, cfg.describe() | {"request_id_prefix": client.tag, "n_workers": 0},
                       [stats])


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


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's event loop when importable, else asyncio's."""
    try:
        import uvloop

        return uvloop.new_event_loop()
    except ImportError:
        return asyncio.new_event_loop()


def run_point_sync(*args, **kwargs) -> PointRun:
    """`run_point` from synchronous code: worker processes, or a fresh event loop (uvloop when importable).

    A sessions workload always runs in this event loop: each turn is built from the answers
    before it (bench.load.sessions), which the worker processes do not do."""
    from bench.load.sessions import SessionWorkload

    if isinstance(args[2] if len(args) > 2 else kwargs.get("workload"), SessionWorkload):
        kwargs["workers"] = 0
    if kwargs.get("workers", 0) != 0:
        from bench.load.workers import run_point_workers

        return run_point_workers(*args, **kwargs)
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        return runner.run(run_point(*args, **kwargs))
