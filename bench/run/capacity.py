"""Run an SLO capacity search (bench.plan.capacity) on one engine start: every probe is an
ordinary load point, written to run.json as it finishes, so an interrupted search resumes
(`--resume`) from the probes already on disk without measuring them again.

A crash is not a miss. A probe whose point failed (its engine died: the runner restarts it;
a client worker died; no measurement) is measured again, at most PROBE_RETRIES times, as
`..._r<rep>-retry<k>`; the failed attempts stay in run.json and the level's step says they were
retried. A probe that still fails stops the search: no boundary is claimed (`boundary` None,
`stopped` says why, `last_passing` the largest level that met the SLO before), and the run
ends `partial` or `failed` like any run with failed points. A resumed search reuses every
probe measured on disk (a retry included) and measures a failed one again.

A measured probe that is invalid (docs/measurement.md section 5) counts as not meeting the SLO
(its reasons are kept in the step). At the boundary (the largest passing level) the repeats'
tok/s per GPU, goodput, $/Mtok and J/token (gross and idle-net) are given as mean and
standard deviation.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

from pydantic import BaseModel, Field

from bench.errors import one_line
from bench.plan import PointSpec
from bench.plan.capacity import CapacitySearch
from bench.plan.pointid import PointId
from bench.plan.points import ConcurrencyLoad, RateLoad
from bench.results import RunResult
from bench.run.engine_session import RunContext, run_engine_session
from bench.run.status import measured

PROBE_RETRIES = 2  # a failed probe is measured again at most this many times, then the search stops


def probe_requests(level: float, min_requests: int = 100, per_level: int = 4) -> tuple[int, int]:
    """(n_warmup, n_requests) of a probe at `level`, by the plan's rule (bench.plan.plan)."""
    lv = max(1, math.ceil(level))
    return max(1, lv), max(min_requests + lv, per_level * lv)


