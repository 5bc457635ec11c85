"""The typed result groups of one load point: one definition per concept, units in the names.

    Window, Metrics, ServerCounters, ClientLoad, Energy, CostFigures, Roofline, Validity

Measure produces them; `bench.results.PointResult` composes them and run.json's JSON Schema
is generated from them (docs/run.schema.json). Every field has a one-line description.
A group read from an older result keeps keys this version does not know in `extra`
(never lost); a group built now has nothing there unless its producer added a figure the
schema does not name yet (kept, not refused: a measurement is never dropped for a name).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator
from pydantic.config import JsonDict

if TYPE_CHECKING:
    from bench.load.types import ClientSummary, PointRun
    from bench.telemetry.server_metrics import ServerWindow
    from bench.telemetry.types import WindowEnergy


class Group(BaseModel):
    """A result group: typed fields read as attributes; `extra` holds keys this schema does not
    name (a version-1 file is upgraded into groups when it is read)."""

    model_config = ConfigDict(extra="forbid")

    extra: dict[str, Any] = Field(default_factory=dict,
                                  description="Figures this schema version does not name (e.g. from a v1 result).")

    @model_validator(mode="before")
    @classmethod
    def _unknown_to_extra(cls, data: Any) -> Any:
        """A flat dict's keys this group does not name are kept in `extra`, not refused."""
        if not isinstance(data, Mapping):
            return data
        known = set(cls.model_fields) - {"extra"}
        extra = dict(data["extra"]) if isinstance(data.get("extra"), Mapping) else {}
        extra |= {k: v for k, v in data.items() if k not in known and k != "extra"}
        return {k: v for k, v in data.items() if k in known} | {"extra": extra}

    @classmethod
    def from_flat(cls, data: Mapping[str, Any] | Group | None):
        """The group from a flat dict (or another group): named keys become fields, the rest `extra`."""
        if data is None or isinstance(data, cls):
            return data
        return cls.model_validate(data.flat() if isinstance(data, Group) else data)

    def flat(self) -> dict[str, Any]:
        """Fields and `extra` as one flat dict (the v1 shape)."""
        out = {k: getattr(self, k) for k in type(self).model_fields if k != "extra"}
        return out | self.extra


def _f(description: str, default: Any = None, *, label: str | None = None, short: str | None = None) -> Any:
    """A field; `label` (an axis title, with its unit) and `short` (a table header) where a
    report shows it: read by metric_label, the one place the reports, tables and plots name it."""
    shown: JsonDict = {k: v for k, v in (("label", label), ("short", short)) if v}
    return Field(default=default, description=description, json_schema_extra=shown or None)


class Window(Group):
    """The measurement window and the whole span, perf_counter seconds of the client."""

    t0_s: float | None = _f("Window start: the in-flight count first reached the target (s, perf_counter).")
    t1_s: float | None = _f("Window end: the last request was issued (s, perf_counter).")
    window_s: float | None = _f("Window length t1_s - t0_s (s).")
    span_s: float | None = _f("Whole span: first send to last completion (s).")


class Validity(Group):
    """Does the point measure what it claims (docs/measurement.md section 5)."""

    valid: bool = Field(default=True, description="True iff there are no reasons.")
    reasons: list[str] = Field(default_factory=list, description="Why the point is invalid, one line each.")


_LATENCIES = {
    "ttft_s": "time to first token (s)",
    "tpot_s": "time per output token after the first (s)",
    "itl_s": "inter-token latency, per token of each chunk (s)",
    "e2e_s": "end-to-end latency, send to last token (s)",
    "ttft_sched_s": "time to first token from the scheduled send, rate and trace loads (s; no coordinated omission)",
    "e2e_sched_s": "end-to-end latency from the scheduled send, rate and trace loads (s)",
    "schedule_lag_s": "actual - scheduled send, rate and trace loads (s): the client behind its schedule",
}
_STATS = {"mean": "mean", "std": "standard deviation", "p50": "median", "p90": "90th percentile",
          "p95": "95th percentile", "p99": "99th percentile"}


