"""The load of one point in client worker processes, apart from the orchestrator.

The orchestrator (engine control, telemetry, result writing) prepares the point: records,
request bodies (encoded once, into one shared-memory block every worker reads) and, for an
open loop, the global schedule (a rate load's arrival offsets, a trace's timestamps). Each worker runs its own event loop
(bench.load.loop.LoadLoop) with its share of the load:
- concurrency: its part of the slots; every slot takes the next request index of the phase
  from one pipe every worker reads (bench.load.feed), so the point is one global closed loop
  (the last send is made while every other slot is still busy, as with one loop);
- rate and trace: every n-th arrival of the one global schedule, from one shared start time,
  so the arrival process is exactly the planned one; `max_concurrency` is split over the workers.
Warm-up and measured phase are separated by a barrier: the measured phase starts in every
worker once all have finished the warm-up. Each worker watches itself (bench.load.selfwatch)
and sends back its records and figures; bench.load.merge makes one PointRun of them.

No lock is shared between the processes, so a worker SIGKILLed at any moment (an OOM kill)
leaves nothing held that another process waits on:
- request indices come from the pipe (the kernel hands each to one reader, bench.load.feed);
- the stop signal is one shared byte without a lock, written by the orchestrator alone and
  read by every slot before it takes a request;
- messages go over one pipe per direction and worker; the orchestrator reads each worker's
  on a thread of its own, so a worker's death is its pipe's end of file, and one killed half
  way through a message blocks nothing;
- the orchestrator waits on a worker at most WORKER_SILENT_S: each worker sends a heartbeat
  every BEAT_S, and one silent for longer (stopped, stuck) is killed and fails the point
  (bench.load.team, the orchestrator's side).
A worker waits on the orchestrator only while the orchestrator lives: its end of file ends
every such wait.

A worker that dies mid-point fails the point (`ClientWorkerDied`, with the records of the
other workers kept); Ctrl-C ends every worker and the point is not kept (finished points are).
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing import shared_memory

from bench.errors import BenchError, ConfigError, one_line
from bench.load.client import ClientConfig, StreamingClient, raise_fd_limit
from bench.load.feed import IndexFeed, PipeWork
from bench.load.loop import LoadLoop, new_event_loop
from bench.load.merge import merge_point
from bench.load.prepare import prepare
from bench.load.records import RequestRecord
from bench.load.team import BEAT_S, Team
from bench.load.types import ClientSummary, LoadJob, LoopStats, PointRun, ServerLoad, Share
from bench.plan.points import ConcurrencyLoad, LoadSpec, RateLoad, TraceLoad, parse_load

STREAMS_PER_WORKER = 256  # concurrent streams one worker is planned for (one core carries ~75k tok/s here)
PROGRESS_EVERY_S = 0.1  # a worker reports progress at most this often


class ClientWorkerDied(BenchError):
    """A client worker process ended without its results; `records` holds the others' records."""

    def __init__(self, message: str, records: list[RequestRecord]):
        super().__init__(message)
        self.records = records


def available_cores() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def choose_workers(load: LoadSpec | dict, n_requests: int, cores: int | None = None) -> int:
    """Client workers for a load: one per STREAMS_PER_WORKER concurrent streams, at most half of
    the cores beyond two (the orchestrator and the engine's front end need theirs), at least one."""
    spec = parse_load(load)
    if isinstance(spec, ConcurrencyLoad):
        streams = spec.concurrency
    elif isinstance(spec, (RateLoad, TraceLoad)):
        streams = spec.max_concurrency or n_requests
    else:
        raise ConfigError(f"an {spec.kind} load needs a batch engine (vllm-offline, hf), not client workers")
    cores = available_cores() if cores is None else cores
    spare = max(1, (cores - 2) // 2)
    return max(1, min(math.ceil(streams / STREAMS_PER_WORKER), spare, streams))


class SharedBodies(Sequence[bytes]):
    """The point's request bodies in one shared-memory block; `bodies[i]` -> bytes."""

    def __init__(self, name: str, offsets: list[int], create_from: list[bytes] | None = None):
        self.offsets = offsets
        if create_from is not None:
            self.shm = shared_memory.SharedMemory(create=True, size=max(offsets[-1], 1))
            buf = self.shm.buf
            if buf is None:  # None only once closed
                raise BenchError("the shared memory block of the request bodies is closed")
            for i, b in enumerate(create_from):
                buf[offsets[i]:offsets[i + 1]] = b
        else:
            self.shm = shared_memory.SharedMemory(name=name)

    @classmethod
    def create(cls, bodies: list[bytes]) -> SharedBodies:
        offsets = [0]
        for b in bodies:
            offsets.append(offsets[-1] + len(b))
        return cls("", offsets, create_from=bodies)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i):
        return bytes(self.shm.buf[self.offsets[i]:self.offsets[i + 1]])

    def close(self, unlink: bool = False) -> None:
        self.shm.close()
        if unlink:
            self.shm.unlink()


