"""Queries of a store's load points, read from its point files with partition pruning.

    bench costmodel query --store URL --where hardware=h100-sxm,model=llama-3.1-8b [--sql ...]
    bench compare --store URL --model KEY [--hardware ID ...]

`--where` filters are `column=value` (comma separated or repeated; one column given twice
means either value). `hardware` and `model` pick the partition folders, so nothing else is
listed or opened; every filter (those two included: a folder name may be a hash of an odd
value) is also pushed into DuckDB's scan of the files. In each partition the compacted
file is read (the build's output: only runs it verified), plus the point files it neither
covers nor left out (uploads since the last build), each only when its run's manifest lists
its sha256 (bench.store.points.manifest_point_files): a point file with no published run,
or one that is not the file its run's upload made, is never read, and says so in one line.
The rows of runs the compacted file names whose point file is gone are left out. Catalog figures and $/Mtok
are added to what was read, at query time, exactly as the build does
(bench.store.costmodel.table_frame); `--sql` then runs against a view named `points`.

The DuckDB reader of point and compacted files (`read_point_files`) is the build's too.
"""

from __future__ import annotations

import weakref

from bench.errors import ConfigError, StoreError, one_line
from bench.redact import redact_text_of
from bench.store.bounded import POINTS_LIMITS, read_parquet
from bench.store.costmodel import table_frame
from bench.store.manifest import sha256_hex
from bench.store.points import (
    PointsRead,
    compacted_rel,
    list_partitions,
    point_listing,
    protocols,
    run_list,
)
from bench.store.rows import point_file_rel
from bench.store.schema import (
    BOOL_COLUMNS,
    INT_COLUMNS,
    POINT_COLUMNS,
    STRING_COLUMNS,
    conform,
    point_schema,
    to_pandas,
)
from bench.store.store import Store
from bench.store.trust import trusted_read

READ_BATCH = 1000  # point files per DuckDB read: bounds memory on a full build


def parse_where(items) -> dict[str, list]:
    """`["hardware=h100-sxm,model=x", "n_gpus=1"]` -> {column: [typed value, ...]}; ConfigError
    for a term that is not column=value or names a column point files do not have."""
    filters: dict[str, list] = {}
    for item in items or ():
        for term in str(item).split(","):
            if not term.strip():
                continue
            key, sep, value = (part.strip() for part in term.partition("="))
            if not sep or not key:
                raise ConfigError(f"--where {term.strip()!r}: expected column=value")
            if key not in POINT_COLUMNS:
                raise ConfigError(f"--where: no column {key!r} in the point files (use --sql for computed "
                                  f"columns; columns: {', '.join(POINT_COLUMNS[:12])}, ...)")
            filters.setdefault(key, []).append(_typed(key, value))
    return filters


def read_points(store, filters: dict[str, list], include_invalid: bool = False, trust=None) -> PointsRead:
    """Point rows matching FILTERS (valid ones only unless `include_invalid` or a `valid`
    filter), as pandas in the point-file columns; see the module for what is opened. With
    `trust` (bench.store.signing.TrustedKeys), only runs signed by those keys (bench.store.trust)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if trust is not None:
        return trusted_read(store, filters, include_invalid, trust)
    if not include_invalid and "valid" not in filters:
        filters = {**filters, "valid": [True]}
    where, params = _where_sql(filters)
    files_read: list[str] = []
    partitions = 0
    allowed: set[str] = set()
    loose: list[tuple[str, str]] = []  # (partition, run id) of point files no compacted file names
    for part, files in point_listing(store, hardware=filters.get("hardware"), model=filters.get("model")).items():
        if not files:
            continue
        partitions += 1
        runs = compacted_runs(store, part)
        if runs is not None:
            files_read.append(store.path(compacted_rel(part)))
            allowed |= runs[0] & set(files)
        skip = (runs[0] | runs[1]) if runs is not None else set()
        loose += [(part, run_id) for run_id in sorted(files) if run_id not in skip]
    refused: dict[str, str] = {}
    table = read_point_files(store, list(files_read), where, params, refused=refused)
    if files_read and len(refused) == len(files_read):  # nothing read: a store problem, not a few bad files
        raise StoreError(next(iter(refused.values())))
    bound, paths = read_bound_point_files(store, loose, refused)
    files_read += paths
    allowed |= set(bound["run_id"].to_pylist())
    table = pa.concat_tables([table, _filtered(store, bound, where, params)])
    table = table.filter(pc.fill_null(pc.is_in(table["run_id"], value_set=pa.array(sorted(allowed), pa.string())), False))
    return PointsRead(to_pandas(table), files=files_read, partitions=partitions, skipped=list(refused.values()))


def read_bound_point_files(store, loose: list[tuple[str, str]], refused: dict[str, str]):
    """The point files (partition, run id) whose run's published manifest lists their sha256, as one
    Arrow table, and the paths read; any other is left out, its one line in `refused[path]`.
    Each file's bytes are hashed and parsed once (never read again by path after the check)."""
    import pyarrow as pa

    tables, paths, manifests = [], [], {}
    for part, run_id in loose:
        rel = point_file_rel(part, run_id)
        path = store.path(rel)
        try:
            if run_id not in manifests:
                manifests[run_id] = store.read_manifest(run_id)
            manifest = manifests[run_id]
            if manifest is None:
                raise StoreError("no published run (a point file on its own is never read)")
            listed = manifest.point_files.get(rel)
            if listed is None:
                raise StoreError("its run's manifest does not list it (run bench costmodel build)")
            blob = store.get_bytes(rel)
            if blob is None or sha256_hex(blob) != listed:
                raise StoreError("not the file its run's manifest lists (tampered?)")
            # one small file, bounded: no dataset, no thread pool (pyarrow's beside DuckDB aborted
            # the interpreter at exit, "terminate called without an active exception"); 2.6x faster
            tables.append(conform(read_parquet(blob, rel, POINTS_LIMITS, what="point rows")))
            paths.append(path)
        except StoreError as e:
            why = str(e).removeprefix(f"{store.where}: ")
            refused[path] = f"{store.where}: run {run_id}: point file {part}/{run_id}.parquet: {why}; not read"
    return (pa.concat_tables(tables) if tables else point_schema().empty_table()), paths


