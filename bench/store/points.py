"""Each run's load points as immutable Parquet files, partitioned by hardware and model.

    URL/costmodel/points/hardware=<id>/model=<key>/<run_id>.parquet      one run's ok points (upload)
    URL/costmodel/compacted/hardware=<id>/model=<key>/compacted.parquet  one partition's runs (build)

A point file holds the rows `bench.store.costmodel.point_rows` makes for the run's ok points
of that hardware and model (valid and invalid; no catalog figures, no cost: both are added
when the table is made), in POINT_COLUMNS order with fixed types, sorted, written with the
table's Parquet options and no timestamps: the same run gives the same bytes anywhere. Names
follow the run id, so writers of different runs never touch the same file, and a file once
written is never replaced (`publish_point_files`). A run with no ok point gets an empty file,
so that its points are known to be none.

Partition values come from run.json, untrusted: a value that is not a plain name
(`[A-Za-z0-9][A-Za-z0-9._-]*`, at most 100 characters) is stored as `_<16 hex of its sha256>`;
the rows keep the true value, and readers filter on it as well as on the folder.

A point file is bound to its run: the rows are made from the run's verified copy
(bench.store.verify: every figure derived again from the records), and the upload lists
each file's sha256 under `point_files` in the run's MANIFEST.json. Readers never take a
point file on its own: the build derives the rows again from the run, and a query reads a
point file only when its run's manifest lists its hash (`manifest_point_files`).
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from typing import Any

from bench.errors import StoreError
from bench.results import SUMMARY_FILE, RunResult, parse_summary
from bench.safepath import RUN_ID_RE, UnsafePath, check_rel_path, check_run_id
from bench.store.bounded import POINTS_LIMITS, load_json, read_parquet
from bench.store.costmodel import (
    BASE_COLUMNS,
    BOOL_COLUMNS,
    CATALOG_COLUMNS,
    INT_COLUMNS,
    PARQUET_OPTIONS,
    POINT_EXTRA_COLUMNS,
    SORT_KEYS,
    STRING_COLUMNS,
    cast_columns,
    point_rows,
)

POINTS_DIR = "costmodel/points"
COMPACTED_DIR = "costmodel/compacted"
COMPACTED_FILE = "compacted.parquet"
POINT_COLUMNS = [c for c in BASE_COLUMNS if c not in CATALOG_COLUMNS] + POINT_EXTRA_COLUMNS
_PLAIN_VALUE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def point_schema():
    """The Arrow schema of a point file: POINT_COLUMNS with their one type each."""
    import pyarrow as pa

    def kind(c: str):
        if c in STRING_COLUMNS:
            return pa.string()
        if c in BOOL_COLUMNS:
            return pa.bool_()
        return pa.int64() if c in INT_COLUMNS else pa.float64()

    return pa.schema([(c, kind(c)) for c in POINT_COLUMNS])


def partition_value(value: Any) -> str:
    """A partition folder's value: the value itself when it is a plain name, else `_<hash>`."""
    text = "" if value is None else str(value)
    return text if _PLAIN_VALUE.match(text) else "_" + hashlib.sha256(text.encode()).hexdigest()[:16]


def partition_of(hardware: Any, model: Any) -> str:
    """`hardware=<v>/model=<v>`, safe as a relative path whatever the values."""
    return check_rel_path(f"hardware={partition_value(hardware)}/model={partition_value(model)}")


def run_point_files(run_id: str, result: RunResult) -> dict[str, bytes]:
    """{store-relative path: bytes} of a run's point files, one per (hardware, model) it has
    ok points of; deterministic. RESULT: the run's verified copy (bench.store.verify)."""
    return {rel: points_bytes(rows) for rel, rows in run_point_tables(run_id, result).items()}


