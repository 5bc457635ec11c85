"""A run -> its rows: the pure derivation the table and the point files share (no I/O).

    rows = point_rows(run_id, run)                  # one dict a valid, ok load point
    files = run_point_files(run_id, run)            # {store-relative path: Parquet bytes}

`point_rows` makes the base columns (no catalog figure, no cost: both are added when the
table is made, bench.store.costmodel.table_frame) and POINT_EXTRA_COLUMNS of each point;
`run_point_files` groups them by hardware and model into the run's point files
(bench.store.points), in POINT_COLUMNS order with fixed types, sorted, written with the
table's Parquet options and no timestamps: the same run gives the same bytes anywhere.
Columns and types: bench.store.schema.
"""

from __future__ import annotations

import hashlib
import io
import math
import re
from collections.abc import Callable
from typing import Any

from bench.catalog.engines import recorded_engine_version
from bench.errors import BenchError
from bench.results import RunResult
from bench.results.config import StoredSpeculative
from bench.safepath import check_rel_path, check_run_id
from bench.store.accuracy_rows import accuracy_columns
from bench.store.manifest import sha256_hex
from bench.store.plausibility import n_gpus_of
from bench.store.schema import (
    PARQUET_OPTIONS,
    POINTS_DIR,
    cast_columns,
    conform,
    point_schema,
    sort_points,
)

_PLAIN_VALUE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_METRICS = ("output_tok_s", "input_tok_s", "total_tok_s", "tok_s_per_gpu", "interactivity_tok_s_user",
            "ttft_s_p50", "ttft_s_p99", "tpot_s_p50", "tpot_s_p99", "error_rate", "goodput_output_tok_s")
_ENERGY = ("avg_power_w", "idle_power_w", "j_per_token", "j_per_output_token",
           "power_scope")  # issue 20 item 6


def engine_version_of(run: RunResult, config_id: str) -> str | None:
    """The engine version one configuration of `run` ran with (each engine its own)."""
    started = (run.extra.get("engine_version") or {}).get(config_id)
    return recorded_engine_version(run.config.engine_config(config_id), run.provenance.engine_version, started)


def run_models(run: RunResult) -> list[str]:
    """Every model key a run measured (several when it swept engine configurations)."""
    keys = {c.model for c in run.config.engine_configs.values()}
    keys.add(run.config.model)
    return sorted(k for k in keys if k)


ModelInfoFn = Callable[[str | None], dict]  # model key (None: the config names none) -> catalog columns


def point_rows(run_id: str, run: RunResult, model_info: ModelInfoFn | None = None,
               include_invalid: bool = False) -> list[dict]:
    """Base columns (no cost) and POINT_EXTRA_COLUMNS for each valid, ok point of one run
    (with include_invalid, the invalid ok points too, `valid` false: point files and reports
    keep them, the shared table never has them)."""
    model_info = model_info or catalog_model_info
    prov = run.provenance
    run_fields = {"run_status": run.status, "run_n_points": len(run.points),
                  "run_n_valid_points": sum(1 for p in run.points if p.valid and p.status == "ok"),
                  "driver_version": prov.driver_version, "harness_git_sha": run.harness.git_sha,
                  "synthetic": run.synthetic}
    rows = []
    repeats = _repeat_columns(run)
    for p in run.points:
        if p.status != "ok" or not (p.valid or include_invalid):
            continue
        cfg = run.config.engine_config(p.engine_config_id)  # bench.results.config.StoredEngineConfig
        n_gpus = n_gpus_of(cfg.model_dump())  # a count that is not TP x PP x DP is refused, never divided by
        m, e, roof, w = p.metrics, p.energy, p.roofline, p.workload
        output_tok_s = m.output_tok_s if m is not None else None
        row = {
            "run_id": run_id, "point_id": p.point_id, "model": cfg.model,
            "hardware": cfg.hardware_id, "n_gpus": n_gpus, **model_info(cfg.model),
            "dtype": cfg.dtype, "quantization": cfg.quantization,
            "kv_cache_dtype": cfg.kv_cache_dtype, "precision": cfg.precision_label(),
            "engine": cfg.engine, "engine_version": engine_version_of(run, p.engine_config_id),
            "isl": getattr(w, "input_len", None), "osl": getattr(w, "output_len", None),
            "load_kind": p.load.kind, "concurrency": getattr(p.load, "concurrency", None),
            "rate_rps": getattr(p.load, "rate_rps", None), "n_requests": p.n_requests,
            "output_tok_s_per_gpu": _div(output_tok_s, n_gpus),
            "avg_power_w_per_gpu": _div(e.avg_power_w, e.n_devices or n_gpus) if e is not None else None,
            "energy_method": e.energy_method if e is not None else None,
            "measured": e.measured if e is not None else None,
            "roofline_efficiency": roof.roofline_efficiency if roof is not None else None, "valid": bool(p.valid),
            "harness_version": run.harness.version, "device_name": prov.device_name,
            "run_date": run.created_utc[:10], "invalid_reasons": "; ".join(p.invalid_reasons),
            "weights": cfg.weights, **run_fields,
            **accuracy_columns(run, p.engine_config_id),  # accuracy gate
        }
        row |= spec_columns(cfg.speculative, p.spec_decode)  # speculative decoding (issue 21)
        row |= {key: getattr(m, key) if m is not None else None for key in _METRICS}
        row |= {key: getattr(e, key) if e is not None else None for key in _ENERGY}
        row |= repeats.get(p.point_id, {})
        row |= traffic_columns(p)  # issue 21, lora
        rows.append(row)
    return rows


