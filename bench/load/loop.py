"""One event loop's share of a load point: the loop that sends requests, paces launches and
watches for stalls (bench.load.driver runs it in this process, bench.load.workers in each
client worker process).

Request launches are paced to at most `LAUNCHES_PER_ITERATION` per event-loop iteration.
At high concurrency a decode step ends many streams at once (the fake server, like vLLM,
emits in lockstep), and launching all the follow-up requests in one iteration would keep
the loop from reading its sockets, so the first tokens of the requests launched first
would be stamped late. Paced, the loop reads between batches; `t_send` is each request's
write time either way.

The garbage collector's heap is frozen (`gc.freeze`, as vLLM's own bench client does)
before the warm-up and again before the measured phase, so a full collection scans only
the objects made during the point instead of pausing the event loop for every module the
process has imported (100+ ms with vLLM or torch loaded).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import time
from collections.abc import Callable, Sequence

from bench.load.client import StreamingClient
from bench.load.records import RequestRecord
from bench.load.selfwatch import SelfWatch
from bench.load.types import Barrier, LoopStats, Progress, Sender, ServerLoad, Share, Stalled, Work
from bench.plan.points import ConcurrencyLoad

LAUNCHES_PER_ITERATION = 16  # request launches per event-loop iteration; 0: no pacing
STALL_SHOW_S = 10.0  # an in-flight request with no token for this long is shown as stalled


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

    async def send(self, client: Sender, rec: RequestRecord, body: bytes) -> None:
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
    """Hands out request indices of a phase to the slots of one loop (`Work`; in client workers:
    one pipe every worker reads, bench.load.feed.PipeWork, whose take() may also say WAIT (-1))."""

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

    async def more(self) -> None:
        """Never awaited: take() here never says WAIT."""


async def _no_barrier(phase: str) -> float | None:
    return None


class LoadLoop:
    """Sends one loop's share of a point's requests: `await loop.run(...)` fills `records`.

    `records` and `bodies` hold every request of the point (warm-up first); which ones this
    loop sends is decided by `work` (closed loops: the next index of the phase) and `share`
    (rate loads: every n_workers-th arrival of the global schedule)."""

    def __init__(self, client: StreamingClient, records: list[RequestRecord], bodies: Sequence[bytes], spec: ServerLoad,
                 n_warmup: int, *, share: Share | None = None, work: Work | None = None,
                 barrier: Barrier = _no_barrier, progress: Progress | None = None, stalled: Stalled | None = None,
                 offsets: list[float] | None = None, should_stop: Callable[[], bool] = lambda: False):
        self.client, self.records, self.bodies, self.spec = client, records, bodies, spec
        self.n_warmup, self.share = n_warmup, share or Share()
        self.offsets = offsets or []  # open loops: send time of each measured request, s after the start
        self.work = work or LocalWork()
        self.barrier, self.stalled, self.should_stop = barrier, stalled, should_stop
        self.tracker = _Tracker(progress, len(records), self.share.index)
        self.watch: SelfWatch | None = None

    def stats(self, index: int = 0, pid: int | None = None) -> LoopStats:
        """The self-watch figures of the measured phase (SelfWatch.stats), once run() has run it."""
        if self.watch is None:
            raise RuntimeError("no measured phase has run in this loop")
        return self.watch.stats(index, pid)

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
                if i < 0:  # a shared feed with nothing queued just now (bench.load.feed): more is coming
                    await work.more()
                    continue
                await tracker.send(client, recs[i], bodies[i])

        await asyncio.gather(*(slot() for _ in range(slots)))

    async def _open(self, t_start: float | None) -> None:
        spec, nw, offsets = self.spec, self.n_warmup, self.offsets
        n = len(self.records) - nw
        cap_total = None if isinstance(spec, ConcurrencyLoad) else spec.max_concurrency  # run() opens no closed load
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


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's event loop when importable, else asyncio's."""
    try:
        import uvloop

        return uvloop.new_event_loop()
    except ImportError:
        return asyncio.new_event_loop()


@contextlib.contextmanager
def _stall_reporter(tracker: _Tracker, stalled: Stalled | None, every_s: float = 1.0):
    """While the point runs: `stalled(n)` each `every_s` s when the stalled count changes."""
    if stalled is None:
        yield
        return
    loop = asyncio.get_running_loop()
    shown = 0  # the stalled count last reported
    handle: asyncio.TimerHandle  # the next tick

    def tick() -> None:
        nonlocal shown, handle
        n = tracker.n_stalled(time.perf_counter())
        if n != shown:
            shown = n
            stalled(n)
        handle = loop.call_later(every_s, tick)

    handle = loop.call_later(every_s, tick)
    try:
        yield
    finally:
        handle.cancel()
        if shown:
            stalled(0)
