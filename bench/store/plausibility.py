"""Physical plausibility of a run's figures, against the catalog (docs/store.md, "Trust model").

A recomputed figure can still be impossible: records forged to be self-consistent give back
whatever rates they were made for. These checks bound what a card can do:

- every figure is a finite, non-negative number;
- `n_gpus` is a positive integer (at most MAX_GPUS) equal to TP x PP x DP of the configuration;
- output tokens/s per GPU at most ROOFLINE_MARGIN x the roofline bound of the catalog's
  hardware and model (bench.measure.roofline with the catalog's figures, at the largest
  batch the records had in flight), and a probe's bandwidth or FLOPS at most
  ROOFLINE_MARGIN x the catalog's;
- average and idle power per GPU at most POWER_MARGIN x the board's limit (`power_w`), for
  hardware whose catalog figures are not estimates.

A violation is a `Implausible` error naming the figure; the run it belongs to is skipped.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from bench.errors import StoreError

if TYPE_CHECKING:
    from bench.results.config import StoredEngineConfig

MAX_GPUS = 100_000  # more GPUs than any one engine configuration spans
# The roofline bound assumes one token per sequence per decode step at the datasheet bandwidth:
# nothing measured beats it by half (speculative decoding, which can, is not run by bench).
ROOFLINE_MARGIN = 1.5
# A board's average power over a window stays under its limit; sampling jitter and boards
# configured above the datasheet TDP stay within a quarter of it.
POWER_MARGIN = 1.25
TABLE_FIGURES = {  # group -> figures that reach the table or validity, each finite and >= 0
    "metrics": ("output_tok_s", "input_tok_s", "total_tok_s", "tok_s_per_gpu", "output_tok_s_per_gpu",
                "interactivity_tok_s_user", "ttft_s_p50", "ttft_s_p99", "tpot_s_p50", "tpot_s_p99", "error_rate",
                "goodput_output_tok_s", "window_s", "request_s"),
    # (not energy_net_j: an idle baseline above a short window's power makes it honestly negative)
    "energy": ("avg_power_w", "idle_power_w", "j_per_token", "j_per_output_token", "energy_j"),
    "roofline": ("roofline_efficiency", "bound_tok_s", "bandwidth_tbs", "tflops"),
}


class Implausible(StoreError):
    """A figure no card can produce; the message names it."""


def n_gpus_of(cfg: dict) -> int:
    """The point's GPU count: a positive integer equal to TP x PP x DP of its configuration."""
    n = 1 if cfg.get("n_gpus") is None else cfg["n_gpus"]  # not recorded: one GPU, the runner's default
    parallel = [1 if cfg.get(k) is None else cfg[k]
                for k in ("tensor_parallel_size", "pipeline_parallel_size", "data_parallel_size")]
    for name, value in zip(("n_gpus", "tensor_parallel_size", "pipeline_parallel_size", "data_parallel_size"),
                           [n, *parallel]):
        if type(value) is not int or not 1 <= value <= MAX_GPUS:
            raise Implausible(f"config.{name}: {repr(value)[:40]} is not a GPU count (an integer 1..{MAX_GPUS})")
    if n != math.prod(parallel):
        raise Implausible(f"config.n_gpus: {n} is not TP x PP x DP = {' x '.join(map(str, parallel))}")
    return n


def check_figures(groups: dict) -> None:
    """Every TABLE_FIGURES figure present in GROUPS ({"metrics": Metrics, "energy": Energy,
    "roofline": Roofline}, each a typed group of bench.measure.groups or None) is finite and >= 0."""
    for group, names in TABLE_FIGURES.items():
        typed = groups[group]
        for name in names:
            value = getattr(typed, name) if typed is not None else None
            if value is None:
                continue
            if type(value) not in (int, float) or not math.isfinite(value) or value < 0:
                raise Implausible(f"{group}.{name}: {repr(value)[:40]} is not a finite, non-negative number")


def check_counters(server) -> None:
    """The server's counter deltas (used as stored; SERVER a ServerCounters group or None) are
    finite and non-negative."""
    delta = (server.counter_delta if server is not None else None) or {}
    for name, value in delta.items():
        if type(value) not in (int, float) or not math.isfinite(value) or value < 0:
            raise Implausible(f"server.counter_delta.{name}: {repr(value)[:40]} is not a finite, non-negative count")


def check_power(energy, n_gpus: int, hardware) -> None:
    """Average and idle power per device (ENERGY: an Energy group, or None) within POWER_MARGIN
    of the board's limit."""
    if energy is None or hardware is None or getattr(hardware, "estimated", False):
        return
    n = energy.n_devices or n_gpus
    limit = POWER_MARGIN * float(hardware.power_w)
    for name in ("avg_power_w", "idle_power_w"):
        value = getattr(energy, name)
        if value is not None and value / n > limit:
            raise Implausible(f"energy.{name}: {value / n:.4g} W per GPU is above {POWER_MARGIN} x the "
                              f"{hardware.power_w:g} W limit of {hardware.id}")


def check_roofline(point, cfg: StoredEngineConfig, n_gpus: int, metrics, run, context_len: int, model, hardware) -> None:
    """Output tokens/s per GPU within ROOFLINE_MARGIN of the catalog's roofline bound at the
    largest batch in flight (and CONTEXT_LEN, the one the point's roofline took); a probe's
    figures within ROOFLINE_MARGIN of the catalog's."""
    from bench.catalog.dtypes import bytes_per_param, kv_bytes_per_elem
    from bench.measure.roofline import point_roofline
    from bench.store.recompute import engine_namespace

    out = metrics.output_tok_s
    if model is None or hardware is None or not out:
        return
    roof = point.roofline
    if roof is not None:
        for value, source, catalog, name in (
                (roof.bandwidth_tbs, roof.bandwidth_source, hardware.bandwidth_tbs, "bandwidth_tbs"),
                (roof.tflops, roof.flops_source, hardware.tflops.get(roof.flops_dtype or "bf16"), "tflops")):
            if source == "probe" and catalog and value is not None and value > ROOFLINE_MARGIN * catalog:
                raise Implausible(f"roofline.{name}: a probe's {value:.4g} is above {ROOFLINE_MARGIN} x the catalog's "
                                  f"{catalog:g} for {hardware.id}")
    eng = engine_namespace(cfg)
    batch = max(int(run.max_in_flight or 1), int(run.target_concurrency or 1), 1)  # RUN: bench.load.driver.PointRun
    bound = point_roofline(model, hardware, batch=batch, context_len=max(int(context_len), 1),
                           bytes_per_param=bytes_per_param(eng, model), kv_bytes_per_elem=kv_bytes_per_elem(eng, model),
                           n_gpus=n_gpus, measured_output_tok_s=out, replicas=eng.data_parallel_size).bound_tok_s
    if bound is None:  # point_roofline always sets it (the smaller of its bounds); the group field is Optional
        return
    if out > ROOFLINE_MARGIN * bound:
        raise Implausible(f"metrics.output_tok_s: {out / n_gpus:.4g} tok/s per GPU is above {ROOFLINE_MARGIN} x the "
                          f"roofline bound {bound / n_gpus:.4g} of {model.key} on {hardware.id} (batch {batch})")
