"""Does a load point measure what it claims? docs/measurement.md section 5. Pure: no I/O.

    verdict = check_validity(metrics, point.load, point_run,
                             server_counters={"generation_tokens": d_gen, "prompt_tokens": d_prompt},
                             client_counters=point_run.client_token_counts(),
                             energy=energy_group, n_gpus=cfg_n_gpus)   # -> Validity(valid, reasons)

`server_counters` are deltas of vLLM's `/metrics` counters (`vllm:generation_tokens_total`,
`vllm:prompt_tokens_total`) over an interval; `client_counters` are the client's counts over
the SAME interval: every request that ran in it, warm-up included. The caller owns that
pairing (`PointRun.client_token_counts()` matches counters read just before warm-up and
just after the last request).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from bench.measure.groups import Energy, Metrics, ServerCounters, Validity
from bench.measure.integrity import integrity_reasons

if TYPE_CHECKING:
    from bench.load.driver import PointRun
    from bench.plan.points import LoadSpec


@dataclass(frozen=True)
class Thresholds:
    """Limits a valid point stays within."""

    max_error_rate: float = 0.01  # failed / measured
    max_token_mismatch: float = 0.01  # |client - server| / server
    min_rate_fraction: float = 0.9  # achieved / target request rate
    # p99 of fewer than 100 values is the largest or second-largest sample. Small CPU
    # smoke runs will trip this on purpose; lower it for them explicitly.
    min_requests_for_p99: int = 100
    # The client's event loop woke this late (p99) or more: its time stamps are late by as much.
    max_loop_lag_s: float = 0.010
    # A client worker busier than this share of its core is at its capacity (its loop rarely idles).
    max_client_cpu_share: float = 0.9
    # Random prompts share no prefix: hits above this share of the looked-up tokens mean the
    # cache held earlier prompts, and a hit skips prefill (TTFT and input tok/s inflated).
    max_random_prefix_hit_rate: float = 0.01
    # The running-requests gauge is a sample every metric_interval_s: fewer samples in the
    # window than this and its maximum says too little to judge the load it saw.
    min_metric_samples: int = 2
    # An uncapped rate or trace load whose sends were later than this (p99) fell behind its schedule.
    max_schedule_lag_s: float = 0.010


def _mismatch(client: float, server: float) -> float:
    if server == 0:
        return 0.0 if client == 0 else float("inf")
    return abs(client - server) / server


def check_validity(metrics: Metrics, load: LoadSpec, run: PointRun, server_counters: dict | None = None,
                   client_counters: dict | None = None, energy: Energy | None = None,
                   thresholds: Thresholds = Thresholds(), n_gpus: int | None = None,
                   workload_kind: str | None = None, server: ServerCounters | None = None) -> Validity:
    """The point's Validity: reasons are short human-readable strings; valid iff there are none.

    `metrics` from `bench.measure.metrics.summarize`; `load` the point's load spec; `run` what
    the driver saw (`bench.load.driver.PointRun`: in-flight peak, rates, loop lag, workers);
    `server_counters`/`client_counters` counter deltas and the client's counts keyed by vLLM
    counter name; `energy` the Energy group, whose `n_devices` must equal `n_gpus` (the GPUs the
    engine configuration uses); `server` the ServerCounters group (prefix-cache hit rate, the
    sampled gauges and preemptions of the window); `workload_kind` the workload's kind.
    """
    th = thresholds
    reasons: list[str] = []
    target_c = run.target_concurrency
    if load.kind == "concurrency" and target_c:
        peak = run.max_in_flight
        if peak < target_c or not run.target_reached:
            reasons.append(f"client saturation: in-flight peaked at {peak}, target {target_c}")
    target_r = run.target_rate_rps
    if load.kind == "rate" and target_r and target_r != float("inf"):
        achieved = run.achieved_rate_rps
        if achieved is None or achieved < th.min_rate_fraction * target_r:
            shown = "n/a" if achieved is None else f"{achieved:.3g}"
            reasons.append(f"client saturation: achieved {shown} req/s, target {target_r:.3g} req/s "
                           f"(< {th.min_rate_fraction:.0%})")
    if server_counters and client_counters:
        for key, label in (("generation_tokens", "output"), ("prompt_tokens", "prompt")):
            s, c = server_counters.get(key), client_counters.get(key)
            if s is None or c is None:
                continue
            m = _mismatch(c, s)
            if m > th.max_token_mismatch:
                reasons.append(f"token mismatch: client counted {c} {label} tokens, server {s:g} "
                               f"({m:.1%} > {th.max_token_mismatch:.0%})")
    sched = metrics.schedule_lag_s_p99
    if sched is not None and sched > th.max_schedule_lag_s and not getattr(load, "max_concurrency", None):
        reasons.append(f"client behind schedule: send lag p99 {sched * 1e3:.1f} ms > {th.max_schedule_lag_s * 1e3:.0f} ms "
                       "(latencies from the scheduled send, ttft_sched_s, still hold)")
    if server is not None:
        reasons += _server_reasons(server, load, workload_kind, target_c, th)
    # the driver's monitors report these as plain summaries (bench.load.selfwatch)
    worst = run.worst_loop
    lag = worst.loop_lag_s_p99 if worst is not None else None
    if worst is not None and lag is not None and lag > th.max_loop_lag_s:
        where = f" in client worker {worst.index}" if len(run.loops) > 1 else ""
        reasons.append(f"client saturation: event-loop lag p99 {lag * 1e3:.1f} ms > {th.max_loop_lag_s * 1e3:.0f} ms"
                       f"{where} (time stamps may be late)")
    busy = [w for w in run.loops if w.cpu_share is not None]
    if busy:
        top = max(busy, key=lambda w: w.cpu_share or 0.0)
        if top.cpu_share is not None and top.cpu_share > th.max_client_cpu_share:
            reasons.append(f"client saturation: client worker {top.index} busy {top.cpu_share:.0%} of a core "
                           f"(> {th.max_client_cpu_share:.0%}; use more --client-workers)")
    n = metrics.n_measured or 0
    err = metrics.error_rate
    if n == 0:
        reasons.append("no measured requests")
    elif err is not None and err > th.max_error_rate:
        reasons.append(f"error rate {err:.1%} above {th.max_error_rate:.0%} "
                       f"({metrics.n_failed} of {n} failed)")
    # p99 describes the steady state: count the requests the window holds, not all measured ones.
    in_window = metrics.window_requests
    in_window = n if in_window is None else in_window
    if n > 0 and in_window < th.min_requests_for_p99:
        reasons.append(f"{in_window} requests in the measurement window, fewer than "
                       f"{th.min_requests_for_p99}: p99 unstable")
    if metrics.window_fallback:
        reasons.append("no steady-state window: throughput over the whole span")
    # accuracy, layer 3 (docs/accuracy.md): the outputs are as long as asked, none empty
    reasons += integrity_reasons(run.records)
    if energy is not None and energy.energy_valid is False:
        reasons.extend(f"energy: {r}" for r in energy.energy_invalid_reasons or ["energy invalid"])
    n_devices = energy.n_devices if energy is not None else None
    if n_gpus is not None and n_devices and n_devices != n_gpus:
        reasons.append(f"energy: covers {n_devices} devices, the point uses {n_gpus} GPUs")
    return Validity(valid=not reasons, reasons=reasons)


def _server_reasons(server: ServerCounters, load: LoadSpec, workload_kind: str | None, target_c, th: Thresholds) -> list[str]:
    """What the server's own metrics say against the point: cache hits on cache-cold prompts,
    preemptions, a concurrency the server never saw. Only from figures the server reported."""
    reasons = []
    rate = server.prefix_cache_hit_rate
    if workload_kind == "random" and rate is not None and rate > th.max_random_prefix_hit_rate:
        reasons.append(f"prefix cache hits inflate a random workload: hit rate {rate:.1%}")
    preempted = server.preemptions_in_window
    if preempted:
        reasons.append(f"preemptions during the window: {preempted:g}")
    # running + waiting: a server that caps its batch (max_num_seqs) below the target still saw
    # the load; one that never held the target number of requests did not get it.
    seen, running = server.in_server_requests_max, server.running_requests_max
    n = server.metric_samples or 0
    if load.kind == "concurrency" and target_c and seen is not None and n >= th.min_metric_samples \
            and seen < target_c:
        reasons.append(f"the server never had the target running requests: max running {running:g}, "
                       f"running + waiting {seen:g}, target {target_c} ({n} samples)")
    return reasons
