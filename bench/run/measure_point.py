"""One load point on a started engine: prompts, prefix-cache reset, the load, the engine's
counters and /metrics around it, energy over its window, and the PointResult (written with its
request records). An engine that died during the point raises EngineDied with the records
that finished before it."""

from __future__ import annotations

import zlib
from dataclasses import replace

from bench.engines.base import EngineCounters, EngineDied
from bench.errors import ConfigError
from bench.load.workload import make_workload
from bench.measure.traffic import traffic_figures, wants_answers
from bench.plan import PointSpec
from bench.plan.pointid import PointId
from bench.results import PointResult, write_requests
from bench.results.point import build_point_result
from bench.results.timing import point_timing
from bench.run.events import RequestsDone, RequestsStalled
from bench.run.scope import server_metrics_frame


def workload_seed(sweep_seed: int, point: PointSpec) -> int:
    """The prompt seed of a point whose workload sets none: a stable hash (crc32, not Python's
    salted hash()) of the sweep seed and the point id, so every point of a run gets prompts of
    its own (a prefix cache never serves one point with another's prompts) and a resumed or
    repeated run gets the same ones. The repeat index (and a capacity probe's retry) is left out
    of the id hashed: every repeat of a point sends the same prompts on the same schedule, so
    repeats measure the run-to-run noise of one load, not the spread of prompt draws."""
    try:
        pid = str(replace(PointId.parse(point.point_id), repeat=0, retry=0))
    except ConfigError:  # an id no plan builds (a hand-made test point): hashed as it is
        pid = point.point_id
    return zlib.crc32(f"{sweep_seed}:{pid}".encode())


def measure_point(point: PointSpec, cfg, engine, spec, plan, env, telemetry, run_dir, emit, started,
             sink=None) -> PointResult:
    import time

    from bench.telemetry.server_metrics import DEFAULT_INTERVAL_S, ServerMetricsScraper

    t_point = time.perf_counter()
    reset_s: float | None = None
    vocab = spec.config_json().get("vocab_size") if spec is not None else None
    workload = make_workload(point.workload, vocab_size=vocab or 32000, seed=workload_seed(plan.seed, point))
    scraper = reset = None
    if engine.kind == "batch":  # static batches generated in-process (bench.load.static)
        from bench.load.driver import PointRun
        from bench.load.static import run_static_point

        records, facts = run_static_point(engine, point, workload)
        pr = PointRun(records=records, **facts)
        before = after = client = None
    else:
        from bench.load.client import ClientConfig
        from bench.load.driver import run_point_sync
        from bench.load.types import LoadJob

        t_reset = time.perf_counter()
        reset = engine.reset_prefix_cache()  # before the warm-up: nothing earlier can hit the cache
        reset_s = time.perf_counter() - t_reset
        before = engine.server_counters()
        scraper = ServerMetricsScraper(engine.base_url, env.server_metrics_interval_s or DEFAULT_INTERVAL_S).start()
        try:
            headers = tuple(getattr(engine, "request_headers", {}).items())  # an endpoint's credentials
            client_cfg = ClientConfig(endpoint=plan.endpoint, timeout_s=env.request_timeout_s,
                                      stall_timeout_s=env.stall_timeout_s, headers=headers,
                                      keep_answers=wants_answers(point.workload))  # issue 21, lora
            pr = run_point_sync(LoadJob(
                engine.base_url, engine.served_model, workload, point.load, point.n_warmup, point.n_requests,
                client=client_cfg, progress=lambda info: emit(RequestsDone(**info)), workers=env.client_workers,
                stalled=lambda n: emit(RequestsStalled(n)), adaptive=env.adaptive,
            ))
            records = pr.records
            client = pr.client_token_counts()
            after = _settled_counters(engine, before, client)
        finally:
            scraper.stop()
            if sink is not None:
                sink.server_metrics(server_metrics_frame(scraper, cfg.config_id(), point.point_id))
        if not engine.alive() or (any(not r.ok for r in records) and not engine.healthy()):
            died = EngineDied(f"engine exited during point {point.point_id}; log tail: {engine.log_tail(3)}")
            died.records = records  # what finished before the death is kept with the failed point
            raise died
    t0, t1 = pr.window_t0_s, pr.window_t1_s
    if t1 <= t0:  # no steady-state window: metrics fall back to the span, so does energy
        t0, t1 = pr.span_t0_s, pr.span_t1_s
    energy = telemetry.energy_between(t0, t1) if telemetry else None
    delta = _counter_delta(before, after)
    result = build_point_result(
        point, cfg, pr, n_gpus=cfg.n_gpus, energy=energy, server_delta=delta,
        client_tokens_in_counter_interval=client, model=spec, hardware=env.hardware, probe=env.probe,
        started_utc=started, server_metrics=scraper.summary_between(t0, t1) if scraper else None,
        prefix_cache_reset=reset,
    )
    result.adapters, result.structured = traffic_figures(point.workload, pr.records, (t0, t1))  # issue 21, lora
    result.requests_file = write_requests(run_dir, point.point_id, pr.records)
    result.timing = point_timing(pr, reset_s=reset_s, wall_s=time.perf_counter() - t_point,  # issue 22
                                 stop_reason=pr.stop_reason, n_planned=point.n_requests)
    return result


def _settled_counters(engine, before: EngineCounters | None, client: dict,
                      timeout_s: float = 3.0) -> EngineCounters | None:
    """Server counters once they have caught up with the client (they are updated per engine
    step, a moment after the last response), or as they stand after `timeout_s`."""
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        after = engine.server_counters()
        if before is None or after is None:
            return after
        done = (after.generation_tokens or 0.0) - (before.generation_tokens or 0.0) >= client["generation_tokens"]
        if done or time.monotonic() > deadline:
            return after
        time.sleep(0.2)


def _counter_delta(before: EngineCounters | None, after: EngineCounters | None) -> dict[str, float] | None:
    """The counters' increase over the point, by name (the result's `counter_delta`)."""
    if before is None or after is None:
        return None
    return after.since(before).as_dict()