def spec_columns(speculative: StoredSpeculative | None, spec: Any) -> dict:
    """The speculative-decoding columns of a row: method ("none": no speculation), draft tokens
    per step, and the point's mean acceptance length (tokens/step) and acceptance rate."""
    method = speculative.method if speculative is not None else None
    tokens = speculative.num_speculative_tokens if speculative is not None else None
    return {"spec_method": str(method) if method else "none",
            "spec_tokens": tokens if type(tokens) is int else None,
            "spec_mean_acceptance_length": spec.mean_acceptance_length if spec is not None else None,
            "spec_acceptance_rate": spec.acceptance_rate if spec is not None else None}


def _repeat_columns(run: RunResult) -> dict[str, dict[str, Any]]:
    """{point id: REPEAT_COLUMNS} of every point of `run` that is a valid repeat of its load point."""
    from bench.results.repeats import repeat_summaries
    from bench.store.schema import REPEAT_FIGURES

    out: dict[str, dict[str, Any]] = {}
    for s in repeat_summaries(run):
        if s.invalid:
            continue
        cols: dict[str, Any] = {"repeat_of": s.point, "repeats_n": s.n}
        for f in REPEAT_FIGURES:
            iv = s.figures.get(f)
            if iv is not None:
                cols |= {f"{f}_mean": iv.mean, f"{f}_sd": iv.sd, f"{f}_ci95_lo": iv.lo, f"{f}_ci95_hi": iv.hi}
        out |= dict.fromkeys(s.point_ids, cols)
    return out


def traffic_columns(p: Any) -> dict:
    """A point's LoRA mix and structured-output columns (None where its workload has none)."""
    from bench.plan.points import LoraWorkload

    w = p.workload
    s = p.structured
    return {"lora_mix": w.mix_label() if isinstance(w, LoraWorkload) else None,
            "structured_mode": s.mode if s is not None else None,
            "structured_valid_share": s.valid_share if s is not None else None}


def catalog_model_info(model_key: str | None) -> dict:
    """total_params, active_params, sparsity (active/total) from the catalog; NaN when unknown."""
    if model_key is None:
        return {"total_params": math.nan, "active_params": math.nan, "sparsity": math.nan}
    try:
        from bench.catalog import get_model

        m = get_model(model_key)
    except (BenchError, ImportError, TypeError):
        return {"total_params": math.nan, "active_params": math.nan, "sparsity": math.nan}
    return {"total_params": m.total_params, "active_params": m.active_params,
            "sparsity": m.sparsity}


def partition_value(value: Any) -> str:
    """A partition folder's value: the value itself when it is a plain name, else `_<hash>`."""
    text = "" if value is None else str(value)
    return text if _PLAIN_VALUE.match(text) else "_" + hashlib.sha256(text.encode()).hexdigest()[:16]


def partition_of(hardware: Any, model: Any) -> str:
    """`hardware=<v>/model=<v>`, safe as a relative path whatever the values."""
    return check_rel_path(f"hardware={partition_value(hardware)}/model={partition_value(model)}")


def point_file_rel(partition: str, run_id: str) -> str:
    return f"{POINTS_DIR}/{partition}/{run_id}.parquet"


def run_point_files(run_id: str, result: RunResult) -> dict[str, bytes]:
    """{store-relative path: bytes} of a run's point files, one per (hardware, model) it has
    ok points of; deterministic. RESULT: the run's verified copy (bench.store.verify)."""
    return {rel: points_bytes(rows) for rel, rows in run_point_tables(run_id, result).items()}


def run_point_tables(run_id: str, result: RunResult) -> dict:
    """{store-relative path: Arrow table} of `run_point_files`, rows as the files hold them (sorted)."""
    import pyarrow as pa

    check_run_id(run_id)
    table = rows_to_arrow(point_rows(run_id, result, model_info=lambda _: {}, include_invalid=True))
    if table.num_rows == 0:  # no ok point: an empty file under the run's own hardware and model
        parts = {partition_of(result.config.hardware_id, next(iter(run_models(result)), None)): table}
    else:
        of_row = [partition_of(hw, m) for hw, m in zip(table["hardware"].to_pylist(), table["model"].to_pylist())]
        parts = {part: table.filter(pa.array([p == part for p in of_row])) for part in sorted(set(of_row))}
    return {point_file_rel(part, run_id): sort_points(conform(rows)) for part, rows in parts.items()}


def manifest_entries(files: dict[str, bytes]) -> list[dict]:
    """The manifest's `point_files` list: each point file's path and sha256, sorted."""
    return [{"path": rel, "sha256": sha256_hex(blob)} for rel, blob in sorted(files.items())]


def rows_to_arrow(rows: list[dict]):
    """Point rows -> an Arrow table of the point schema. Each column is converted as
    `cast_columns` converts it: values of the column's type directly (NaN is null), any
    other column through pandas, with `cast_columns` itself."""
    import pandas as pd
    import pyarrow as pa

    arrays = []
    for f in point_schema():
        values = [r.get(f.name) for r in rows]
        try:
            arrays.append(pa.array(values, f.type, from_pandas=True))
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError):
            cast = cast_columns(pd.DataFrame({f.name: pd.Series(values, dtype=object)}))[f.name]
            arrays.append(pa.Array.from_pandas(cast, type=f.type))
    return pa.Table.from_arrays(arrays, schema=point_schema())


def points_bytes(table, metadata: dict[str, str] | None = None) -> bytes:
    """Parquet bytes of point rows: sorted, the table's writer options, only `metadata` added."""
    import pyarrow.parquet as pq

    table = sort_points(conform(table)).replace_schema_metadata(metadata or None)
    buf = io.BytesIO()
    pq.write_table(table, buf, **PARQUET_OPTIONS)
    return buf.getvalue()


def _div(value: Any, n: int) -> float | None:
    return None if value is None else float(value) / n
