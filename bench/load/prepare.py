"""A point made ready to send, before any request goes: its records, its payloads and, for an
open loop, the schedule (bench.load.driver runs it in this process, bench.load.workers in
client worker processes)."""

from __future__ import annotations

from dataclasses import dataclass

from bench.errors import ConfigError
from bench.load.arrivals import arrival_offsets_s
from bench.load.records import RequestRecord
from bench.load.types import LoadJob, Prompt
from bench.plan.points import RateLoad, TraceLoad


@dataclass
class Prepared:
    """A point ready to send: records and payloads (warm-up first) and, for open loops, the
    send offset of each measured request (s after the measured phase starts)."""

    records: list[RequestRecord]
    payloads: list
    offsets: list[float]
    extras: list[dict | None] | None = None  # issue 21, lora: per request, body fields besides the prompt (model, ...)

    def each_extra(self) -> list[dict | None]:
        """Each request's extra body fields (None: none), in record order."""
        return self.extras if self.extras is not None else [None] * len(self.records)


def prepare(job: LoadJob) -> Prepared:
    """The point's records, payloads and schedule, checked before anything is sent.

    A rate load's schedule is drawn from `job.seed` (bench.load.arrivals); a trace load's is
    the workload's own (`Prompt.t_sched_s`, rebased to the first measured request), and a trace
    shorter than n_warmup + n_requests is replayed whole."""
    n_warmup, spec = job.n_warmup, job.load
    prompts = job.workload.prompts(n_warmup + job.n_requests)
    if len(prompts) <= n_warmup:
        raise ConfigError(f"the workload has {len(prompts)} requests: none left to measure after {n_warmup} warm-up")
    payloads = [p.for_endpoint(job.client.endpoint) for p in prompts]
    records = [RequestRecord(i, "warmup" if i < n_warmup else "measured", p.n_in_expected, p.n_out_expected,
                             model=p.model, ignore_eos=(p.extra or {}).get("ignore_eos", True) is not False)
               for i, p in enumerate(prompts)]
    extras = [_extra(p) for p in prompts]
    n_meas = len(prompts) - n_warmup
    if isinstance(spec, RateLoad):
        offsets = arrival_offsets_s(n_meas, spec.rate_rps, spec.arrival, spec.burstiness, job.seed).tolist()
    elif isinstance(spec, TraceLoad):
        sched = [p.t_sched_s for p in prompts[n_warmup:]]
        known = [t for t in sched if t is not None]
        if len(known) < len(sched):
            raise ConfigError("a trace load replays a trace workload's timestamps; this workload has none")
        offsets = [t - known[0] for t in known]
    else:
        offsets = []
    return Prepared(records, payloads, offsets, extras)


def _extra(p: Prompt) -> dict | None:
    """The body fields of `p` besides its prompt and length: its model (a LoRA adapter) and its extra fields."""
    if p.model is None and not p.extra:
        return None
    return {**(p.extra or {}), **({"model": p.model} if p.model is not None else {})}