def _filtered(store, table, where: str, params: dict):
    """TABLE (point rows in memory) filtered by the same WHERE as the files' scan, in DuckDB."""
    if not where or table.num_rows == 0:
        return table
    cursor = _database(store).cursor()
    try:
        cursor.register("bound_points", table)
        return conform(cursor.sql(f"SELECT * FROM bound_points{where}", params=params).to_arrow_table())
    finally:
        cursor.close()


def query(url: str, where=(), sql: str | None = None, scenario_names: list[str] | None = None,
          storage_options: dict | None = None, trust=None, **inject) -> PointsRead:
    """The table's rows matching `where` ($/Mtok computed now), or the result of `sql` run
    against them as the view `points` (the table's columns plus POINT_EXTRA_COLUMNS)."""
    read = read_points(Store(url, storage_options), parse_where(where), trust=trust)
    read.table = table_frame(read.table, scenario_names, extra_columns=sql is not None, **inject)
    if sql is not None:
        read.table = run_sql(read.table, sql)
    return read


def compare_points(url: str, model: str, hardware: list[str] | None = None, scenario_names: list[str] | None = None,
                   storage_options: dict | None = None, trust=None, **inject) -> PointsRead:
    """Every ok point (valid and invalid) of MODEL, on HARDWARE when given, in the table's
    columns plus POINT_EXTRA_COLUMNS ($/Mtok of SCENARIO_NAMES, default all): what
    `bench compare --store` needs, no run.json read."""
    store = Store(url, storage_options)
    filters = {"model": [model], **({"hardware": list(hardware)} if hardware else {})}
    read = read_points(store, filters, include_invalid=True, trust=trust)
    if not read.table["valid"].fillna(False).any():
        known = sorted({p.split("/model=", 1)[1] for p in list_partitions(store)})
        on = f" on {', '.join(hardware)}" if hardware else ""
        raise ConfigError(f"no valid load points for model '{model}'{on} in {store.where} "
                          f"(models with data: {', '.join(known) or 'none'})")
    read.table = table_frame(read.table, scenario_names, extra_columns=True, **inject)
    return read


def compacted_runs(store, partition: str) -> tuple[set[str], set[str]] | None:
    """(covered, excluded) run ids of a partition's compacted file (its footer only); None
    when there is none or it does not read. Covered runs' rows are in it; excluded ones were
    left out on purpose (no manifest, or a point file that does not read)."""
    path = store.path(compacted_rel(partition))
    try:
        meta = store.parquet_footer(path, POINTS_LIMITS).metadata or {}  # the footer alone, bounded
        return run_list(meta, "covered"), run_list(meta, "excluded")
    except Exception:  # noqa: BLE001 - missing or unreadable: the point files are read instead (the next build mends it)
        return None