class _MetricsBase(Group):
    """Client-side metrics of one load point (docs/measurement.md sections 1-2, docs/metrics.md)."""

    n_measured: int | None = _f("Measured requests (warm-up excluded).")
    n_failed: int | None = _f("Measured requests that failed.")
    error_rate: float | None = _f("n_failed / n_measured.")
    window_requests: int | None = _f("Successful requests whose last token arrived inside the window.")
    interactivity_tok_s_user: float | None = _f("1 / median tpot: output tokens per second one user sees.",
                                                label="interactivity (output tok/s per user)", short="tok/s/user")
    window_s: float | None = _f("Length of the window the rates are over (s).")
    window_fallback: bool | None = _f("True when there was no steady-state window: rates over the whole span.")
    window_output_tokens: int | None = _f("Output tokens of successful requests that arrived inside the window.")
    window_input_tokens: int | None = _f("Input tokens of successful requests whose first token arrived inside the window.")
    window_failed_output_tokens: int | None = _f(
        "Output tokens received inside the window from requests that then failed (partial streams; not in any rate).")
    output_tok_s: float | None = _f("Output tokens per second over the window; None without a successful request.")
    input_tok_s: float | None = _f("Input tokens per second over the window.")
    total_tok_s: float | None = _f("Input + output tokens per second over the window.")
    request_s: float | None = _f("Successful requests completed per second over the window.")
    tok_s_per_gpu: float | None = _f("total_tok_s / n_gpus (TP x PP x DP).",
                                     label="throughput per GPU (tok/s, input + output)", short="tok/s/GPU (in+out)")
    output_tok_s_per_gpu: float | None = _f("output_tok_s / n_gpus.", label="output throughput per GPU (tok/s)",
                                            short="output tok/s/GPU")
    output_tokens_total: int | None = _f(
        "Output tokens received by all measured requests, failed ones included (the records' sum; in no rate).")
    input_tokens_total: int | None = _f(
        "Input tokens of all measured requests that got a first token, failed ones included (in no rate).")
    span_s: float | None = _f("Whole span: first send to last completion (s).")
    span_output_tok_s: float | None = _f("Output tokens of successful requests per second over the whole span.")
    span_input_tok_s: float | None = _f("Input tokens of successful requests per second over the whole span.")
    span_total_tok_s: float | None = _f("Input + output tokens of successful requests per second over the whole span.")
    span_request_s: float | None = _f("Successful requests per second over the whole span.")
    goodput_request_s: float | None = _f("Requests meeting every SLO completed per second over the window.")
    goodput_output_tok_s: float | None = _f("Output tokens of requests meeting every SLO per second over the window.")
    slo_attainment: float | None = _f("Share of measured requests meeting every SLO.")
    slo_ttft_s: float | None = _f("SLO on ttft used for goodput (s).")
    slo_tpot_s: float | None = _f("SLO on tpot used for goodput (s).")
    slo_e2e_s: float | None = _f("SLO on e2e latency used for goodput (s).")
    ttfat_s_p50: float | None = _f(
        "Median time to the first answer token, after any reasoning (s); None when no request streamed reasoning.")
    ttfat_s_p99: float | None = _f("99th percentile of the time to the first answer token (s); None without reasoning.")
    reasoning_tokens_total: int | None = _f(
        "Reasoning tokens of all measured requests, inside output_tokens_total (tokens); None without reasoning.")
    reasoning_share: float | None = _f("reasoning_tokens_total / output_tokens_total; None without reasoning.")
    n_sessions: int | None = _f("Sessions workload: measured sessions (conversations); None for other workloads.")
    turns_per_session_mean: float | None = _f("Sessions workload: mean turns (requests) sent per measured session.")
    session_s_p50: float | None = _f(
        "Sessions workload: median session duration, first send to the last turn's end, think time included (s).")
    session_s_p99: float | None = _f("Sessions workload: 99th percentile of the session duration (s).")
    ttft_s_p50_by_turn: list[float | None] | None = _f(
        "Sessions workload: median ttft of successful turns, by turn index (s; falls with prefix caching).")
    input_tokens_p50_by_turn: list[float | None] | None = _f(
        "Sessions workload: median prompt tokens (the conversation so far), by turn index (tokens).")


Metrics = create_model(  # type: ignore[call-overload]  # mypy matches **fields against __config__/__base__ too
    "Metrics",
    __base__=_MetricsBase,
    __doc__=_MetricsBase.__doc__,
    **{f"{m}_{s}": (float | None, _f(f"{_STATS[s].capitalize()} of {_LATENCIES[m]} over successful requests."))
       for m in _LATENCIES for s in _STATS},
)