class CapacityRun:
    """The probes of one search: PointSpecs per level and repeat, and the search fed with results."""

    def __init__(self, search: CapacitySearch, template: PointSpec, done: dict[str, Any] | None = None,
                 min_requests: int = 100):
        self.search, self.template, self.min_requests = search, template, min_requests
        # point id -> PointResult already on disk (a resumed run); a crashed one is measured again
        self.done = {pid: pr for pid, pr in (done or {}).items() if measured(pr)}
        self.results: dict[float, dict[int, Any]] = {}
        self.level: float | None = None
        self.attempts: dict[tuple[float, int], int] = {}  # (level, repeat) -> failed attempts so far
        self.retried: dict[float, list[str]] = {}  # level -> "point id: error" of each failed attempt
        self.stopped: str | None = None  # why the search ended without a boundary
        self.goodput_slo = {k.rsplit("_", 1)[0]: v for k, v in search.slo.items()
                            if k.rsplit("_", 1)[0] in ("ttft_s", "tpot_s", "e2e_s")}

    def load_of(self, level: float):
        if self.search.kind == "concurrency":
            return ConcurrencyLoad(concurrency=int(level))
        return RateLoad(rate_rps=level)

    def point(self, level: float, rep: int, attempt: int = 0) -> PointSpec:
        """The probe of `level`, repeat `rep`; `attempt` k > 0 is its k-th retry after a failure."""
        load = self.load_of(level)
        n_warmup, n_requests = probe_requests(level, self.min_requests)
        return self.template.model_copy(update={
            "point_id": str(PointId.parse(self.template.point_id).probe(load, rep, attempt)), "load": load,
            "n_warmup": n_warmup,
            "n_requests": n_requests, "repeat": rep, "slo": self.goodput_slo or None})

    def _on_disk(self, level: float, rep: int):
        """The probe's measured result from an earlier run of this search (any attempt), else None."""
        for attempt in range(PROBE_RETRIES + 1):
            if (pr := self.done.get(self.point(level, rep, attempt).point_id)) is not None:
                return pr
        return None

    def first(self) -> list[PointSpec]:
        """The probes to measure first (finished ones on disk are fed to the search)."""
        return self._advance(self.search.next_level())

    def more(self, pr) -> list[PointSpec]:
        """After one probe: the next probes (none while the level's repeats are running); a
        failed probe's retry, or nothing once it failed 1 + PROBE_RETRIES times (`stopped`)."""
        for level, reps in self.results.items():
            for rep, got in reps.items():
                attempt = self.attempts.get((level, rep), 0)
                if got is not None or self.point(level, rep, attempt).point_id != pr.point_id:
                    continue
                if measured(pr):  # ok, or every request failed under load: a verdict, not a crash
                    reps[rep] = pr
                    continue
                self.attempts[(level, rep)] = attempt + 1
                self.retried.setdefault(level, []).append(f"{pr.point_id}: {pr.error}")
                if attempt + 1 > PROBE_RETRIES:
                    self.stop(f"probe {self.point(level, rep).point_id} failed {attempt + 1} times "
                              f"(last: {pr.error})")
                    return []
                return [self.point(level, rep, attempt + 1)]
        if self.stopped or self.level is None or any(v is None for v in self.results[self.level].values()):
            return []
        self._verdict(self.level)
        return self._advance(self.search.next_level())

    def stop(self, why: str) -> None:
        """End the search without a boundary (one line: why)."""
        self.stopped = one_line(why)
        self.level = None

    def _advance(self, level: float | None) -> list[PointSpec]:
        while level is not None:
            self.level = level
            reps = self.results.setdefault(level, {})
            todo = []
            for rep in range(self.search.repeats):
                reps[rep] = self._on_disk(level, rep)
                if reps[rep] is None:
                    todo.append(self.point(level, rep, self.attempts.get((level, rep), 0)))
            if todo:
                return todo
            self._verdict(level)  # every repeat already on disk: no measurement needed
            level = self.search.next_level()
        self.level = None
        return []

    def _verdict(self, level: float) -> None:
        metrics = []
        for pr in self.results[level].values():
            ok = pr is not None and pr.status == "ok" and pr.valid and pr.metrics is not None
            metrics.append(pr.metrics.flat() if ok else {})
        step = self.search.record(level, metrics)
        bad = [f"{pr.point_id}: {pr.error or '; '.join(pr.invalid_reasons)}" for pr in self.results[level].values()
               if pr is not None and not (pr.status == "ok" and pr.valid)]
        retried = [f"retried after {note}" for note in self.retried.get(level, [])]
        if bad or retried:
            step.why = one_line("; ".join(filter(None, [step.why, *bad, *retried])))

    def summary(self) -> CapacitySummary:
        stopped = self.stopped is not None  # the bracket is open: the largest level that passed is no boundary
        search = self.search.summary()
        boundary = None if stopped else search.pop("boundary")
        search.pop("boundary", None)
        at = boundary_figures(list(self.results.get(boundary, {}).values())) if boundary is not None else None
        return CapacitySummary(
            **search, boundary=boundary, last_passing=self.search.boundary if stopped else None,
            point_ids={str(lv): [p.point_id for p in reps.values() if p is not None]
                       for lv, reps in self.results.items()},
            probe_retries=PROBE_RETRIES, retried={str(lv): notes for lv, notes in self.retried.items()},
            stopped=self.stopped, at_boundary=at)


def _mean_sd(values: list[float | None]) -> MeanSd | None:
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    return MeanSd(mean=statistics.fmean(vals), sd=statistics.stdev(vals) if len(vals) > 1 else 0.0, n=len(vals))


