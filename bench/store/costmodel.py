"""The shared cost-model table: every valid, ok load point of every published run, one row.

$/Mtok is recomputed for each cost scenario from the stored metrics and energy with
`bench.measure.cost`, so changing a price never needs a rerun. The table is deterministic: the
same runs give the same bytes (rows and columns in a fixed order, no timestamps, fixed
float formatting in CSV and fixed Parquet writer options). Columns: docs/costmodel.md.

One row shape serves every path: `bench.store.rows.point_rows` makes a run's rows (pure, no
I/O), which either become a table directly (`build_table`, local runs) or are stored as the
run's point files at upload (bench.store.points) and read back (bench.store.compact,
bench.store.query); `table_frame` turns either into the table, with catalog figures and
$/Mtok added at that moment. This module is the table builder: the I/O (reading runs,
compacting, writing the table); the columns are bench.store.schema's.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.errors import BenchError, ConfigError, ResultError, StoreError
from bench.results import RunResult, read_summary
from bench.store.rows import ModelInfoFn, catalog_model_info, point_rows
from bench.store.schema import (  # noqa: F401 - the table's columns, read from here by reports and tests
    BASE_COLUMNS,
    BOOL_COLUMNS,
    CATALOG_COLUMNS,
    COSTMODEL_DIR,
    CSV_FLOAT_FORMAT,
    INT_COLUMNS,
    PARQUET_OPTIONS,
    POINT_EXTRA_COLUMNS,
    SCENARIO_FIELDS,
    SORT_KEYS,
    STRING_COLUMNS,
    TABLE_NAME,
    cast_columns,
)

_TOKENS = {"output": "output_tok_s", "input": "input_tok_s", "total": "total_tok_s", "goodput": "goodput_output_tok_s"}

ScenariosFn = Callable[[str | None], dict[str, Any]]  # hardware id (None: unknown) -> {scenario name: bench.measure.cost.Scenario}


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


def build_table(
    runs: Iterable[tuple[str, RunResult]],
    scenario_names: list[str] | None = None,
    scenarios_for: ScenariosFn | None = None,
    model_info: ModelInfoFn | None = None,
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
                scenarios_for: ScenariosFn | None = None, model_info: ModelInfoFn | None = None,
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


def _ordered(frame: pd.DataFrame, extra: Sequence[str] = ()) -> pd.DataFrame:
    """Base columns, then `extra`, then the scenario columns sorted by scenario; rows by SORT_KEYS."""
    scenario_columns = sorted((c for c in frame.columns if "__" in c),
                              key=lambda c: (c.split("__", 1)[-1], SCENARIO_FIELDS.index(c.split("__", 1)[0])))
    frame = cast_columns(frame.reindex(columns=BASE_COLUMNS + list(extra) + scenario_columns))
    return frame.sort_values(SORT_KEYS, kind="mergesort", na_position="last").reset_index(drop=True)


def _with_catalog(frame: pd.DataFrame, model_info: ModelInfoFn) -> pd.DataFrame:
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


def write_table(table: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Write OUT_DIR/costmodel.parquet and .csv (atomically); returns both paths."""
    return _write_blobs(table_bytes(table), out_dir)


def _write_blobs(data: dict[str, bytes], out_dir: Path) -> list[Path]:
    """`table_bytes` output as OUT_DIR/costmodel.<ext>, each written atomically."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
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
    from bench.store.store import Store
    from bench.store.verify import read_verified_run

    store = Store(url, storage_options)
    out = []
    for manifest in store.manifests(refused=skipped):
        try:
            out.append((manifest.run_id, read_verified_run(store, manifest.run_id, manifest)))
        except (ResultError, StoreError) as e:
            if skipped is None:
                raise
            skipped.append(str(e) if isinstance(e, StoreError) else f"{manifest.run_id}: {e}")
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
    from bench.store.compact import compact
    from bench.store.points import put_inside
    from bench.store.store import Store

    store = Store(store_url, storage_options)
    done = compact(store, full=full)
    points, done.tables = done.valid_points(), []  # the partitions' rows are not needed twice in memory
    table = table_frame(points, scenario_names, **inject)
    result = CostModelBuild(table, skipped=done.skipped, point_files=done.point_files, backfilled=done.backfilled,
                            ignored=done.ignored, verified=done.verified, partitions=done.partitions)
    data = table_bytes(table)  # once: the local copy and the store's are the same bytes
    if out_dir is not None:
        result.local_paths = _write_blobs(data, out_dir)
    for ext, blob in data.items():
        rel = f"{COSTMODEL_DIR}/{TABLE_NAME}.{ext}"
        put_inside(store, rel, blob)
        result.store_paths.append(f"{store.where.rstrip('/')}/{rel}")
    return result


def catalog_scenarios(hardware_id: str | None) -> dict[str, Any]:
    """bench.measure.cost scenarios of a catalog hardware entry; none for hardware the catalog lacks."""
    from bench.catalog import get_hardware
    from bench.measure.cost import scenarios_for

    if hardware_id is None:
        return {}
    try:
        hardware = get_hardware(hardware_id)
    except (BenchError, TypeError):
        return {}
    return scenarios_for(hardware)


def _hidden_below(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)