def prefix_cache_hit_rate(counter_delta: Mapping[str, Any] | None) -> float | None:
    """Prefix-cache hits / queries over a point (fraction) from its counter deltas, keyed by the
    names bench.engines.vllm_metrics gives them (the server's own set, so a mapping); None
    without queries or where a count is not a number (a stored result is read by it too)."""
    d = counter_delta or {}
    queries, hits = d.get("prefix_cache_queries"), d.get("prefix_cache_hits")
    if not (_count(queries) and queries and _count(hits)):
        return None
    return hits / queries


def _count(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


class ServerCounters(Group):
    """The server's own view of the point (vLLM /metrics): token counters against the client's
    counts over the same interval, the prefix cache, and the engine's gauges sampled over the
    window (bench.telemetry.server_metrics; server_metrics.parquet holds the samples)."""

    counter_delta: dict[str, float] | None = _f(
        "Counter deltas over the point, warm-up included: generation_tokens, prompt_tokens, prefix_cache_queries, "
        "prefix_cache_hits (tokens), preemptions, as far as the server exposes them; None without /metrics.")
    client_counts: dict[str, int] | None = _f(
        "The client's token counts over the same interval, warm-up included (tokens).")
    prefix_cache_reset: str | None = _f(
        "The prefix-cache reset before the point: done, unavailable (the server has no reset) or failed: why; "
        "None: not a server engine.")
    prefix_cache_hit_rate: float | None = _f(
        "prefix_cache_hits / prefix_cache_queries over the point, warm-up included (tokens / tokens); "
        "None when the server does not count them or nothing was looked up.")
    metric_samples: int | None = _f("Samples of the server's /metrics inside the window (bench.telemetry.server_metrics).")
    metric_interval_s: float | None = _f("Interval between those samples (s); a shorter peak can fall between two.")
    running_requests_max: float | None = _f("Most requests the engine was running in one sample of the window (requests).")
    running_requests_mean: float | None = _f("Mean of the running-requests samples of the window (requests).")
    waiting_requests_max: float | None = _f("Most requests waiting in the engine's queue in one sample of the window (requests).")
    waiting_requests_mean: float | None = _f("Mean of the waiting-requests samples of the window (requests).")
    in_server_requests_max: float | None = _f("Most running + waiting requests in one sample of the window (requests).")
    kv_cache_usage_max: float | None = _f("Highest KV-cache usage sampled in the window (fraction, 1.0 = full; "
                                          "the fullest engine of a DP deployment).")
    kv_cache_usage_mean: float | None = _f("Mean KV-cache usage over the window's samples (fraction).")
    preemptions_in_window: float | None = _f(
        "Preemptions counted between the samples bracketing the window (preemptions; up to one interval wider).")

    @classmethod
    def from_measurements(cls, counter_delta: dict | None, client_counts: dict | None,
                          reset: str | None = None, scraped: ServerWindow | None = None) -> ServerCounters:
        """From the counter deltas, the client's counts, the reset outcome and
        `bench.telemetry.server_metrics.window_summary` (None: not scraped)."""
        rate = prefix_cache_hit_rate(counter_delta)
        w = scraped
        return cls(counter_delta=counter_delta, client_counts=client_counts, prefix_cache_reset=reset,
                   prefix_cache_hit_rate=rate, metric_samples=w.n_samples if w else None,
                   metric_interval_s=w.interval_s if w else None,
                   preemptions_in_window=w.preemptions_in_window if w else None,
                   running_requests_max=w.running_requests_max if w else None,
                   running_requests_mean=w.running_requests_mean if w else None,
                   waiting_requests_max=w.waiting_requests_max if w else None,
                   waiting_requests_mean=w.waiting_requests_mean if w else None,
                   in_server_requests_max=w.in_server_requests_max if w else None,
                   kv_cache_usage_max=w.kv_cache_usage_max if w else None,
                   kv_cache_usage_mean=w.kv_cache_usage_mean if w else None)


class ClientLoad(Group):
    """The load client over the measured phase: its worker processes and how close each ran to its
    capacity (bench.load.workers, bench.load.selfwatch)."""

    n_workers: int | None = _f("Client worker processes that drove the load (0: the orchestrator's own event loop).")
    workers_chosen: str | None = _f("auto (from the load and the cores) or given (--client-workers).")
    cpu_busy_cores: float | None = _f("Client CPU over the measured phase, in cores: sum of each worker's CPU s / wall s.")
    capacity_used: float | None = _f("The busiest worker's share of its core (1.0: saturated, the client's capacity).")
    loop_lag_s_p99: float | None = _f("The worst worker's event-loop lag, 99th percentile (s): stamps are late by as much.")
    loop_lag_s_max: float | None = _f("That worker's largest event-loop lag (s).")
    loop_lag_worker: int | None = _f("Index of the worker with the worst lag.")
    backlog_bytes_max: int | None = _f("Most bytes seen received but unread in one connection's socket (bytes).")
    workers: list[dict[str, Any]] = Field(default_factory=list, description=(
        "Per worker: index, pid, cpu_s, wall_s, cpu_share, loop_lag_s_p50/p99/max, loop_lag_samples, "
        "backlog_bytes_max/p99, backlog_samples."))

    @classmethod
    def from_run(cls, run: PointRun, client: ClientSummary) -> ClientLoad:
        """From the point's client and the self-watch of each of its loops."""
        worst = run.worst_loop
        backlog = [w.backlog_bytes_max for w in run.loops if w.backlog_bytes_max is not None]
        return cls(n_workers=client.n_workers, workers_chosen=client.workers_chosen,
                   cpu_busy_cores=run.cpu_busy_cores, capacity_used=run.capacity_used,
                   loop_lag_s_p99=worst.loop_lag_s_p99 if worst else None,
                   loop_lag_s_max=worst.loop_lag_s_max if worst else None,
                   loop_lag_worker=worst.index if worst else None, backlog_bytes_max=max(backlog) if backlog else None,
                   workers=[w.as_dict() for w in run.loops])


class Energy(Group):
    """Board energy of the engine's devices over the window (docs/measurement.md section 3)."""

    energy_j: float | None = _f("Energy over the window, sum over devices (J).")
    per_gpu_energy_j: list[float] | None = _f("Energy over the window per device (J).")
    avg_power_w: float | None = _f("energy_j / window_s, sum over devices (W).")
    window_s: float | None = _f("Window the energy covers (s).")
    energy_method: str | None = _f("nvml_counter, amdsmi_counter, nvml_power_sampled, rapl, nominal or none.")
    measured: bool | None = _f("False for a nominal (catalog power x time) estimate.")
    energy_valid: bool | None = _f("False when a cross-check or counter check failed.")
    energy_invalid_reasons: list[str] = Field(default_factory=list, description="Why the energy is invalid.")
    sampled_energy_j: float | None = _f("Trapezoid integral of polled power, the cross-check (J).")
    n_devices: int | None = _f("Devices the energy covers; must equal the point's n_gpus.")
    devices: list[Any] | None = _f("Device indices (or labels) the energy covers.")
    n_samples: int | None = _f("Fewest power samples inside the window on any device.")
    idle_power_w: float | None = _f("Idle, model-loaded power before load, sum over devices (W).")
    energy_net_j: float | None = _f("energy_j minus idle_power_w x window_s (J).")
    j_per_output_token: float | None = _f("energy_j / window output tokens of successful requests (J/token).",
                                          label="energy per output token (J)", short="J/output tok")
    j_per_token: float | None = _f("energy_j / window input + output tokens of successful requests (J/token).",
                                   label="energy per token (J, input + output)", short="J/tok (in+out)")
    output_tok_per_j: float | None = _f("Window output tokens / energy_j (token/J).")
    j_per_output_token_net: float | None = _f("energy_net_j / window output tokens (J/token).")
    j_per_token_net: float | None = _f("energy_net_j / window input + output tokens (J/token).")
    output_tok_per_j_net: float | None = _f("Window output tokens / energy_net_j (token/J).")
    # issue 20 item 6 (power scope)
    power_scope: str | None = _f("What NVML's power covers: gpu, module (Grace: CPU + GPU), mixed; None: not known.")

    @classmethod
    def from_window(cls, window: WindowEnergy, output_tokens: float | None, total_tokens: float | None) -> Energy:
        """The group from telemetry's frozen window energy and the window's tokens (per-token figures)."""
        from dataclasses import asdict

        from bench.telemetry.energy import per_token

        fields = asdict(window)
        fields["per_gpu_energy_j"] = list(window.per_gpu_energy_j) if window.per_gpu_energy_j is not None else None
        fields["energy_invalid_reasons"] = list(window.energy_invalid_reasons)
        fields["devices"] = list(window.devices) if window.devices is not None else None
        return cls(**fields, **per_token(window, output_tokens, total_tokens))


class CostFigures(Group):
    """$/Mtok of one point under one scenario (docs/measurement.md section 4, docs/cost.md)."""

    scenario: str | None = _f("Scenario name.")
    kind: Literal["rental", "ownership"] | None = _f("rental (all-in hourly price) or ownership.")
    capex_usd_per_gpu_hour: float | None = _f("Capital cost per GPU-hour ($).")
    energy_usd_per_gpu_hour: float | None = _f("Electricity per GPU-hour, host and PUE included ($).")
    om_usd_per_gpu_hour: float | None = _f("Operations per GPU-hour ($).")
    usd_per_gpu_hour: float | None = _f("All-in cost per GPU-hour ($).")
    utilization: float | None = _f("Share of hours the card serves at this load (load factor).")
    n_gpus: int | None = _f("GPUs the throughput is divided by.")
    n_devices_power: int | None = _f("Devices the measured power covers (it is divided by these).")
    avg_power_w_per_gpu: float | None = _f("Measured gross power per device (W).")
    energy_method: str | None = _f("How the power was measured.")
    power_measured: bool | None = _f("False for a nominal power estimate.")
    usd_per_mtok_output: float | None = _f("$ per million output tokens.")
    usd_per_mtok_input: float | None = _f("$ per million input tokens.")
    usd_per_mtok_total: float | None = _f("$ per million input + output tokens.")
    usd_per_mtok_goodput: float | None = _f("$ per million output tokens of requests meeting every SLO.")
    inputs: dict[str, Any] | None = _f("Every scenario input, so the figure can be recomputed.")
    note: str | None = _f("Why a figure is missing.")
    error: str | None = _f("Why the cost could not be computed.")


class Roofline(Group):
    """How close the point is to the card (docs/measurement.md section 6); throughputs over all GPUs."""

    bandwidth_bound_tok_s: float | None = _f("Decode bound from memory bandwidth (tokens/s).")
    compute_bound_tok_s: float | None = _f("Bound from peak FLOP/s (tokens/s).")
    bound_tok_s: float | None = _f("The binding (smaller) bound (tokens/s).")
    bound_kind: Literal["bandwidth", "compute"] | None = _f("Which bound binds.")
    roofline_efficiency: float | None = _f("Measured output tokens/s / bound_tok_s.")
    bandwidth_tbs: float | None = _f("Memory bandwidth used (TB/s per GPU).")
    bandwidth_source: str | None = _f("probe (measured) or catalog.")
    tflops: float | None = _f("Peak matrix throughput used (TFLOP/s per GPU).")
    flops_dtype: str | None = _f("Precision the TFLOP/s figure is for.")
    flops_source: str | None = _f("probe (measured) or catalog.")
    bytes_per_step: float | None = _f("Bytes moved per decode step (B).")
    weight_bytes_per_step: float | None = _f("Weight bytes read per decode step (B).")
    kv_bytes_per_step: float | None = _f("KV-cache bytes read per decode step (B).")
    batch: int | None = _f("Sequences per decode step.")
    context_len: int | None = _f("Mean context length assumed (tokens).")
    n_gpus: int | None = _f("GPUs the bounds scale with.")
    replicas: int | None = _f("Data-parallel replicas: each reads its own copy of the weights every step.")
    error: str | None = _f("Why the roofline could not be computed.")


def metric_label(key: str, short: bool = False) -> str:
    """How the reports, tables and plots name figure `key`: its field's `label` (an axis title) or
    `short` (a table header); a latency statistic reads 'TTFT p50 (s)'; any other key as itself."""
    for group in (Metrics, Energy):
        field = group.model_fields.get(key)
        if field is not None and isinstance(field.json_schema_extra, dict):
            return str(field.json_schema_extra.get("short" if short else "label") or key)
    name, _, stat = key.rpartition("_")
    if name in _LATENCIES and stat in _STATS:
        return f"{name.removesuffix('_s').replace('_', ' ').upper()} {stat} (s)"
    return key
