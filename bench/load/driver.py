"""One load point: warm-up, then the measured requests under a concurrency, a request rate or a
trace's schedule. A `LoadJob` (bench.load.types) says what to run; `run_point(job)` (async) and
`run_point_sync(job)` run it and return a `PointRun`.

The load runs in client worker processes apart from the orchestrator (bench.load.workers;
`job.workers=K`), or in this process's event loop (`workers=0`, the library default); a
sessions workload always in this event loop (bench.load.sessions: a turn needs the previous
answer). Either way one `LoadLoop` per event loop sends its share of the point, and the records
of all loops are merged into one PointRun (bench.load.merge).

The measurement window (docs/measurement.md section 2) is, for a concurrency load, from the
`t_send` at which the in-flight count first reaches the target (min(concurrency,
n_requests)) to the `t_send` of the last measured request; for a rate load, from the
first measured send to the last. When a concurrency target is never reached the window
starts at the first send and `target_reached` is false (a validity reason). In-flight
counts are computed from the merged records' `t_send` and `t_done`, so they are global
across workers. All times are `time.perf_counter()` seconds: CLOCK_MONOTONIC on Linux,
one clock for every process of the box, so records of all workers merge without offsets.

Request bodies are JSON-encoded before the point starts (bench.load.prepare); how a loop paces
its launches and keeps the garbage collector out of the measured phase is bench.load.loop's.
"""

from __future__ import annotations

import asyncio

from bench.load.adaptive import Convergence
from bench.load.client import StreamingClient, raise_fd_limit
from bench.load.loop import LoadLoop, new_event_loop
from bench.load.merge import merge_point
from bench.load.prepare import prepare
from bench.load.sessions import ChatSessions, run_sessions_point
from bench.load.types import ClientSummary, LoadJob, PointRun
from bench.load.workers import run_point_workers
from bench.plan.points import ConcurrencyLoad


def in_this_loop(job: LoadJob) -> bool:
    """Whether the job runs in the caller's event loop: asked for (workers=0), or a sessions
    workload, whose turns are built from the answers before them (no worker process does that)."""
    return job.workers == 0 or isinstance(job.workload, ChatSessions) or adaptive(job)


def _never() -> bool:
    return False


def adaptive(job: LoadJob) -> bool:
    """Whether the job may stop early (bench.load.adaptive): asked for, on a concurrency load."""
    return job.adaptive is not None and isinstance(job.load, ConcurrencyLoad)


async def run_point(job: LoadJob) -> PointRun:
    """Run one load point against an OpenAI-compatible server; failed requests are recorded, not
    raised. A request past the client's request or stall limit is recorded as failed with a
    `timeout: ...` error. Client worker processes run on a thread, so this loop stays free."""
    if isinstance(job.workload, ChatSessions):
        return await run_sessions_point(job)
    if not in_this_loop(job):
        return await asyncio.to_thread(run_point_workers, job)
    prep = prepare(job)
    records = prep.records
    async with StreamingClient(job.base_url, job.model, job.client) as client:
        stop = Convergence(job.adaptive, records, job.n_warmup) if job.adaptive and adaptive(job) else None
        loop = LoadLoop(client, records, [], job.server_load, job.n_warmup, progress=job.progress, stalled=job.stalled,
                        offsets=prep.offsets, should_stop=stop if stop is not None else _never)
        raise_fd_limit(4 * max(loop.width(), job.n_warmup) + 256)
        loop.bodies = [client.body(p, r.n_out_expected, x) for p, r, x in zip(prep.payloads, records, prep.each_extra())]
        await loop.run()
    info = ClientSummary(job.client.describe(), client.tag, n_workers=0)
    if stop is not None:  # the requests never launched are no records of the point
        records[:] = [r for r in records[:job.n_warmup]] + [r for r in records[job.n_warmup:] if r.t_done is not None]
    run = merge_point(records, job.load, info, [loop.stats()])
    if stop is not None:
        run.stop_reason = "converged" if stop.converged else "max_requests"
    return run


def run_point_sync(job: LoadJob) -> PointRun:
    """`run_point` from synchronous code: client worker processes, or a fresh event loop (uvloop
    when importable)."""
    if not in_this_loop(job):
        return run_point_workers(job)
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        return runner.run(run_point(job))
