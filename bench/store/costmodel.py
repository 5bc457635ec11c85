"""The shared cost-model table: every valid, ok load point of every published run, one row.

$/Mtok is recomputed for each cost scenario from the stored metrics and energy with
`bench.measure.cost`, so changing a price never needs a rerun. The table is deterministic: the
same runs give the same bytes (rows and columns in a fixed order, no timestamps, fixed
float formatting in CSV and fixed Parquet writer options). Columns: docs/costmodel.md.

One row shape serves every path: `point_rows` makes a run's rows, which either become a
table directly (`build_table`, local runs) or are stored as the run's point files at upload
(bench.store.points) and read back (bench.store.compact, bench.store.query); `table_frame`
turns either into the table, with catalog figures and $/Mtok added at that moment.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.catalog.engines import recorded_engine_version
from bench.errors import BenchError, ConfigError, ResultError, StoreError
from bench.measure.groups import Energy, Metrics
from bench.results import RunResult, read_summary
from bench.store.plausibility import n_gpus_of

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
CATALOG_COLUMNS = ["total_params", "active_params", "sparsity"]  # from models.yaml when the table is made
# What a run's point rows carry beyond the table: a cost input, why a point is invalid, and
# the run's provenance (for `bench compare --store`, which reads no run.json).
POINT_EXTRA_COLUMNS = ["input_tok_s", "invalid_reasons", "run_status", "run_n_points", "run_n_valid_points",
                       "weights", "driver_version", "harness_git_sha", "synthetic"]
SCENARIO_FIELDS = [
    "utilization", "usd_per_gpu_hour", "usd_per_mtok_output", "usd_per_mtok_input",
    "usd_per_mtok_total", "usd_per_mtok_goodput",
]
STRING_COLUMNS = {
    "run_id", "point_id", "model", "hardware", "dtype", "quantization", "kv_cache_dtype", "precision",
    "engine", "engine_version", "load_kind", "energy_method", "harness_version", "device_name", "run_date",
    "invalid_reasons", "run_status", "weights", "driver_version", "harness_git_sha",
}
BOOL_COLUMNS = {"measured", "valid", "synthetic"}
INT_COLUMNS = {"n_gpus", "total_params", "active_params", "isl", "osl", "concurrency", "n_requests",
               "run_n_points", "run_n_valid_points"}
_TOKENS = {"output": "output_tok_s", "input": "input_tok_s", "total": "total_tok_s", "goodput": "goodput_output_tok_s"}

_STRING = pd.StringDtype()  # "string": pyarrow-backed, <NA> for missing
ScenariosFn = Callable[[str], dict[str, Any]]  # hardware id -> {scenario name: bench.measure.cost.Scenario}


@dataclass
class CostModelBuild:
    table: pd.DataFrame
    local_paths: list[Path] = field(default_factory=list)
    store_paths: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # one line per run (or point file) left out, with why
    point_files: int = 0  # point files compacted
    backfilled: int = 0  # published runs that had none, given theirs by this build
    ignored: int = 0  # point files of runs that are not published (left out)
    verified: int = 0  # runs read and their figures derived again by this build
    partitions: int = 0


def engine_version_of(run: RunResult, config_id: str) -> str | None:
    """The engine version one configuration of `run` ran with (each engine its own)."""
    started = (run.extra.get("engine_version") or {}).get(config_id)
    return recorded_engine_version(run.config.engine_config(config_id).model_dump(), run.provenance, started)


def point_rows(run_id: str, run: RunResult, model_info: Callable[[str], dict] | None = None,
               include_invalid: bool = False) -> list[dict]:
    """Base columns (no cost) and POINT_EXTRA_COLUMNS for each valid, ok point of one run
    (with include_invalid, the invalid ok points too, `valid` false: point files and reports
    keep them, the shared table never has them)."""
    model_info = model_info or catalog_model_info
    prov = run.provenance
    run_fields = {"run_status": run.status, "run_n_points": len(run.points),
                  "run_n_valid_points": sum(1 for p in run.points if p.valid and p.status == "ok"),
                  "driver_version": prov.get("driver_version"), "harness_git_sha": run.harness.git_sha,
                  "synthetic": bool(run.extra.get("synthetic"))}
    rows = []
    for p in run.points:
        if p.status != "ok" or not (p.valid or include_invalid):
            continue
        cfg = run.config.engine_config(p.engine_config_id)
        n_gpus = n_gpus_of(cfg.model_dump())  # a count that is not TP x PP x DP is refused, never divided by
        # each group's fields by name: a group the point lacks gives None for all of them
        m, e = p.metrics or Metrics(), p.energy or Energy()
        load = p.load.model_dump(mode="json")
        workload = p.workload.model_dump(mode="json") if p.workload is not None else {}
        row = {
            "run_id": run_id, "point_id": p.point_id, "model": cfg.model,
            "hardware": cfg.hardware_id, "n_gpus": n_gpus, **model_info(cfg.model),
            "dtype": cfg.dtype, "quantization": cfg.quantization,
            "kv_cache_dtype": cfg.kv_cache_dtype, "precision": cfg.precision_label(),
            "engine": cfg.engine, "engine_version": engine_version_of(run, p.engine_config_id),
            "isl": _first(workload, "input_len", "isl"), "osl": _first(workload, "output_len", "osl"),
            "load_kind": load.get("kind"), "concurrency": load.get("concurrency"),
            "rate_rps": load.get("rate_rps"), "n_requests": p.n_requests,
            "output_tok_s_per_gpu": _div(m.output_tok_s, n_gpus),
            "avg_power_w_per_gpu": _div(e.avg_power_w, e.n_devices or n_gpus),
            "energy_method": e.energy_method, "measured": e.measured,
            "roofline_efficiency": p.roofline.roofline_efficiency if p.roofline is not None else None,
            "valid": bool(p.valid),
            "harness_version": run.harness.version, "device_name": prov.get("device_name"),
            "run_date": run.created_utc[:10], "invalid_reasons": "; ".join(p.invalid_reasons),
            "weights": cfg.weights, **run_fields,
        }
        for key in ("output_tok_s", "input_tok_s", "total_tok_s", "tok_s_per_gpu", "interactivity_tok_s_user",
                    "ttft_s_p50", "ttft_s_p99", "tpot_s_p50", "tpot_s_p99", "error_rate", "goodput_output_tok_s"):
            row[key] = getattr(m, key)
        for key in ("avg_power_w", "idle_power_w", "j_per_token", "j_per_output_token"):
            row[key] = getattr(e, key)
        rows.append(row)
    return rows


def build_table(
    runs: Iterable[tuple[str, RunResult]],
    scenario_names: list[str] | None = None,
    scenarios_for: ScenariosFn | None = None,
    model_info: Callable[[str], dict] | None = None,
    include_invalid: bool = False,
) -> pd.DataFrame:
    """The cost-model table of (run_id, RunResult) pairs; order of `runs` does not matter.

    `scenario_names` keeps only those scenarios (an unknown name is a ConfigError);
    `scenarios_for`/`model_info` default to the catalog (injected in tests); `include_invalid`
    adds the invalid ok points (reports only: the shared table never has them).
    """
    rows = [r for run_id, run in runs for r in point_rows(run_id, run, lambda _: {}, include_invalid)]
    return table_frame(pd.DataFrame(rows), scenario_names, scenarios_for, model_info)


def table_frame(points: pd.DataFrame, scenario_names: list[str] | None = None,
                scenarios_for: ScenariosFn | None = None, model_info: Callable[[str], dict] | None = None,
                extra_columns: bool = False) -> pd.DataFrame:
    """Point rows (from `point_rows` or read from point files) -> the table: catalog columns
    and every scenario's cost columns added now, fixed column order (with `extra_columns`,
    POINT_EXTRA_COLUMNS after the base ones), sorted rows, stable dtypes."""
    frame = cast_columns(points.reindex(columns=[c for c in BASE_COLUMNS + POINT_EXTRA_COLUMNS
                                                 if c not in CATALOG_COLUMNS]))
    frame = _with_catalog(frame, model_info or catalog_model_info)
    frame = _with_costs(frame, scenario_names, scenarios_for or catalog_scenarios)
    return _ordered(frame, POINT_EXTRA_COLUMNS if extra_columns else [])


def rows_to_frame(rows: list[dict]) -> pd.DataFrame:
    """Rows as they are (no catalog or cost added) in the table's column order, sorted, stable dtypes."""
    return _ordered(pd.DataFrame(rows))