def run_point_tables(run_id: str, result: RunResult) -> dict:
    """{store-relative path: Arrow table} of `run_point_files`, rows as the files hold them (sorted)."""
    import pyarrow as pa

    from bench.store.publish import run_models

    check_run_id(run_id)
    table = rows_to_arrow(point_rows(run_id, result, model_info=lambda _: {}, include_invalid=True))
    if table.num_rows == 0:  # no ok point: an empty file under the run's own hardware and model
        parts = {partition_of(result.config.hardware_id, (run_models(result) or [None])[0]): table}
    else:
        of_row = [partition_of(hw, m) for hw, m in zip(table["hardware"].to_pylist(), table["model"].to_pylist())]
        parts = {part: table.filter(pa.array([p == part for p in of_row])) for part in sorted(set(of_row))}
    return {point_file_rel(part, run_id): sort_points(conform(rows)) for part, rows in parts.items()}


def point_file_rel(partition: str, run_id: str) -> str:
    return f"{POINTS_DIR}/{partition}/{run_id}.parquet"


def manifest_entries(files: dict[str, bytes]) -> list[dict]:
    """The manifest's `point_files` list: each point file's path and sha256, sorted."""
    from bench.store.publish import sha256_hex

    return [{"path": rel, "sha256": sha256_hex(blob)} for rel, blob in sorted(files.items())]


def manifest_point_files(manifest: dict) -> dict[str, str]:
    """{store-relative path: sha256} of the point files a published manifest lists; only well-formed
    entries under the run's own name count (a manifest from an older bench lists none)."""
    entries = manifest.get("point_files")
    run_id = manifest.get("run_id")
    out: dict[str, str] = {}
    if not isinstance(entries, list) or not isinstance(run_id, str):
        return out
    for entry in entries:
        if not isinstance(entry, dict) or set(entry) != {"path", "sha256"}:
            continue
        rel, digest = entry["path"], entry["sha256"]
        if isinstance(rel, str) and isinstance(digest, str) and _SHA256.match(digest) \
                and rel.startswith(POINTS_DIR + "/") and rel.endswith(f"/{run_id}.parquet") and rel.count("/") == 4:
            try:
                out[check_rel_path(rel)] = digest
            except UnsafePath:
                continue
    return out


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


def conform(table):
    """Any Arrow table of point rows -> the point schema: columns in order and cast, a missing
    one (an older writer) all null, an unknown one (a newer writer) left out."""
    import pyarrow as pa

    schema = point_schema()
    if table.schema.equals(schema):
        return table
    arrays = [table[f.name].cast(f.type) if f.name in table.column_names else pa.nulls(len(table), f.type)
              for f in schema]
    return pa.Table.from_arrays(arrays, schema=schema)


def sort_points(table):
    import pyarrow.compute as pc

    return table.take(pc.sort_indices(table, sort_keys=[(k, "ascending", "at_end") for k in SORT_KEYS]))


def points_bytes(table, metadata: dict[str, str] | None = None) -> bytes:
    """Parquet bytes of point rows: sorted, the table's writer options, only `metadata` added."""
    import pyarrow.parquet as pq

    table = sort_points(conform(table)).replace_schema_metadata(metadata or None)
    buf = io.BytesIO()
    pq.write_table(table, buf, **PARQUET_OPTIONS)
    return buf.getvalue()


def publish_point_files(store, files: dict[str, bytes]) -> int:
    """Write each point file that is not in the store yet; returns how many were written.

    One already there with the same bytes, or the same rows (another pyarrow wrote it), is
    left as it is; one with different rows is refused: a point file is never replaced."""
    written = 0
    for rel, blob in sorted(files.items()):
        existing = store.get_bytes(rel)
        if existing is None:
            put_inside(store, rel, blob)
            written += 1
        elif existing != blob and not _same_rows(existing, blob):
            raise StoreError(f"{store.where}: {rel} already exists with different content; refusing to overwrite")
    return written


