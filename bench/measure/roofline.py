"""The physical limit of a load point (docs/measurement.md section 6).

Decode is bounded by memory: one step serving `batch` sequences reads the weights it
touches once plus every sequence's KV cache, so

    bandwidth_bound_tok_s = batch / (bytes_per_step / bandwidth)
    bytes_per_step        = decode_weight_bytes(batch) + batch x context_len x kv_bytes_per_token

and by compute: `compute_bound_tok_s = peak FLOP/s / flops_per_token(context_len)`.
Both scale with n_gpus (ideal tensor parallelism). Under data parallelism each of the
`replicas` serves its share of the batch and reads its own copy of the weights, so a step
moves replicas x the weights of that share. Figures from a probe file (what the
harness measured on the card) replace the catalog's datasheet figures when given.
"""

from __future__ import annotations

from bench.catalog.dtypes import matrix_precision
from bench.measure.groups import Roofline
from bench.telemetry.types import ProbeFigures


def point_roofline(
    model,
    hardware,
    batch: int,
    context_len: int,
    bytes_per_param: float,
    kv_bytes_per_elem: float,
    n_gpus: int,
    measured_output_tok_s: float | None,
    probe: ProbeFigures | None = None,
    dtype: str | None = None,
    replicas: int = 1,
) -> Roofline:
    """Bounds (tokens/s, all GPUs), the binding one, and measured / bound."""
    probe = probe or ProbeFigures()
    batch = max(int(batch), 1)
    bw_tbs, bw_source = _pick(probe.bandwidth_tbs, hardware.bandwidth_tbs)
    if bw_tbs is None:
        raise ValueError(f"no memory bandwidth for {hardware.name}: neither probed nor in the catalog")
    want = dtype or matrix_precision(bytes_per_param)
    used_dtype = want if hardware.tflops.get(want) or probe.tflops.get(want) else "bf16"
    tflops, flops_source = _pick(probe.tflops.get(used_dtype), hardware.tflops.get(used_dtype))

    replicas = max(int(replicas), 1)
    weight_bytes = replicas * model.decode_weight_bytes(-(-batch // replicas), bytes_per_param)
    kv_bytes = batch * context_len * model.kv_bytes_per_token(kv_bytes_per_elem, context_len)
    bytes_per_step = weight_bytes + kv_bytes
    bandwidth_bound = batch * bw_tbs * 1e12 * n_gpus / bytes_per_step
    compute_bound = tflops * 1e12 * n_gpus / model.flops_per_token(context_len) if tflops else None

    bound = min(b for b in (bandwidth_bound, compute_bound) if b is not None)
    return Roofline(
        bandwidth_bound_tok_s=bandwidth_bound,
        compute_bound_tok_s=compute_bound,
        bound_tok_s=bound,
        bound_kind="bandwidth" if bound == bandwidth_bound else "compute",
        roofline_efficiency=measured_output_tok_s / bound if measured_output_tok_s is not None else None,
        bandwidth_tbs=bw_tbs,
        bandwidth_source=bw_source,
        tflops=tflops,
        flops_dtype=used_dtype,
        flops_source=flops_source,
        bytes_per_step=bytes_per_step,
        weight_bytes_per_step=weight_bytes,
        kv_bytes_per_step=kv_bytes,
        batch=batch,
        context_len=context_len,
        n_gpus=n_gpus,
        replicas=replicas,
    )


def _pick(measured, catalog) -> tuple[float | None, str]:
    if measured:
        return float(measured), "probe"
    return (float(catalog) if catalog else None), "catalog"
