"""Reads that show only runs signed by trusted keys (`--trust KEYS`).

    bench costmodel query --store URL --trust keys/ ...
    bench costmodel build --store URL --trust alice.pub --out DIR
    bench compare --store URL --model KEY --trust keys/

For each run with point files in the partitions asked, its signature by one of the trusted
keys is checked against its published manifest (bench.store.signing.verify_run); then each
of its point files is read, its size checked against the signed size before the read and its
sha256 after, and its rows must all carry that run id. The compacted files are never read
here: they are not signed. A run that fails any check is excluded, named with its reason.
So a trusted view costs one signature file and one point file a run, where an untrusted
query reads one compacted file a partition.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from bench.errors import StoreError
from bench.store.bounded import MAX_FILE_BYTES, POINTS_LIMITS, read_parquet
from bench.store.costmodel import CostModelBuild, table_frame, write_table
from bench.store.points import PointsRead, point_listing
from bench.store.schema import POINTS_DIR, conform, point_schema, to_pandas
from bench.store.signing import Signed, TrustedKeys, verify_run
from bench.store.store import Store


@dataclass
class TrustedRows:
    """The rows of the trusted runs (Arrow, point schema), the runs shown and those excluded."""

    table: object
    runs: list[str] = field(default_factory=list)
    excluded: list[str] = field(default_factory=list)  # "run_id: reason"
    files: list[str] = field(default_factory=list)
    partitions: int = 0


def trusted_rows(store, trusted: TrustedKeys, hardware: list | None = None, model: list | None = None) -> TrustedRows:
    """Every point row of the runs signed by a trusted key in the partitions of HARDWARE and
    MODEL (all when None); other runs excluded with their reason. StoreError when runs were
    found and none is trusted."""
    import pyarrow as pa

    by_run: dict[str, list[str]] = {}
    out = TrustedRows(None)
    for part, files in point_listing(store, hardware=hardware, model=model).items():
        out.partitions += bool(files)
        for run_id in files:
            by_run.setdefault(run_id, []).append(f"{POINTS_DIR}/{part}/{run_id}.parquet")
    tables = []
    for run_id, rels in sorted(by_run.items()):
        signed = verify_run(store, run_id, trusted)
        try:
            if not isinstance(signed, Signed):
                raise StoreError(signed)
            tables += [_signed_rows(store, signed, rel) for rel in rels]
        except StoreError as e:
            out.excluded.append(f"{run_id}: {e}")
            continue
        out.runs.append(run_id)
        out.files += [store.path(rel) for rel in rels]
    if by_run and not out.runs:
        names = ", ".join(sorted(trusted.keys))
        raise StoreError(f"{store.where}: none of the {len(by_run)} run(s) read is signed by a trusted key "
                         f"({names}); excluded: {'; '.join(out.excluded[:3])}{' ...' if len(out.excluded) > 3 else ''}")
    out.table = pa.concat_tables(tables) if tables else point_schema().empty_table()
    return out


def _signed_rows(store, signed: Signed, rel: str):
    """One point file of a signed run, read only if it is the one signed."""
    import pyarrow.compute as pc

    entry = signed.point_files.get(rel)
    if entry is None:
        raise StoreError(f"{rel}: not among the point files its signature names")
    data = store.read_bytes(store.path(rel), MAX_FILE_BYTES, expect_size=entry["size"], what=rel,
                            expected_by="its signature says")
    if hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise StoreError(f"{rel}: does not match its signed sha256")
    table = conform(read_parquet(data, rel, POINTS_LIMITS))
    if not pc.all(pc.fill_null(pc.equal(table["run_id"], signed.run_id), False)).as_py():
        raise StoreError(f"{rel}: holds rows of another run")
    return table


def filter_rows(table, filters: dict[str, list]):
    """Rows of TABLE whose every filtered column has one of its values (a null matches none),
    as DuckDB's `IN` does in bench.store.query."""
    import pyarrow as pa
    import pyarrow.compute as pc

    for key, values in sorted(filters.items()):
        column = table[key]
        keep = pc.is_in(column, value_set=pa.array(values, type=column.type))
        table = table.filter(pc.fill_null(keep, False))
    return table


def trusted_read(store, filters: dict[str, list], include_invalid: bool, trusted: TrustedKeys):
    """`bench.store.query.read_points` for trusted runs only: a PointsRead whose `excluded`
    names the runs left out."""
    if not include_invalid and "valid" not in filters:
        filters = {**filters, "valid": [True]}
    rows = trusted_rows(store, trusted, hardware=filters.get("hardware"), model=filters.get("model"))
    return PointsRead(to_pandas(filter_rows(rows.table, filters)), files=rows.files, partitions=rows.partitions,
                      excluded=rows.excluded)


def trusted_build(url: str, trusted: TrustedKeys, out_dir=None, scenario_names: list[str] | None = None,
                  storage_options: dict | None = None, **inject):
    """`bench costmodel build --trust`: the table of the trusted runs' valid points, written to
    OUT_DIR when given; the store is only read (its shared table, of every run, stays as the
    last build wrote it). Returns (CostModelBuild, excluded)."""
    store = Store(url, storage_options)
    read = trusted_read(store, {}, False, trusted)
    table = table_frame(read.table, scenario_names, **inject)
    done = CostModelBuild(table, point_files=len(read.files), partitions=read.partitions)
    if out_dir is not None:
        done.local_paths = write_table(table, out_dir)
    return done, read.excluded