def read_point_files(store, paths: list[str], where: str = "", params: dict | None = None,
                     refused: dict[str, str] | None = None):
    """Point (or compacted) files -> one Arrow table of the point schema, read by DuckDB with
    `where` (SQL on the columns, `$name` parameters) pushed down into the scan.

    Local stores are read by DuckDB itself; any other fsspec store through the store's own
    filesystem (`register_filesystem`). A batch that fails is read again file by file; a
    file that does not read is left out, its one-line reason put in `refused[path]`
    (raised when `refused` is None)."""
    import pyarrow as pa

    tables = []
    for i in range(0, len(paths), READ_BATCH):
        batch = paths[i:i + READ_BATCH]
        try:
            tables.append(_duckdb_read(store, batch, where, params or {}))
        except StoreError:
            for path in batch:
                try:
                    tables.append(_duckdb_read(store, [path], where, params or {}))
                except StoreError as e:
                    if refused is None:
                        raise
                    refused[path] = str(e)
    return pa.concat_tables(tables) if tables else point_schema().empty_table()


def _duckdb_read(store, paths: list[str], where: str, params: dict):
    """One DuckDB scan of PATHS. First by column name against the first file's schema (twice
    as fast as `union_by_name`): a later file missing a column fails it, and a first file
    missing one shows in the result; either way the scan is made again with `union_by_name`.
    (Columns a later file has beyond the first's are dropped by both: `conform` drops them.)"""
    import duckdb

    cursor = _database(store).cursor()  # a cursor per read: safe beside other threads' reads
    remote = "file" not in protocols(store.fs)
    folders = _listed(store, paths) if remote else []
    if remote:
        paths = [f"{protocols(store.fs)[0]}://{p}" for p in paths]
    try:
        for union in ("false", "true"):
            sql = f"SELECT * FROM read_parquet($files, union_by_name = {union}, hive_partitioning = false){where}"
            try:
                table = cursor.sql(sql, params={"files": paths, **params}).to_arrow_table()
            except duckdb.Error:
                if union == "true":
                    raise
                continue
            if union == "true" or set(POINT_COLUMNS) <= set(table.column_names):
                # combine_chunks: copies out of DuckDB's vectors, which otherwise stay held (~75 kB a file)
                return conform(table.combine_chunks())
    except (duckdb.Error, ValueError, TypeError) as e:  # ValueError/TypeError: pyarrow casts of odd columns
        first = one_line(redact_text_of(str(e), store.url))
        name = paths[0].rsplit("/", 1)[-1] if len(paths) == 1 else f"{len(paths)} point files"
        raise StoreError(f"{store.where}: {name}: does not read as point rows ({type(e).__name__}: {first})") from None
    finally:
        cursor.close()
        for folder in folders:
            store.fs.invalidate_cache(folder)  # the listing served this scan only


def _listed(store, paths: list[str]) -> list[str]:
    """The folders of remote PATHS, each listed once into the filesystem's cache: DuckDB asks
    the filesystem about each file (glob, exists, size: ~11 HEAD requests a file on S3), and
    a cached listing answers them."""
    folders = sorted({p.rsplit("/", 1)[0] for p in paths})
    for folder in folders:
        try:
            store.fs.ls(folder, detail=True, refresh=True)
        except Exception:  # noqa: BLE001, S110 - only a cache: the scan asks again and reports what fails
            pass
    return folders


_DATABASES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _database(store):
    """One in-memory DuckDB per store (opening one costs ~15 ms), the store's filesystem
    registered in it unless it is local (DuckDB reads local files itself)."""
    import duckdb

    con = _DATABASES.get(store)
    if con is None:
        con = duckdb.connect()
        weakref.finalize(store, con.close)  # closed with its store, not left to the garbage collector
        if "file" not in protocols(store.fs):
            con.register_filesystem(store.fs)
        _DATABASES[store] = con
    return con


def run_sql(points, sql: str):
    """SQL (DuckDB) against the frame POINTS as the view `points`; nothing else is reachable
    from it (no files, no extensions)."""
    import duckdb

    con = duckdb.connect(config={"enable_external_access": False})
    try:
        con.register("points", points)
        result = con.sql(sql)
        return result.df() if result is not None else points.iloc[0:0]
    except duckdb.Error as e:
        raise ConfigError(one_line(f"--sql: {e}")) from None
    finally:
        con.close()


def _where_sql(filters: dict[str, list]) -> tuple[str, dict[str, object]]:
    terms: list[str] = []
    params: dict[str, object] = {}
    for key, values in sorted(filters.items()):
        names: list[str] = []
        for value in values:
            names.append(f"$p{len(params)}")
            params[names[-1][1:]] = value
        terms.append(f'"{key}" IN ({", ".join(names)})')  # key is one of POINT_COLUMNS
    return (" WHERE " + " AND ".join(terms) if terms else ""), params


def _typed(key: str, value: str):
    try:
        if key in STRING_COLUMNS:
            return value
        if key in BOOL_COLUMNS:
            return {"true": True, "1": True, "false": False, "0": False}[value.lower()]
        return int(value) if key in INT_COLUMNS else float(value)
    except (KeyError, ValueError):
        raise ConfigError(f"--where {key}={value!r}: not a value of that column") from None