def cast_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """Each known column to its one dtype (string, boolean, Int64, else float64)."""
    out = {}
    for c in frame.columns:
        column = frame[c]
        if c in STRING_COLUMNS:
            out[c] = column if column.dtype == _STRING else column.astype(_STRING)
        elif c in BOOL_COLUMNS:
            out[c] = column if column.dtype == "boolean" else column.astype("boolean")
        elif c in INT_COLUMNS:
            out[c] = column if column.dtype == "Int64" else pd.to_numeric(column, errors="coerce").round().astype("Int64")
        else:
            out[c] = column if column.dtype == "float64" else pd.to_numeric(column, errors="coerce").astype("float64")
    return pd.DataFrame(out, index=frame.index, columns=frame.columns)


def _ordered(frame: pd.DataFrame, extra: list[str] = ()) -> pd.DataFrame:
    """Base columns, then `extra`, then the scenario columns sorted by scenario; rows by SORT_KEYS."""
    scenario_columns = sorted((c for c in frame.columns if "__" in c),
                              key=lambda c: (c.split("__", 1)[-1], SCENARIO_FIELDS.index(c.split("__", 1)[0])))
    frame = cast_columns(frame.reindex(columns=BASE_COLUMNS + list(extra) + scenario_columns))
    return frame.sort_values(SORT_KEYS, kind="mergesort", na_position="last").reset_index(drop=True)


