"""The types the load modules share, in one module they all import (so none imports another
for a type): what a point is asked to do (`LoadJob`), what a workload hands the client
(`Prompt`, `Workload`), what one event loop is given (`Share`, `Work`, the callbacks) and
gives back (`LoopStats`), and what the point gives back (`PointRun`).

All times are `time.perf_counter()` seconds (CLOCK_MONOTONIC on Linux: one clock for every
process of the box, so the records of several client workers merge without offsets).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal, Protocol

from bench.errors import ConfigError
from bench.load.client import ClientConfig
from bench.load.records import RequestRecord
from bench.plan.adaptive import AdaptiveStop
from bench.plan.points import ConcurrencyLoad, LoadSpec, RateLoad, TraceLoad, parse_load

Progress = Callable[[dict[str, Any]], None]  # {"done", "total", "in_flight", "output_tokens", "elapsed_s"}
Stalled = Callable[[int], None]  # called with the number of in-flight requests quiet for loop.STALL_SHOW_S
Barrier = Callable[[str], Awaitable[float | None]]  # phase -> shared start time (perf_counter s) or None
ServerLoad = ConcurrencyLoad | RateLoad | TraceLoad  # the loads a server point runs (an offline load is a batch engine's)


class Sender(Protocol):
    """What a loop sends one request through: bench.load.client.StreamingClient, or the sessions'
    answer keeper standing in for it (bench.load.sessions)."""

    async def send(self, record: RequestRecord, prompt: list[int] | str | None = None,
                   body: bytes | None = None) -> RequestRecord: ...


@dataclass(frozen=True)
class Prompt:
    """One request: token ids (token-exact) or text, and the lengths asked for (tokens)."""

    n_in_expected: int
    n_out_expected: int
    token_ids: list[int] | None = None
    text: str | None = None
    t_sched_s: float | None = None  # a trace's send time, s after the replay starts (already scaled)
    # issue 21, lora: the model the request names (a LoRA adapter; None: the served base model), and
    # request fields merged into its body (structured output: response_format / tools, ignore_eos)
    model: str | None = None
    extra: dict[str, Any] | None = None

    def for_endpoint(self, endpoint: str) -> list[int] | str:
        """What the client sends: token ids to completions when there are some, else text."""
        if endpoint == "chat" or self.token_ids is None:
            if self.text is None:
                raise ConfigError("the chat endpoint needs a text workload (random with as_text, or a file)")
            return self.text
        return self.token_ids


class Workload(Protocol):
    """A prompt generator (bench.load.workload.make_workload builds one from a point's spec):
    the same prompts for the same seed, and the dict stored in the result config."""

    def prompts(self, n: int) -> list[Prompt]: ...

    def describe(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class LoadJob:
    """One load point to run against an OpenAI-compatible server (bench.load.driver.run_point).

    `load` is a concurrency, rate or trace load (a dict is parsed: ConfigError when invalid; an
    offline load is bench.load.static's, on a batch engine: ConfigError). `client` holds the request options
    (endpoint, request and stall timeouts in s, temperature, headers). `seed` drives a rate
    load's arrivals. `workers`: 0 runs the load in the caller's event loop; K >= 1 in K client
    worker processes; None chooses K from the load and the cores (bench.load.workers). A
    sessions workload always runs in the caller's loop. `progress(info)` gets the finished
    count, in-flight requests and output tokens so far; `stalled(n)` is called (about once a
    second, when n changes) with the in-flight requests quiet for loop.STALL_SHOW_S s."""

    base_url: str
    model: str
    workload: Workload
    load: LoadSpec
    n_warmup: int
    n_requests: int
    client: ClientConfig = field(default_factory=ClientConfig)
    seed: int = 0
    workers: int | None = 0
    progress: Progress | None = None
    stalled: Stalled | None = None
    # adaptive point length (issue 22, bench.load.adaptive): a concurrency point may stop early;
    # it then runs in the caller's loop (the check reads every finished record)
    adaptive: AdaptiveStop | None = None

    def __post_init__(self) -> None:
        load = parse_load(self.load)
        if not isinstance(load, (ConcurrencyLoad, RateLoad, TraceLoad)):
            raise ConfigError(f"an {load.kind} load needs a batch engine (vllm-offline, hf), not a server")
        object.__setattr__(self, "load", load)
        if self.n_requests < 1 or self.n_warmup < 0:
            raise ValueError(f"need n_requests >= 1 and n_warmup >= 0, got {self.n_requests}, {self.n_warmup}")
        if self.workers is not None and self.workers < 0:
            raise ValueError(f"need workers >= 0 (or None: chosen), got {self.workers}")

    @property
    def server_load(self) -> ServerLoad:
        """`load`, narrowed: __post_init__ parsed it and refused an offline load."""
        load = self.load
        if not isinstance(load, (ConcurrencyLoad, RateLoad, TraceLoad)):
            raise ConfigError(f"an {load.kind} load needs a batch engine (vllm-offline, hf), not a server")
        return load


@dataclass(frozen=True)
class Share:
    """One loop's part of a point: `index` of `n_workers`; concurrency slots split evenly."""

    index: int = 0
    n_workers: int = 1

    def part(self, total: int) -> int:
        """This loop's part of `total` slots (the first loops take the remainder)."""
        return total // self.n_workers + (1 if self.index < total % self.n_workers else 0)


class Work(Protocol):
    """Hands out the request indices of a phase to the slots of one loop (bench.load.loop.LocalWork
    in one loop; bench.load.feed.PipeWork across client workers): take() gives the next index,
    None when the phase has no more, or WAIT (-1) when none is queued just now (then await more())."""

    def start(self, begin: int, end: int) -> None: ...

    def take(self) -> int | None: ...

    async def more(self) -> None: ...


@dataclass(frozen=True)
class LoopStats:
    """How one client loop ran over the measured phase (bench.load.selfwatch): event-loop lag (s),
    CPU (s, and its share of one core), unread socket backlog (bytes per connection)."""

    loop_lag_s_p50: float | None
    loop_lag_s_p99: float | None
    loop_lag_s_max: float | None
    loop_lag_samples: int
    cpu_s: float
    wall_s: float
    cpu_share: float | None  # cpu_s / wall_s; None when no wall time passed
    backlog_bytes_max: int | None
    backlog_bytes_p99: int | None
    backlog_samples: int
    index: int  # the worker (0 for the in-process loop)
    pid: int | None  # the worker's process id; None for the in-process loop

    def as_dict(self) -> dict[str, Any]:
        """The figures as run.json's `client.workers[]` holds them."""
        return asdict(self)

    @classmethod
    def from_stored(cls, d: dict[str, Any]) -> LoopStats:
        """Back from run.json's `client.workers[]` (an older writer may lack a figure: None, or 0
        for a count; a key this version does not know is left out)."""
        counts = {"loop_lag_samples", "backlog_samples", "index"}
        kw: dict[str, Any] = {f.name: d.get(f.name, 0 if f.name in counts else None) for f in fields(cls)}
        return cls(**kw)


@dataclass(frozen=True)
class ClientSummary:
    """Who drove a point's load: the request options it sent with (ClientConfig.describe()), the
    prefix of its request ids (the server logs `<prefix>-<request_id>`), and its worker processes."""

    options: dict[str, Any]
    request_id_prefix: str
    n_workers: int  # 0: the orchestrator's own event loop
    workers_chosen: str | None = None  # worker processes: "auto" (from the load and the cores) or "given"


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
    client: ClientSummary | None = None  # None: no client ran (a batch engine's offline point)
    load: dict[str, Any] = field(default_factory=dict)
    loops: list[LoopStats] = field(default_factory=list)  # every loop's self-watch, in worker order
    stop_reason: Literal["converged", "max_requests"] | None = None  # adaptive stop (issue 22); None: not adaptive

    @property
    def measured(self) -> list[RequestRecord]:
        return [r for r in self.records if r.phase == "measured"]

    @property
    def worst_loop(self) -> LoopStats | None:
        """The loop whose event-loop lag p99 is worst; None when no loop sampled its lag."""
        sampled = [w for w in self.loops if w.loop_lag_s_p99 is not None]
        return max(sampled, key=lambda w: w.loop_lag_s_p99 or 0.0) if sampled else None

    @property
    def cpu_busy_cores(self) -> float | None:
        """Client cores busy over the measured phase: the sum of each loop's share of its core."""
        busy = [w.cpu_share for w in self.loops if w.cpu_share is not None]
        return sum(busy) if busy else None

    @property
    def capacity_used(self) -> float | None:
        """The busiest loop's share of its core (1.0: saturated, the client's capacity)."""
        busy = [w.cpu_share for w in self.loops if w.cpu_share is not None]
        return max(busy) if busy else None

    def client_token_counts(self) -> dict[str, int]:
        """Tokens of every request the client ran here, warm-up included (compare with server counter deltas)."""
        return {"generation_tokens": sum(r.n_out for r in self.records),
                "prompt_tokens": sum(r.n_in or 0 for r in self.records)}