@dataclass(frozen=True)
class WorkerJob:
    """What one worker needs (picklable; the bodies travel by shared memory)."""

    index: int
    n_workers: int
    base_url: str
    model: str
    config: ClientConfig
    tag: str  # the point's X-Request-Id prefix, the same in every worker
    # per request: phase, n_in_expected, n_out_expected[, model, ignore_eos] (issue 21, lora: a LoRA adapter,
    # structured output's early end)
    expected: list[tuple]
    bodies_name: str
    bodies_offsets: list[int]
    load: ServerLoad
    n_warmup: int
    offsets: list[float]  # open loops: the global schedule, s after the measured phase starts
    stall_reporting: bool


def _worker_main(job: WorkerJob, conn, commands, readers: dict, stop) -> None:
    """A client worker process: run its share of the point, send back records and self-watch figures.

    `conn` carries the worker's messages out (blocking sends: records can be megabytes);
    `commands` carries the orchestrator's "go" in, watched by the event loop (which makes
    its descriptor non-blocking: hence two pipes, not one duplex). None: `conn` for both.
    `readers`: each closed-loop phase's request feed (bench.load.feed), by its first index;
    `stop`: the shared stop byte (non-zero: launch nothing more)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the orchestrator owns Ctrl-C and ends the workers
    import asyncio

    try:
        with asyncio.Runner(loop_factory=new_event_loop) as runner:
            records, stats = runner.run(_work(job, conn, commands or conn, readers, stop))
        conn.send(("done", [r for r in records if r.t_send > 0], stats))
    except (EOFError, BrokenPipeError):
        pass  # the orchestrator is gone
    except BaseException as e:  # noqa: BLE001  reported to the orchestrator in one line
        conn.send(("error", one_line(f"{type(e).__name__}: {e}")))


async def _work(job: WorkerJob, conn, commands, readers: dict, stop) -> tuple[list[RequestRecord], LoopStats]:
    import asyncio

    loop = asyncio.get_running_loop()
    inbox: asyncio.Queue = asyncio.Queue()

    def readable() -> None:
        try:
            inbox.put_nowait(commands.recv())
        except EOFError:
            loop.remove_reader(commands.fileno())
            inbox.put_nowait(("gone",))

    loop.add_reader(commands.fileno(), readable)

    def beat() -> None:
        try:
            conn.send(("beat",))
        except OSError:
            return  # the orchestrator is gone; the barrier or the last send says so
        heart["handle"] = loop.call_later(BEAT_S, beat)

    heart = {"handle": loop.call_later(BEAT_S, beat)}

    async def barrier(phase: str) -> float | None:
        conn.send(("at", phase))
        msg = await inbox.get()  # ends with the orchestrator: its end of file is ("gone",)
        if msg[0] != "go":
            raise EOFError("the orchestrator is gone")
        return msg[1]

    last = {"t": 0.0}

    def progress(info: dict) -> None:
        now = time.perf_counter()
        if now - last["t"] >= PROGRESS_EVERY_S or info["done"] == info["total"]:
            last["t"] = now
            conn.send(("progress", info))

    records = [_record(i, e) for i, e in enumerate(job.expected)]
    bodies = SharedBodies(job.bodies_name, job.bodies_offsets)
    try:
        async with StreamingClient(job.base_url, job.model, job.config) as client:
            client.tag = job.tag
            ll = LoadLoop(client, records, bodies, job.load, job.n_warmup, share=Share(job.index, job.n_workers),
                          work=PipeWork(readers), barrier=barrier, progress=progress,
                          stalled=(lambda n: conn.send(("stalled", n))) if job.stall_reporting else None,
                          offsets=job.offsets, should_stop=lambda: stop.value != 0)
            raise_fd_limit(4 * max(ll.width() // job.n_workers + 1, job.n_warmup) + 256)
            await ll.run()
            conn.send(("progress", ll.tracker.info()))
    finally:
        heart["handle"].cancel()
        loop.remove_reader(commands.fileno())
        bodies.close()
    return records, ll.stats(job.index, os.getpid())


def process_context(preload: list[str]):
    """A fresh process per worker: forkserver (a clean server process that imports `preload`
    once, then forks each worker from it: no threads or event loops of this process are
    inherited, and a worker starts in milliseconds), else spawn."""
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(preload)
        return ctx
    return mp.get_context("spawn")


def _record(i: int, expected: tuple) -> RequestRecord:
    """Request `i`'s record from its `WorkerJob.expected` entry."""
    phase, n_in, n_out, *rest = expected
    return RequestRecord(i, phase, n_in, n_out, model=rest[0] if rest else None,
                         ignore_eos=rest[1] if len(rest) > 1 else True)