def boundary_figures(points: list) -> BoundaryFigures:
    """Mean and sd over the boundary's repeats: throughput per GPU, goodput, $/Mtok, J/token."""
    ok = [p for p in points if p is not None and p.metrics is not None]
    energy = [p.energy for p in ok if p.energy is not None]

    def cost(p):
        return next((c for c in p.cost.values() if c.usd_per_mtok_output is not None), None)

    priced = [c for c in map(cost, ok) if c is not None]
    return BoundaryFigures(
        tok_s_per_gpu=_mean_sd([p.metrics.tok_s_per_gpu for p in ok]),
        output_tok_s_per_gpu=_mean_sd([p.metrics.output_tok_s_per_gpu for p in ok]),
        goodput_output_tok_s=_mean_sd([p.metrics.goodput_output_tok_s for p in ok]),
        usd_per_mtok_output=_mean_sd([c.usd_per_mtok_output for c in priced]),
        cost_scenario=next((c.scenario for c in priced if c.scenario), None),
        j_per_output_token=_mean_sd([e.j_per_output_token for e in energy]),
        j_per_output_token_net=_mean_sd([e.j_per_output_token_net for e in energy]),
        energy_method=next((e.energy_method for e in energy if e.energy_method), None),
    )


class MeanSd(BaseModel):
    """Mean and sample standard deviation over `n` repeats (sd 0 for one)."""

    mean: float
    sd: float
    n: int


class BoundaryFigures(BaseModel):
    """The boundary level's repeats: tok/s per GPU, goodput (tok/s), $/Mtok output and J/output
    token (gross and net of idle power), each as mean and sd; None where no repeat had it."""

    tok_s_per_gpu: MeanSd | None = None
    output_tok_s_per_gpu: MeanSd | None = None
    goodput_output_tok_s: MeanSd | None = None
    usd_per_mtok_output: MeanSd | None = None
    cost_scenario: str | None = None
    j_per_output_token: MeanSd | None = None
    j_per_output_token_net: MeanSd | None = None
    energy_method: str | None = None


class SearchStep(BaseModel):
    """One measured level: each repeat's SLO values (s), their upper confidence bounds, the verdict."""

    level: float
    passed: bool
    why: str = ""
    values: dict[str, list[float | None]] = Field(default_factory=dict)
    upper_bounds: dict[str, float | None] = Field(default_factory=dict)


class CapacitySummary(BaseModel):
    """A search as run.json keeps it (`extra.capacity.<config id>`) and the terminal prints it.
    Levels are requests/s (rate) or requests in flight (concurrency); SLO limits in s."""

    slo: dict[str, float]
    kind: str
    repeats: int
    confidence: str
    start: float | None = None
    max_level: float | None = None
    tolerance: float | None = None
    boundary: float | None = None  # the largest level that met the SLO; None: none did, or the search stopped
    first_failing: float | None = None
    steps: list[SearchStep] = Field(default_factory=list)
    point_ids: dict[str, list[str]] = Field(default_factory=dict)  # level -> its probes' point ids
    probe_retries: int | None = None  # runs before 2026-12 did not retry
    retried: dict[str, list[str]] = Field(default_factory=dict)  # level -> "point id: error" of each failed attempt
    stopped: str | None = None  # why the search ended without a boundary
    last_passing: float | None = None  # a stopped search: the largest level that met the SLO before
    at_boundary: BoundaryFigures | None = None


def run_capacity(ctx: RunContext, search: CapacitySearch, devices: list[int] | None, result: RunResult) -> None:
    """The search on the plan's one engine configuration and workload (its first point is the
    template), as one engine session whose next probes the search chooses. `result`: the run
    so far (a resumed search reuses the probes measured in it)."""
    plan, sink = ctx.plan, ctx.sink
    (cfg,) = plan.engine_configs
    done = {p.point_id: p for p in result.points if p.status in ("ok", "skipped")}
    driver = CapacityRun(search, plan.points[0], done)
    cid = cfg.config_id()

    def more(pr):
        nxt = driver.more(pr)
        sink.note("capacity", cid, driver.summary().model_dump())
        return nxt

    first = driver.first()
    sink.note("capacity", cid, driver.summary().model_dump())
    if first:
        run_engine_session(ctx, cfg, first, devices, more=more, raise_start=not done)
    if driver.level is not None and not driver.stopped:  # the session gave up on the engine mid-search
        last = next((p for p in reversed(result.points) if p.status == "failed"), None)
        driver.stop(f"the search ended before level {driver.level:g} was measured"
                    + (f": {last.point_id}: {last.error}" if last is not None else ""))
    sink.note("capacity", cid, driver.summary().model_dump())