def _with_catalog(frame: pd.DataFrame, model_info: Callable[[str], dict]) -> pd.DataFrame:
    models = frame["model"].astype(object).where(frame["model"].notna(), None)
    info = {m: model_info(m) for m in dict.fromkeys(models)}
    return frame.assign(**{c: [info[m].get(c) for m in models] for c in CATALOG_COLUMNS})


def _with_costs(frame: pd.DataFrame, scenario_names: list[str] | None, scenarios_for: ScenariosFn) -> pd.DataFrame:
    """`<field>__<scenario>` columns of every scenario each row's hardware allows.

    The formulas are bench.measure.cost's own: `cost_breakdown` takes the per-GPU power of
    every row at once (NumPy arithmetic) and `usd_per_mtok` is applied element-wise, so each
    value is the one `cost_for_point` gives for that point (tests/test_costmodel_query.py holds it)."""
    from bench.measure.cost import cost_breakdown, usd_per_mtok

    per_mtok = np.frompyfunc(usd_per_mtok, 3, 1)
    n_gpus = frame["n_gpus"].to_numpy(float, na_value=np.nan)
    per_gpu = {k: frame[c].to_numpy(float, na_value=np.nan) / n_gpus for k, c in _TOKENS.items()}
    power = frame["avg_power_w_per_gpu"].to_numpy(float, na_value=np.nan)
    codes, hardware = pd.factorize(frame["hardware"].astype(object), use_na_sentinel=False)
    by_hw = [(None if pd.isna(hw) else hw, codes == k) for k, hw in enumerate(hardware)]
    scenarios = [(mask, scenarios_for(hw)) for hw, mask in by_hw]
    seen = {name for _, named in scenarios for name in named}
    names = sorted(n for n in seen if not scenario_names or n in scenario_names)
    unknown = sorted(set(scenario_names or ()) - seen)
    if unknown and len(frame):
        raise ConfigError(f"unknown cost scenario(s) {', '.join(unknown)} (known: {', '.join(sorted(seen))})")
    columns = [f"{f}__{name}" for name in names for f in SCENARIO_FIELDS]
    values = np.full((len(frame), len(columns)), np.nan, order="F")  # one block, column-major: no copy in pandas
    for mask, named in scenarios:
        for name, scenario in named.items():
            if name not in names:
                continue
            at = {f: columns.index(f"{f}__{name}") for f in SCENARIO_FIELDS}
            usd_h = cost_breakdown(scenario, power[mask])["usd_per_gpu_hour"]
            values[mask, at["utilization"]] = scenario.utilization
            values[mask, at["usd_per_gpu_hour"]] = np.nan if usd_h is None else usd_h
            for kind, tok in per_gpu.items():
                values[mask, at[f"usd_per_mtok_{kind}"]] = per_mtok(usd_h, tok[mask], scenario.utilization)
    if not columns:
        return frame
    return pd.concat([frame, pd.DataFrame(values, index=frame.index, columns=columns)], axis=1)


