"""One load point, measured: records + energy -> the typed groups of the point.

Pure bookkeeping around the steps that do the work (metrics, validity, cost, roofline);
`bench.results` composes the groups into a PointResult, the runner owns the engine and files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from bench.catalog.dtypes import bytes_per_param, kv_bytes_per_elem
from bench.measure.groups import (
    ClientLoad,
    CostFigures,
    Energy,
    Metrics,
    Roofline,
    ServerCounters,
    Validity,
    Window,
)
from bench.measure.specdecode import SpecDecode, spec_decode_figures, spec_workload_problem
from bench.plan import EngineConfig, PointSpec
from bench.plan.points import LoadSpec, engine_batch

if TYPE_CHECKING:
    from bench.load.driver import PointRun
    from bench.telemetry.server_metrics import ServerWindow
    from bench.telemetry.types import ProbeFigures, WindowEnergy


def target_concurrency(load: LoadSpec) -> int:
    """The batch the engine sees: the concurrency, the batch of an offline point, a rate's
    max_concurrency (1 for an uncapped rate)."""
    return engine_batch(load) or 1


@dataclass
class PointGroups:
    """What measuring one finished point produced: its typed result groups."""

    n_requests: int
    n_failed: int
    error: str | None
    window: Window
    metrics: Metrics
    server: ServerCounters
    energy: Energy | None
    client: ClientLoad | None = None
    cost: dict[str, CostFigures] = field(default_factory=dict)
    roofline: Roofline | None = None
    validity: Validity = field(default_factory=Validity)
    spec_decode: SpecDecode | None = None  # speculative decoding (issue 21)


def point_groups(
    point: PointSpec,
    cfg: EngineConfig,
    run: PointRun,
    *,
    n_gpus: int,
    energy: WindowEnergy | None,
    server_delta: dict[str, float] | None,
    client_tokens_in_counter_interval: dict[str, int] | None,
    model=None,
    hardware=None,
    probe: ProbeFigures | None = None,
    server_metrics: ServerWindow | None = None,
    prefix_cache_reset: str | None = None,
) -> PointGroups:
    """Metrics, energy per token, roofline, default cost and validity for one finished point.

    `run`: what the load driver saw (records, window, span, in-flight peak, client);
    `energy`: telemetry's energy of the window (None: no session); `server_metrics`: bench.telemetry.server_metrics.window_summary over the window (None:
    not scraped); `prefix_cache_reset`: the reset's outcome before the point."""
    from bench.measure.metrics import summarize
    from bench.measure.validity import check_validity

    records = run.records
    window = (run.window_t0_s, run.window_t1_s)
    metrics = summarize(records, window=window, n_gpus=n_gpus, slo=point.slo)
    energy_group = (Energy.from_window(energy, metrics.window_output_tokens, _total_tokens(metrics))
                    if energy is not None else None)
    roofline = _roofline(cfg, point, model, hardware, n_gpus, metrics, probe)
    cost = _default_cost(hardware, metrics, energy_group, n_gpus)
    server = ServerCounters.from_measurements(server_delta, client_tokens_in_counter_interval,
                                              prefix_cache_reset, server_metrics)
    checked = check_validity(
        metrics, point.load, run, server_counters=server_delta,
        client_counters=client_tokens_in_counter_interval, energy=energy_group, n_gpus=n_gpus,
        workload_kind=getattr(point.workload, "kind", None), server=server,
    )
    spec = spec_decode_figures(server_metrics.spec_in_window if server_metrics else None, server_delta)
    problem = spec_workload_problem(point.workload) if getattr(cfg, "speculative", None) is not None or spec else None
    if problem:  # speculative decoding (issue 21): acceptance on random tokens is no figure of real traffic
        checked = Validity(valid=False, reasons=[*checked.reasons, problem])
    failed = [r for r in records if r.phase == "measured" and not r.ok]
    return PointGroups(
        n_requests=sum(1 for r in records if r.phase == "measured"),
        n_failed=len(failed),
        error=failed[0].error if failed else None,
        window=Window(t0_s=window[0], t1_s=window[1], window_s=window[1] - window[0],
                      span_s=run.span_t1_s - run.span_t0_s),
        metrics=metrics,
        server=server,
        client=ClientLoad.from_run(run, run.client) if run.client is not None else None,
        energy=energy_group,
        cost=cost,
        roofline=roofline,
        validity=checked,
        spec_decode=spec,
    )


def _total_tokens(metrics: Metrics) -> float | None:
    a, b = metrics.window_output_tokens, metrics.window_input_tokens
    return None if a is None or b is None else a + b


def _roofline(cfg, point, model, hardware, n_gpus, metrics, probe) -> Roofline | None:
    if model is None or hardware is None or not metrics.output_tok_s:
        return None
    from bench.measure.roofline import point_roofline

    wl = point.workload
    if getattr(wl, "input_len", None) and getattr(wl, "output_len", None):
        context = int(wl.input_len) + int(wl.output_len) // 2
    else:  # a file, trace or sessions workload: the mean lengths the point measured
        n = metrics.n_measured or 1
        context = int((metrics.input_tokens_total or 0) / n + (metrics.output_tokens_total or 0) / n / 2)
    try:
        return point_roofline(
            model, hardware, batch=target_concurrency(point.load), context_len=max(context, 1),
            bytes_per_param=bytes_per_param(cfg, model), kv_bytes_per_elem=kv_bytes_per_elem(cfg, model), n_gpus=n_gpus,
            measured_output_tok_s=metrics.output_tok_s, probe=probe,
            replicas=cfg.data_parallel_size,
        )
    except Exception as e:  # noqa: BLE001 - a missing catalog figure must not lose a measured point
        return Roofline(error=f"roofline not computed: {e}")


def _default_cost(hardware, metrics: Metrics, energy: Energy | None, n_gpus: int) -> dict[str, CostFigures]:
    """$/Mtok under every named scenario the hardware's catalog prices allow."""
    if hardware is None:
        return {}
    from bench.measure.cost import cost_for_point, scenarios_for

    out = {}
    for name, scenario in scenarios_for(hardware).items():
        try:
            out[name] = cost_for_point(metrics, energy, scenario, n_gpus)
        except Exception as e:  # noqa: BLE001 - a scenario that cannot be priced must not lose the point
            out[name] = CostFigures(scenario=name, error=f"cost not computed: {e}")
    return out
