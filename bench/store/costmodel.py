"""The shared cost-model table: every valid, ok load point of every published run, one row.

$/Mtok is recomputed for each cost scenario from the stored metrics and energy with
`bench.measure.cost`, so changing a price never needs a rerun. The table is deterministic: the
same runs give the same bytes (rows and columns in a fixed order, no timestamps, fixed
float formatting in CSV and fixed Parquet writer options). Columns: docs/costmodel.md.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from bench.catalog.engines import recorded_engine_version
from bench.errors import BenchError, ConfigError, ResultError, StoreError
from bench.results import RunResult, read_summary

COSTMODEL_DIR = "costmodel"
TABLE_NAME = "costmodel"
CSV_FLOAT_FORMAT = "%.9g"
SORT_KEYS = ["model", "hardware", "precision", "kv_cache_dtype", "engine", "n_gpus", "run_id", "point_id"]
BASE_COLUMNS = [
    "run_id", "point_id", "model", "hardware", "n_gpus", "total_params", "active_params", "sparsity",
    "dtype", "quantization", "kv_cache_dtype", "precision", "engine", "engine_version",
    "isl", "osl", "load_kind", "concurrency", "rate_rps", "n_requests",
    "output_tok_s", "total_tok_s", "tok_s_per_gpu", "output_tok_s_per_gpu", "interactivity_tok_s_user",
    "ttft_s_p50", "ttft_s_p99", "tpot_s_p50", "tpot_s_p99", "error_rate", "goodput_output_tok_s",
    "avg_power_w", "avg_power_w_per_gpu", "idle_power_w", "j_per_token", "j_per_output_token",
    "energy_method", "measured", "roofline_efficiency", "valid",
    "harness_version", "device_name", "run_date",
]
SCENARIO_FIELDS = [
    "utilization", "usd_per_gpu_hour", "usd_per_mtok_output", "usd_per_mtok_input",
    "usd_per_mtok_total", "usd_per_mtok_goodput",
]
_STRING_COLUMNS = {
    "run_id", "point_id", "model", "hardware", "dtype", "quantization", "kv_cache_dtype", "precision",
    "engine", "engine_version", "load_kind", "energy_method", "harness_version", "device_name", "run_date",
}
_BOOL_COLUMNS = {"measured", "valid"}
_INT_COLUMNS = {"n_gpus", "total_params", "active_params", "isl", "osl", "concurrency", "n_requests"}
_PRECISION_NAMES = {"bfloat16": "bf16", "float16": "fp16", "half": "fp16", "float32": "fp32", "float": "fp32"}

ScenariosFn = Callable[[str], dict[str, Any]]  # hardware id -> {scenario name: scenario}
CostFn = Callable[[dict, dict, Any, int], dict]  # (metrics, energy, scenario, n_gpus) -> usd_per_mtok_*


@dataclass
class CostModelBuild:
    table: pd.DataFrame
    local_paths: list[Path] = field(default_factory=list)
    store_paths: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # "run_id: reason" of runs this bench cannot read


def precision_label(config: dict) -> str:
    """Precision of an engine configuration: the runner's label ("bf16", "fp8", "bf16+fp8-kv")
    when stored, else the quantization when set, else the dtype."""
    if config.get("precision"):
        return str(config["precision"])
    if config.get("quantization"):
        return str(config["quantization"])
    dtype = str(config.get("dtype") or "auto")
    return _PRECISION_NAMES.get(dtype, dtype)


def point_config(run: RunResult, point_engine_config_id: str) -> dict:
    """The engine configuration of one point: the run's top-level fields, overridden by its
    entry in `config.engine_configs` when the run has several configurations."""
    cfg = dict(run.config)
    cfg.update((run.config.get("engine_configs") or {}).get(point_engine_config_id) or {})
    return cfg


def engine_version_of(run: RunResult, config_id: str) -> str | None:
    """The engine version one configuration of `run` ran with (each engine its own)."""
    started = (run.extra.get("engine_version") or {}).get(config_id)
    return recorded_engine_version(point_config(run, config_id), run.provenance, started)


def point_rows(run_id: str, run: RunResult, model_info: Callable[[str], dict] | None = None,
               include_invalid: bool = False) -> list[dict]:
    """Base columns (no cost) for each valid, ok point of one run (with include_invalid, the
    invalid ok points too, `valid` false: for reports, never for the shared table)."""
    model_info = model_info or catalog_model_info
    prov = run.provenance
    rows = []
    for p in run.points:
        if p.status != "ok" or not (p.valid or include_invalid):
            continue
        cfg = point_config(run, p.engine_config_id)
        n_gpus = int(cfg.get("n_gpus") or 1)
        m, e = p.metrics or {}, p.energy or {}
        load = p.load.model_dump(mode="json")
        workload = p.workload.model_dump(mode="json") if p.workload is not None else {}
        row = {
            "run_id": run_id, "point_id": p.point_id, "model": cfg.get("model"),
            "hardware": cfg.get("hardware_id"), "n_gpus": n_gpus, **model_info(cfg.get("model")),
            "dtype": cfg.get("dtype"), "quantization": cfg.get("quantization"),
            "kv_cache_dtype": cfg.get("kv_cache_dtype"), "precision": precision_label(cfg),
            "engine": cfg.get("engine"), "engine_version": engine_version_of(run, p.engine_config_id),
            "isl": _first(workload, "input_len", "isl"), "osl": _first(workload, "output_len", "osl"),
            "load_kind": load.get("kind"), "concurrency": load.get("concurrency"),
            "rate_rps": load.get("rate_rps"), "n_requests": p.n_requests,
            "output_tok_s_per_gpu": _div(m.get("output_tok_s"), n_gpus),
            "avg_power_w_per_gpu": _div(e.get("avg_power_w"), e.get("n_devices") or n_gpus),
            "energy_method": e.get("energy_method"), "measured": e.get("measured"),
            "roofline_efficiency": (p.roofline or {}).get("roofline_efficiency"), "valid": bool(p.valid),
            "harness_version": run.harness.version, "device_name": prov.get("device_name"),
            "run_date": run.created_utc[:10],
        }
        for key in ("output_tok_s", "total_tok_s", "tok_s_per_gpu", "interactivity_tok_s_user", "ttft_s_p50",
                    "ttft_s_p99", "tpot_s_p50", "tpot_s_p99", "error_rate", "goodput_output_tok_s"):
            row[key] = m.get(key)
        for key in ("avg_power_w", "idle_power_w", "j_per_token", "j_per_output_token"):
            row[key] = e.get(key)
        row["_metrics"], row["_energy"] = m, e
        rows.append(row)
    return rows


def build_table(
    runs: Iterable[tuple[str, RunResult]],
    scenario_names: list[str] | None = None,
    scenarios_for: ScenariosFn | None = None,
    cost_for_point: CostFn | None = None,
    model_info: Callable[[str], dict] | None = None,
    include_invalid: bool = False,
) -> pd.DataFrame:
    """The cost-model table of (run_id, RunResult) pairs; order of `runs` does not matter.

    `scenario_names` keeps only those scenarios (an unknown name is a ConfigError);
    `scenarios_for`/`cost_for_point` default to bench.measure.cost (injected in tests);
    `include_invalid` adds the invalid ok points (reports only: the shared table never has them).
    """
    scenarios_for = scenarios_for or catalog_scenarios
    cost_for_point = cost_for_point or _default_cost_fn()
    rows, seen = [], set()
    scenario_cache: dict[str, dict] = {}
    for run_id, run in runs:
        for row in point_rows(run_id, run, model_info, include_invalid):
            hw = row["hardware"]
            if hw not in scenario_cache:
                scenario_cache[hw] = scenarios_for(hw)
            for name, scenario in scenario_cache[hw].items():
                seen.add(name)
                if scenario_names and name not in scenario_names:
                    continue
                cost = cost_for_point(row["_metrics"], row["_energy"], scenario, row["n_gpus"])
                utilization = cost.get("utilization", getattr(scenario, "utilization", None))
                values = {**cost, "utilization": utilization}
                for key in SCENARIO_FIELDS:
                    row[f"{key}__{name}"] = values.get(key)
            rows.append(row)
    unknown = sorted(set(scenario_names or ()) - seen)
    if unknown and rows:
        raise ConfigError(f"unknown cost scenario(s) {', '.join(unknown)} (known: {', '.join(sorted(seen))})")
    return rows_to_frame(rows)


def rows_to_frame(rows: list[dict]) -> pd.DataFrame:
    """Fixed column order (base, then scenario columns sorted), sorted rows, stable dtypes."""
    extra = sorted({k for r in rows for k in r if k not in BASE_COLUMNS and not k.startswith("_")},
                   key=lambda c: (c.split("__", 1)[-1], SCENARIO_FIELDS.index(c.split("__", 1)[0])))
    columns = BASE_COLUMNS + extra
    frame = pd.DataFrame([{c: r.get(c) for c in columns} for r in rows], columns=columns)
    for c in columns:
        if c in _STRING_COLUMNS:
            frame[c] = frame[c].astype("string")
        elif c in _BOOL_COLUMNS:
            frame[c] = frame[c].astype("boolean")
        elif c in _INT_COLUMNS:
            frame[c] = pd.to_numeric(frame[c], errors="coerce").round().astype("Int64")
        else:
            frame[c] = pd.to_numeric(frame[c], errors="coerce").astype("float64")
    frame = frame.sort_values(SORT_KEYS, kind="mergesort", na_position="last").reset_index(drop=True)
    return frame


def table_bytes(table: pd.DataFrame) -> dict[str, bytes]:
    """{"parquet": bytes, "csv": bytes}, identical for identical tables."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    arrow = pa.Table.from_pandas(table, preserve_index=False)
    pq.write_table(arrow, buf, compression="zstd", compression_level=3, use_dictionary=True,
                   write_statistics=True, version="2.6", data_page_version="1.0")
    csv = table.to_csv(index=False, float_format=CSV_FLOAT_FORMAT, lineterminator="\n", na_rep="")
    return {"parquet": buf.getvalue(), "csv": csv.encode()}


