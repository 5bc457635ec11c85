"""Run an SLO capacity search (bench.plan.capacity) on one engine start: every probe is an
ordinary load point, written to run.json as it finishes, so an interrupted search resumes
(`--resume`) from the probes already on disk without measuring them again.

A probe that failed or is invalid counts as not meeting the SLO (its reasons are kept in the
step). At the boundary (the largest passing level) the repeats' tok/s per GPU, goodput,
$/Mtok and J/token (gross and idle-net) are given as mean and standard deviation.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

from bench.plan import PointSpec
from bench.plan.capacity import CapacitySearch
from bench.plan.points import ConcurrencyLoad, RateLoad


def probe_requests(level: float, min_requests: int = 100, per_level: int = 4) -> tuple[int, int]:
    """(n_warmup, n_requests) of a probe at `level`, by the plan's rule (bench.plan.plan)."""
    lv = max(1, math.ceil(level))
    return max(1, lv), max(min_requests + lv, per_level * lv)


class CapacityRun:
    """The probes of one search: PointSpecs per level and repeat, and the search fed with results."""

    def __init__(self, search: CapacitySearch, template: PointSpec, done: dict[str, Any] | None = None,
                 min_requests: int = 100):
        self.search, self.template, self.min_requests = search, template, min_requests
        self.done = dict(done or {})  # point id -> PointResult already on disk (a resumed run)
        self.results: dict[float, dict[int, Any]] = {}
        self.level: float | None = None
        self.goodput_slo = {k.rsplit("_", 1)[0]: v for k, v in search.slo.items()
                            if k.rsplit("_", 1)[0] in ("ttft_s", "tpot_s", "e2e_s")}

    def load_of(self, level: float):
        if self.search.kind == "concurrency":
            return ConcurrencyLoad(concurrency=int(level))
        return RateLoad(rate_rps=level)

    def point(self, level: float, rep: int) -> PointSpec:
        load = self.load_of(level)
        tag = f"c{int(level)}" if self.search.kind == "concurrency" else f"rps{level:g}"
        n_warmup, n_requests = probe_requests(level, self.min_requests)
        base = self.template.point_id.rsplit("_", 2)[0]  # <config>_<workload>
        return self.template.model_copy(update={
            "point_id": f"{base}_capacity-{tag}_r{rep}", "load": load, "n_warmup": n_warmup,
            "n_requests": n_requests, "repeat": rep, "slo": self.goodput_slo or None})

    def first(self) -> list[PointSpec]:
        """The probes to measure first (finished ones on disk are fed to the search)."""
        return self._advance(self.search.next_level())

    def more(self, pr) -> list[PointSpec]:
        """After one probe: the next probes (none while the level's repeats are running)."""
        for level, reps in self.results.items():
            for rep, got in reps.items():
                if got is None and self.point(level, rep).point_id == pr.point_id:
                    reps[rep] = pr
        if self.level is None or any(v is None for v in self.results[self.level].values()):
            return []
        self._verdict(self.level)
        return self._advance(self.search.next_level())

    def _advance(self, level: float | None) -> list[PointSpec]:
        while level is not None:
            self.level = level
            reps = self.results.setdefault(level, {})
            todo = []
            for rep in range(self.search.repeats):
                spec = self.point(level, rep)
                reps[rep] = self.done.get(spec.point_id)
                if reps[rep] is None:
                    todo.append(spec)
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
        if bad:
            step.why = "; ".join(filter(None, [step.why, *bad]))[:600]

    def summary(self) -> dict:
        out = self.search.summary()
        out["point_ids"] = {str(lv): [p.point_id for p in reps.values() if p is not None]
                            for lv, reps in self.results.items()}
        b = self.search.boundary
        out["at_boundary"] = boundary_figures(list(self.results.get(b, {}).values())) if b is not None else None
        return out


def _mean_sd(values: list[float | None]) -> dict | None:
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    return {"mean": statistics.fmean(vals), "sd": statistics.stdev(vals) if len(vals) > 1 else 0.0, "n": len(vals)}


def boundary_figures(points: list) -> dict:
    """Mean and sd over the boundary's repeats: throughput per GPU, goodput, $/Mtok, J/token."""
    ok = [p for p in points if p is not None and p.metrics is not None]

    def energy(p, key):
        return p.energy.get(key) if p.energy is not None else None

    def cost(p):
        for figures in (p.cost or {}).values():
            if figures.usd_per_mtok_output is not None:
                return figures.usd_per_mtok_output, figures.scenario
        return None, None

    scenario = next((cost(p)[1] for p in ok if cost(p)[1]), None)
    return {
        "tok_s_per_gpu": _mean_sd([p.metrics.tok_s_per_gpu for p in ok]),
        "output_tok_s_per_gpu": _mean_sd([p.metrics.output_tok_s_per_gpu for p in ok]),
        "goodput_output_tok_s": _mean_sd([p.metrics.goodput_output_tok_s for p in ok]),
        "usd_per_mtok_output": _mean_sd([cost(p)[0] for p in ok]), "cost_scenario": scenario,
        "j_per_output_token": _mean_sd([energy(p, "j_per_output_token") for p in ok]),
        "j_per_output_token_net": _mean_sd([energy(p, "j_per_output_token_net") for p in ok]),
        "energy_method": next((energy(p, "energy_method") for p in ok if energy(p, "energy_method")), None),
    }


def run_capacity(search: CapacitySearch, plan, run_dir, env, sink, emit, result, devices, visible) -> None:
    """The search on the plan's one engine configuration and workload (its first point is the template)."""
    from bench.run.runner import _run_config

    (cfg,) = plan.engine_configs
    done = {p.point_id: p for p in result.points if p.status in ("ok", "skipped")}
    driver = CapacityRun(search, plan.points[0], done)
    cid = cfg.config_id()

    def more(pr):
        nxt = driver.more(pr)
        sink.note("capacity", cid, driver.summary())
        return nxt

    first = driver.first()
    sink.note("capacity", cid, driver.summary())
    if first:
        _run_config(cfg, first, plan, run_dir, env, sink, emit, devices=devices, visible=visible, more=more,
                    raise_start=not done)
    sink.note("capacity", cid, driver.summary())
