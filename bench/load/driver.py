"""One load point: warm-up, then the measured requests under a concurrency or a request rate.

The load runs in client worker processes apart from the orchestrator (bench.load.workers;
`workers=K`), or in this process's event loop (`workers=0`, the library default). Either
way one `LoadLoop` per event loop sends its share of the point, and the records of all
loops are merged into one PointRun (bench.load.merge).

The measurement window (docs/measurement.md section 2) is, for a concurrency load, from the
`t_send` at which the in-flight count first reaches the target (min(concurrency,
n_requests)) to the `t_send` of the last measured request; for a rate load, from the
first measured send to the last. When a concurrency target is never reached the window
starts at the first send and `target_reached` is false (a validity reason). In-flight
counts are computed from the merged records' `t_send` and `t_done`, so they are global
across workers. All times are `time.perf_counter()` seconds: CLOCK_MONOTONIC on Linux,
one clock for every process of the box, so records of all workers merge without offsets.

Request bodies are JSON-encoded before the point starts; how a loop paces its launches and
keeps the garbage collector out of the measured phase is bench.load.loop's.
"""

from __future__ import annotations

import asyncio
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
from bench.load.loop import (  # noqa: F401  the loop's names, as the driver's API
    LAUNCHES_PER_ITERATION,
    STALL_SHOW_S,
    Barrier,
    LoadLoop,
    LocalWork,
    Progress,
    Share,
    Stalled,
    _LaunchGate,
    _Tracker,
)
from bench.load.records import RequestRecord
from bench.load.workload import Workload
from bench.plan.points import TraceLoad


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

    @property
    def measured(self) -> list[RequestRecord]:
        return [r for r in self.records if r.phase == "measured"]

    def facts(self) -> dict:
        """The figures `bench.measure.validity.check_point` needs."""
        return {"max_in_flight": self.max_in_flight, "target_concurrency": self.target_concurrency,
                "target_reached": self.target_reached, "target_rate_rps": self.target_rate_rps,
                "achieved_rate_rps": self.achieved_rate_rps, **self.loop_lag,
                "client_workers": self.client.get("workers") or []}

    def client_token_counts(self) -> dict:
        """Tokens of every request the client ran here, warm-up included (compare with server counter deltas)."""
        return {"generation_tokens": sum(r.n_out for r in self.records),
                "prompt_tokens": sum(r.n_in or 0 for r in self.records)}


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