def write_table(table: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Write OUT_DIR/costmodel.parquet and .csv (atomically); returns both paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = table_bytes(table)
    paths = []
    for ext, blob in data.items():
        path = out_dir / f"{TABLE_NAME}.{ext}"
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(blob)
        tmp.replace(path)
        paths.append(path)
    return paths


def runs_from_store(url: str, storage_options: dict | None = None,
                    skipped: list[str] | None = None) -> list[tuple[str, RunResult]]:
    """Every published run whose files check out (checksums; request Parquet agrees with
    run.json). A run that fails (or that this bench cannot read, e.g. a newer schema) is
    left out with its one-line reason in `skipped`; raised when `skipped` is None."""
    from bench.store import Store

    store = Store(url, storage_options)
    out = []
    for manifest in store.manifests(refused=skipped):
        try:
            out.append((manifest["run_id"], store.read_checked_run(manifest["run_id"], manifest)))
        except (ResultError, StoreError) as e:
            if skipped is None:
                raise
            skipped.append(str(e) if isinstance(e, StoreError) else f"{manifest['run_id']}: {e}")
    return out


def find_run_dirs(paths: Iterable[Path]) -> list[Path]:
    """Run folders named directly (holding run.json) or found anywhere below the given folders."""
    found: list[Path] = []
    for path in map(Path, paths):
        if (path / "run.json").is_file() or path.name == "run.json":
            found.append(path if path.is_dir() else path.parent)
        elif path.is_dir():
            found += sorted(p.parent for p in path.rglob("run.json") if not _hidden_below(p, path))
        else:
            raise ConfigError(f"{path}: not a run folder or a folder of runs")
    return found


def runs_from_dirs(run_dirs: Iterable[Path]) -> list[tuple[str, RunResult]]:
    """Local run folders (or folders of them); a folder pulled from a store keeps its store run id."""
    out = []
    for run_dir in find_run_dirs(run_dirs):
        run = read_summary(Path(run_dir))
        manifest = Path(run_dir) / "MANIFEST.json"
        run_id = json.loads(manifest.read_text())["run_id"] if manifest.is_file() else run.run_id
        out.append((run_id, run))
    return out


def build(store_url: str, out_dir: Path | None = None, scenario_names: list[str] | None = None,
          storage_options: dict | None = None, **inject) -> CostModelBuild:
    """Build the table from every published run, write it locally (if out_dir) and back to the store."""
    from bench.store import Store

    skipped: list[str] = []
    table = build_table(runs_from_store(store_url, storage_options, skipped), scenario_names, **inject)
    result = CostModelBuild(table, skipped=skipped)
    store = Store(store_url, storage_options)
    if out_dir is not None:
        result.local_paths = write_table(table, out_dir)
    for ext, blob in table_bytes(table).items():
        result.store_paths.append(store.put_bytes(f"{COSTMODEL_DIR}/{TABLE_NAME}.{ext}", blob))
    return result


def catalog_model_info(model_key: str | None) -> dict:
    """total_params, active_params, sparsity (active/total) from the catalog; NaN when unknown."""
    try:
        from bench.catalog import get_model

        m = get_model(model_key)
    except (BenchError, ImportError, TypeError):
        return {"total_params": math.nan, "active_params": math.nan, "sparsity": math.nan}
    return {"total_params": m.total_params, "active_params": m.active_params,
            "sparsity": m.active_params / m.total_params}


def catalog_scenarios(hardware_id: str | None) -> dict[str, Any]:
    """bench.measure.cost scenarios of a catalog hardware entry; none for hardware the catalog lacks."""
    from bench.catalog import get_hardware
    from bench.measure.cost import scenarios_for

    try:
        hardware = get_hardware(hardware_id)
    except (BenchError, TypeError):
        return {}
    return scenarios_for(hardware)


def _default_cost_fn() -> CostFn:
    from bench.measure.cost import cost_for_point

    return cost_for_point


def _hidden_below(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def _first(d: dict, *keys: str) -> Any:
    return next((d[k] for k in keys if d.get(k) is not None), None)


def _div(value: Any, n: int) -> float | None:
    return None if value is None else float(value) / n
