"""One load point, measured: drive the load, then turn records + energy into a PointResult.

Pure bookkeeping around the steps that do the work (load driver, telemetry, metrics,
validity, cost, roofline); the runner owns the engine and the files.
"""

from __future__ import annotations

from typing import Any

from bench.load.records import RequestRecord
from bench.plan import EngineConfig, PointSpec
from bench.run.provenance import utc_now
from bench.results import PointResult

DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4, "auto": 2, "fp8": 1}


def make_workload(spec: dict[str, Any], vocab_size: int, seed: int):
    """The workload object a point's `workload` dict describes."""
    from bench.load import workload as wl

    kind = spec.get("kind", "random")
    args = {k: v for k, v in spec.items() if k != "kind"}
    args.setdefault("seed", seed)
    if kind == "random":
        return wl.RandomWorkload(vocab_size=vocab_size, **args)
    if kind == "shared_prefix":
        return wl.SharedPrefixWorkload(vocab_size=vocab_size, **args)
    if kind == "file":
        return wl.FileWorkload(**args)
    from bench.errors import ConfigError

    raise ConfigError(f"unknown workload kind '{kind}' (known: random, shared_prefix, file)")


def target_concurrency(load: dict[str, Any]) -> int:
    """The batch the engine sees: the concurrency, or the batch of an offline point (1 for rates)."""
    return int(load.get("concurrency") or load.get("batch") or load.get("max_concurrency") or 1)


def build_point_result(
    point: PointSpec,
    cfg: EngineConfig,
    records: list[RequestRecord],
    run_facts: dict[str, Any],
    *,
    n_gpus: int,
    energy: dict[str, Any] | None,
    server_delta: dict[str, float] | None,
    client_tokens_in_counter_interval: dict[str, int] | None,
    model=None,
    hardware=None,
    probe: dict | None = None,
    started_utc: str | None = None,
) -> PointResult:
    """Metrics, energy per token, roofline, default cost and validity for one finished point."""
    from bench.measure.metrics import summarize
    from bench.measure.validity import check_point

    window = (run_facts["window_t0_s"], run_facts["window_t1_s"])
    metrics = summarize(records, window=window, n_gpus=n_gpus, slo=point.slo)
    energy = dict(energy or {})
    if energy:
        from bench.telemetry import per_token

        energy.update(per_token(energy, metrics.get("window_output_tokens"), _total_tokens(metrics)))
    roofline = _roofline(cfg, point, model, hardware, n_gpus, metrics, probe)
    cost = _default_cost(hardware, metrics, energy, n_gpus)
    valid, reasons = check_point(
        metrics, point.load, run_facts,
        server_counters=server_delta, client_counters=client_tokens_in_counter_interval, energy=energy or None,
    )
    failed = [r for r in records if r.phase == "measured" and not r.ok]
    return PointResult(
        point_id=point.point_id,
        engine_config_id=point.engine_config_id,
        load=point.load,
        workload=point.workload,
        status="ok",
        n_requests=sum(1 for r in records if r.phase == "measured"),
        n_failed=len(failed),
        error=failed[0].error if failed else None,
        window={
            "t0_s": window[0], "t1_s": window[1],
            "window_s": window[1] - window[0],
            "span_s": run_facts["span_t1_s"] - run_facts["span_t0_s"],
        },
        metrics=metrics,
        server={"counter_delta": server_delta, "client_counts": client_tokens_in_counter_interval},
        energy=energy,
        cost=cost,
        roofline=roofline,
        valid=valid,
        invalid_reasons=reasons,
        started_utc=started_utc,
        finished_utc=utc_now(),
    )


def failed_point(point: PointSpec, status: str, error: str, started_utc: str | None = None) -> PointResult:
    """A point that did not produce measurements (failed or skipped), with its one-line cause."""
    return PointResult(
        point_id=point.point_id,
        engine_config_id=point.engine_config_id,
        load=point.load,
        workload=point.workload,
        status=status,
        error=error,
        valid=False,
        invalid_reasons=[error],
        started_utc=started_utc,
        finished_utc=utc_now(),
    )


def _total_tokens(metrics: dict) -> float | None:
    a, b = metrics.get("window_output_tokens"), metrics.get("window_input_tokens")
    return None if a is None or b is None else a + b


def _roofline(cfg, point, model, hardware, n_gpus, metrics, probe) -> dict:
    if model is None or hardware is None or not metrics.get("output_tok_s"):
        return {}
    from bench.measure.roofline import point_roofline

    wl = point.workload
    context = int(wl.get("input_len", 0)) + int(wl.get("output_len", 0)) // 2
    bytes_per_param = 1 if cfg.quantization == "fp8" else DTYPE_BYTES.get(cfg.dtype, 2)
    kv_bytes = 1 if cfg.kv_cache_dtype.startswith("fp8") else DTYPE_BYTES.get(cfg.dtype, 2)
    try:
        return point_roofline(
            model, hardware, batch=target_concurrency(point.load), context_len=max(context, 1),
            bytes_per_param=bytes_per_param, kv_bytes_per_elem=kv_bytes, n_gpus=n_gpus,
            measured_output_tok_s=metrics["output_tok_s"], probe=probe,
        )
    except Exception as e:  # a missing catalog figure must not lose a measured point
        return {"error": f"roofline not computed: {e}"}


def _default_cost(hardware, metrics, energy, n_gpus) -> dict:
    """$/Mtok under every named scenario the hardware's catalog prices allow."""
    if hardware is None:
        return {}
    from bench.measure.cost import cost_for_point, scenarios_for

    out = {}
    for name, scenario in scenarios_for(hardware).items():
        try:
            out[name] = cost_for_point(metrics, energy, scenario, n_gpus)
        except Exception as e:
            out[name] = {"error": f"cost not computed: {e}"}
    return out