def run_point_workers(job: LoadJob) -> PointRun:
    """`bench.load.driver.run_point` in `job.workers` client processes (None: `choose_workers`)."""
    spec, n_warmup, cfg, workers = job.server_load, job.n_warmup, job.client, job.workers
    prep = prepare(job)
    records, payloads = prep.records, prep.payloads
    n = workers if workers else choose_workers(spec, job.n_requests)
    width = spec.concurrency if isinstance(spec, ConcurrencyLoad) else (spec.max_concurrency or len(records))
    n = max(1, min(n, width))  # no worker without a slot
    encoder = StreamingClient(job.base_url, job.model, cfg)
    bodies = SharedBodies.create([encoder.body(p, r.n_out_expected, x) for p, r, x in zip(payloads, records, prep.each_extra())])
    team = None
    feeds: dict[int, IndexFeed] = {}
    try:  # from here on the block is unlinked and the feeds closed however the point ends (Ctrl-C included)
        ctx = process_context(["bench.load.workers"])
        stop = ctx.RawValue("b", 0)  # no lock: one writer (this process), every worker reads
        if n_warmup:
            feeds[0] = IndexFeed(0, n_warmup)
        if isinstance(spec, ConcurrencyLoad):
            feeds[n_warmup] = IndexFeed(n_warmup, len(records))
        jobs = [WorkerJob(k, n, job.base_url, job.model, cfg, encoder.tag,
                          [(r.phase, r.n_in_expected, r.n_out_expected, r.model, r.ignore_eos) for r in records],
                          bodies.shm.name, bodies.offsets, spec, n_warmup, prep.offsets,
                          job.stalled is not None) for k in range(n)]
        team = Team(ctx, _worker_main, jobs, feeds, stop, job.progress, job.stalled, len(records))
        team.start()
        team.run(["warmup", "measured"] if n_warmup else ["measured"])
    finally:
        if team is not None:
            team.end()
        for feed in feeds.values():
            feed.close()
        bodies.close(unlink=True)
    for rec_list in team.records.values():
        for r in rec_list:
            records[r.request_id] = r
    client = ClientSummary(cfg.describe(), encoder.tag, n_workers=n, workers_chosen="given" if workers else "auto")
    stats = [team.stats[k] for k in sorted(team.stats)]
    if team.dead:
        sent = [r for r in records if r.t_send > 0]
        raise ClientWorkerDied("; ".join(team.dead), sent)
    return merge_point(records, spec, client, stats)