def publish_run_points(store, run) -> tuple[int, str | None]:
    """The upload hook: the point files of a just-published PreparedRun (those `prepare` made
    from its verified copy and listed in its manifest). Returns (files, None), or (0, reason)
    for a run that does not verify: such a run (only a caller that skipped `prepare`'s checks
    can publish one) gets no point file, and `bench costmodel build` skips it with its reason."""
    from bench.store.verify import verified_point_files

    files = getattr(run, "point_files", None)
    if not files:
        where = f"{store.where}: run {run.run_id}"
        result = parse_summary(json.loads(run.files[SUMMARY_FILE]), f"{where}/{SUMMARY_FILE}")
        try:
            files = verified_point_files(run.run_id, result, run.files.get, where)
        except StoreError as e:
            return 0, f"no point file: {e}"
    publish_point_files(store, files)
    return len(files), None


def put_inside(store, rel: str, blob: bytes) -> None:
    """`store.put_bytes`, refused (StoreError) when REL would land outside a local store: a
    folder on its way that is a symbolic link planted in the store to point elsewhere."""
    import os

    if "file" in protocols(store.fs):
        root = os.path.realpath(store.root)
        if os.path.commonpath([root, os.path.realpath(store.path(rel))]) != root:
            raise StoreError(f"{store.where}: {rel} resolves outside the store (a symbolic link); not written")
    store.put_bytes(rel, blob)


def list_partitions(store, base: str = POINTS_DIR, hardware: list | None = None,
                    model: list | None = None) -> list[str]:
    """`hardware=<v>/model=<v>` partitions under BASE: the asked values' folders (nothing
    listed), else whatever one listing per level finds (names that are not safe parts left out)."""
    hw_dirs = ([f"hardware={partition_value(h)}" for h in dict.fromkeys(hardware)] if hardware
               else _safe(_names(store, store.path(base), "hardware=")))
    out = []
    for hw_dir in hw_dirs:
        model_dirs = ([f"model={partition_value(m)}" for m in dict.fromkeys(model)] if model
                      else _safe(_names(store, store.path(base, hw_dir), "model=")))
        out += [f"{hw_dir}/{m}" for m in model_dirs]
    return sorted(out)


def list_point_files(store, partition: str) -> dict[str, str]:
    """{run_id: path} of the point files in one partition (one listing); other names are ignored."""
    folder = store.path(POINTS_DIR, partition)
    return {name[:-8]: f"{folder}/{name}" for name in _names(store, folder)
            if name.endswith(".parquet") and RUN_ID_RE.match(name[:-8])}


def compacted_rel(partition: str) -> str:
    return f"{COMPACTED_DIR}/{partition}/{COMPACTED_FILE}"


def compacted_metadata(covered: list[str], excluded: list[str]) -> dict[str, str]:
    return {"bench.covered_runs": json.dumps(sorted(covered)), "bench.excluded_runs": json.dumps(sorted(excluded))}


def protocols(fs) -> tuple[str, ...]:
    """The protocol names of an fsspec filesystem (`file` for a local one)."""
    return (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)


def _names(store, path: str, prefix: str = "") -> list[str]:
    """Entry names in one folder that start with PREFIX, sorted (unchecked: callers check them)."""
    return [n for n in store.list_names(path) if n.startswith(prefix)]


def _safe(names: list[str]) -> list[str]:
    out = []
    for name in names:
        try:
            out.append(check_rel_path(name))
        except UnsafePath:
            continue
    return out


def run_list(meta: dict, which: str) -> set[str]:
    """The `covered` or `excluded` run ids in a compacted file's footer metadata; StoreError
    when they are not a list of names (the file is then read as unreadable)."""
    where = f"compacted file: {which} runs"
    # untrusted footer: bounded (bench.store.bounded), a nested list is refused, not recursed into
    runs = load_json(meta.get(f"bench.{which}_runs".encode(), b"[]"), where, POINTS_LIMITS.max_footer_bytes,
                     max_depth=1)
    if not isinstance(runs, list) or not all(isinstance(r, str) for r in runs):
        raise StoreError(f"{where}: not a list of run ids")
    return set(runs)


def _same_rows(a: bytes, b: bytes) -> bool:
    try:
        return conform(read_parquet(a, "point file", POINTS_LIMITS)).equals(
            conform(read_parquet(b, "point file", POINTS_LIMITS)))
    except Exception:  # noqa: BLE001 - unreadable bytes already there are different content
        return False