def table_bytes(table: pd.DataFrame) -> dict[str, bytes]:
    """{"parquet": bytes, "csv": bytes}, identical for identical tables."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    arrow = pa.Table.from_pandas(table, preserve_index=False)
    pq.write_table(arrow, buf, **PARQUET_OPTIONS)
    from bench.escape import (
        csv_safe,  # a cell like =HYPERLINK(...) from a run is text, never a formula
    )

    csv = csv_safe(table).to_csv(index=False, float_format=CSV_FLOAT_FORMAT, lineterminator="\n", na_rep="")
    return {"parquet": buf.getvalue(), "csv": csv.encode()}


PARQUET_OPTIONS = {"compression": "zstd", "compression_level": 3, "use_dictionary": True,
                   "write_statistics": True, "version": "2.6", "data_page_version": "1.0",
                   "write_page_checksum": True}  # a CRC32 a page (bench.results.schema.PARQUET_WRITE_OPTIONS)


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
    run.json; figures derived again, bench.store.verify), as its verified copy. A run that
    fails (or that this bench cannot read, e.g. a newer schema) is left out with its one-line
    reason in `skipped`; raised when `skipped` is None. Reads every run: the table itself
    comes from the point files (`build`)."""
    from bench.store import Store
    from bench.store.verify import read_verified_run

    store = Store(url, storage_options)
    out = []
    for manifest in store.manifests(refused=skipped):
        try:
            out.append((manifest["run_id"], read_verified_run(store, manifest["run_id"], manifest)))
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


def runs_from_dirs(run_dirs: Iterable[Path], verify: bool = False) -> list[tuple[str, RunResult]]:
    """Local run folders (or folders of them); a folder pulled from a store keeps its store run
    id. With `verify`, each as its verified copy (bench.store.verify: the figures derived again
    from its records, as a store's table derives them); StoreError (one line) for a run that
    does not verify."""
    from bench.safepath import inside
    from bench.store.verify import verify_run

    out = []
    for run_dir in find_run_dirs(run_dirs):
        run_dir = Path(run_dir)
        run = read_summary(run_dir)
        manifest = run_dir / "MANIFEST.json"
        run_id = json.loads(manifest.read_text())["run_id"] if manifest.is_file() else run.run_id

        def read(rel: str, run_dir: Path = run_dir) -> bytes | None:
            path = inside(run_dir, rel)
            return path.read_bytes() if path.is_file() else None

        out.append((run_id, verify_run(run, read, str(run_dir)) if verify else run))
    return out


def build(store_url: str, out_dir: Path | None = None, scenario_names: list[str] | None = None,
          storage_options: dict | None = None, full: bool = False, **inject) -> CostModelBuild:
    """Compact the store's point files (bench.store.compact) into the table; write it locally
    (if out_dir) and back to the store. `full` rereads every point file instead of reusing
    the compacted partitions; `inject`: `scenarios_for`, `model_info` (tests)."""
    from bench.store import Store
    from bench.store.compact import compact
    from bench.store.points import put_inside

    store = Store(store_url, storage_options)
    done = compact(store, full=full)
    points, done.tables = done.valid_points(), []  # the partitions' rows are not needed twice in memory
    table = table_frame(points, scenario_names, **inject)
    result = CostModelBuild(table, skipped=done.skipped, point_files=done.point_files, backfilled=done.backfilled,
                            ignored=done.ignored, verified=done.verified, partitions=done.partitions)
    if out_dir is not None:
        result.local_paths = write_table(table, out_dir)
    for ext, blob in table_bytes(table).items():
        rel = f"{COSTMODEL_DIR}/{TABLE_NAME}.{ext}"
        put_inside(store, rel, blob)
        result.store_paths.append(f"{store.where.rstrip('/')}/{rel}")
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


def _hidden_below(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def _first(d: dict, *keys: str) -> Any:
    return next((d[k] for k in keys if d.get(k) is not None), None)


def _div(value: Any, n: int) -> float | None:
    return None if value is None else float(value) / n
