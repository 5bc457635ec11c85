"""`bench costmodel build`'s compaction: every partition's point files into one file.

    URL/costmodel/compacted/hardware=<id>/model=<key>/compacted.parquet

holds the rows of the partition's point files of published runs, sorted, with the run ids
it covers (and those it left out: point files of runs with no MANIFEST.json) in its footer
metadata. Queries read it plus the partition's point files it does not name, so a compacted
partition is one file to open however many runs it holds, and an upload since the last
build is seen at once. A rebuild reuses the rows of runs already covered (point files
never change) and reads only the new files; `full` reads every file again. The same point
files give the same bytes either way.

Published runs without a point file (a store written by an older bench, or an upload
interrupted before its point files) are backfilled first: read and checked as before
(`Store.read_checked_run`), their point files written; a run that fails is skipped with
its one-line reason, and tried again by the next build.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bench.errors import ResultError, StoreError
from bench.store.bounded import POINTS_LIMITS, read_parquet
from bench.store.points import (
    compacted_metadata,
    compacted_rel,
    conform,
    list_partitions,
    list_point_files,
    point_schema,
    points_bytes,
    publish_point_files,
    run_list,
    run_point_files,
    sort_points,
)
from bench.store.query import read_point_files, to_pandas


@dataclass
class Compaction:
    tables: list = field(default_factory=list)  # one Arrow table per partition: every row compacted
    skipped: list[str] = field(default_factory=list)
    point_files: int = 0
    backfilled: int = 0
    ignored: int = 0
    partitions: int = 0

    def valid_points(self):
        """The valid rows of every partition, as pandas (the table's input)."""
        import pyarrow as pa
        import pyarrow.compute as pc

        table = pa.concat_tables(self.tables) if self.tables else point_schema().empty_table()
        return to_pandas(table.filter(pc.fill_null(table["valid"], False)))


def compact(store, full: bool = False) -> Compaction:
    """Backfill, then compact every partition of the store's point files (see the module)."""
    done = Compaction()
    # point files first: an upload writes its manifest before them, so every point file seen
    # here belongs to a run the listing of manifests below sees as published
    listing = {part: list_point_files(store, part) for part in list_partitions(store)}
    published = set(store.published_run_ids())
    have = {run_id for files in listing.values() for run_id in files}
    for run_id in sorted(published - have):
        files = _backfill(store, run_id, done.skipped)
        for rel in files:
            part, _ = rel.split("/", 2)[2].rsplit("/", 1)
            listing.setdefault(part, {})[run_id] = store.path(rel)
        done.backfilled += bool(files)
    for part, files in sorted(listing.items()):
        covered = sorted(r for r in files if r in published)
        done.ignored += len(files) - len(covered)
        done.point_files += len(files)
        table = _compact_partition(store, part, files, covered, full, done.skipped)
        done.tables.append(table)
    done.partitions = len(listing)
    return done


def _backfill(store, run_id: str, skipped: list[str]) -> dict[str, bytes]:
    try:
        result = store.read_checked_run(run_id)
    except (ResultError, StoreError) as e:
        skipped.append(str(e) if isinstance(e, StoreError) else f"{run_id}: {e}")
        return {}
    files = run_point_files(run_id, result)
    publish_point_files(store, files)
    return files


def _compact_partition(store, part: str, files: dict[str, str], covered: list[str], full: bool,
                       skipped: list[str]):
    """One partition's compacted rows; its file rewritten when they (or its run lists) changed."""
    import pyarrow as pa
    import pyarrow.compute as pc

    rel = compacted_rel(part)
    old_blob = store.get_bytes(rel)
    parts, reuse, old_runs = [], set(), None
    if old_blob is not None and not full:
        try:
            old = read_parquet(old_blob, rel, POINTS_LIMITS)  # bounded; page checksums verified
            meta = old.schema.metadata or {}
            old_runs = run_list(meta, "covered"), run_list(meta, "excluded")
            reuse = old_runs[0] & set(covered)
            keep = pc.is_in(old["run_id"], value_set=pa.array(sorted(reuse), pa.string()))
            parts.append(conform(old).filter(pc.fill_null(keep, False)))
        except Exception:  # noqa: BLE001 - an unreadable compacted file is rebuilt from the point files
            parts, reuse, old_runs = [], set(), None
    if old_runs == (set(covered), set(files) - set(covered)):  # nothing new: the file stays as it is
        return parts[0]
    refused: dict[str, str] = {}
    parts.append(read_point_files(store, [files[r] for r in covered if r not in reuse], refused=refused))
    skipped += refused.values()
    in_file = [r for r in covered if files[r] not in refused]
    table = sort_points(pa.concat_tables(parts))
    blob = points_bytes(table, compacted_metadata(in_file, [r for r in files if r not in in_file]))
    if blob != old_blob:
        store.put_bytes(rel, blob)
    return table
