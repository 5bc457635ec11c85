"""`bench costmodel build`'s compaction: every partition's verified rows into one file.

    URL/costmodel/compacted/hardware=<id>/model=<key>/compacted.parquet

holds the rows of the partition's published runs that passed verification, sorted, with
the run ids it covers (and those it left out, with the reason given in the build's output)
in its footer metadata. Queries read it plus the partition's point files it does not name,
so a compacted partition is one file to open however many runs it holds, and an upload
since the last build is seen at once.

A point file is never taken on its own word. A run enters a compacted file only after the
build has read it (manifest, checksums), checked its request files and derived its figures
again (bench.store.verify); its rows are the ones made from that verified copy, and its
stored point file must hold exactly those rows. A point file with no published run (a
ghost), one whose rows are not the run's (tampered), and every point file of a run that
fails a check are left out, each run with one line saying why; every other run still
builds. A rebuild reuses the rows of runs already covered (point files never change, and
their runs were verified when they entered) and verifies only the new ones, plus those
left out before (a run mended since is taken); `full` verifies every run again. The same
runs give the same bytes either way.

Published runs without a point file (a store written by an older bench, or an upload
interrupted before its point files) are backfilled: verified, and their point files
written from the verified copy.

Nothing is written outside the store: every path written is the store's root joined with
a partition name that `check_rel_path` accepted, and a local store's compacted file whose
folder resolves elsewhere (a symbolic link planted in the store) is refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bench.errors import ResultError, StoreError
from bench.store.bounded import POINTS_LIMITS, read_parquet
from bench.store.points import (
    compacted_metadata,
    compacted_rel,
    point_listing,
    publish_point_files,
    put_inside,
    run_list,
)
from bench.store.rows import point_file_rel, points_bytes, run_point_tables
from bench.store.schema import conform, point_schema, sort_points, to_pandas


@dataclass
class Compaction:
    tables: list = field(default_factory=list)  # one Arrow table per partition: every row compacted
    skipped: list[str] = field(default_factory=list)  # one line per run left out
    point_files: int = 0
    backfilled: int = 0
    ignored: int = 0  # point files of runs that are not published (left out)
    verified: int = 0  # runs read and derived again by this build
    partitions: int = 0

    def valid_points(self):
        """The valid rows of every partition, as pandas (the table's input)."""
        import pyarrow as pa
        import pyarrow.compute as pc

        table = pa.concat_tables(self.tables) if self.tables else point_schema().empty_table()
        return to_pandas(table.filter(pc.fill_null(table["valid"], False)))


class _Verdicts:
    """Each run verified at most once per build: its point-file tables, or why it is left out."""

    def __init__(self, store, done: Compaction):
        self.store, self.done = store, done
        self._seen: dict[str, dict | None] = {}

    def tables(self, run_id: str) -> dict | None:
        """{store-relative path: rows} of the run's verified point files; None: left out (its line added)."""
        if run_id not in self._seen:
            from bench.store.verify import read_verified_run

            self.done.verified += 1
            try:
                self._seen[run_id] = run_point_tables(run_id, read_verified_run(self.store, run_id))
            except (ResultError, StoreError) as e:
                self._seen[run_id] = None
                self.done.skipped.append(str(e) if isinstance(e, StoreError) else f"{run_id}: {e}")
            except Exception as e:  # noqa: BLE001 - untrusted content reaching code that trusts its types: one run's problem
                self._seen[run_id] = None
                self.done.skipped.append(f"{self.store.where}: run {run_id}: does not verify "
                                         f"({type(e).__name__}: {' '.join(str(e).split())[:120]})")
        return self._seen[run_id]

    def seen(self, run_id: str) -> dict | None:
        """What `tables` gave (None: left out, or not verified in this build)."""
        return self._seen.get(run_id)

    def refuse(self, run_id: str, why: str) -> None:
        """Leave a run out of every partition, with one line."""
        if self._seen.get(run_id) is not None:
            self._seen[run_id] = None
            self.done.skipped.append(f"{self.store.where}: run {run_id}: {why}")


def compact(store, full: bool = False) -> Compaction:
    """Backfill, then compact every partition of the store's point files (see the module)."""
    done = Compaction()
    verdicts = _Verdicts(store, done)
    # point files first: an upload writes its manifest before them, so every point file seen
    # here belongs to a run the listing of manifests below sees as published
    listing = point_listing(store)
    published = set(store.published_run_ids())
    have = {run_id for files in listing.values() for run_id in files}
    for run_id in sorted(published - have):
        tables = verdicts.tables(run_id)
        if tables is None:
            continue
        blobs = {rel: points_bytes(rows) for rel, rows in tables.items()}
        try:
            publish_point_files(store, blobs)
        except StoreError as e:
            verdicts.refuse(run_id, f"its point files cannot be written ({str(e).removeprefix(store.where + ': ')})")
            continue
        for rel in blobs:
            listing.setdefault(rel.split("/", 2)[2].rsplit("/", 1)[0], {})[run_id] = store.path(rel)
        done.backfilled += 1
    for part, files in sorted(listing.items()):
        ghosts = sorted(r for r in files if r not in published)
        done.ignored += len(ghosts)
        done.skipped += [f"{store.where}: run {r}: point file {part}/{r}.parquet has no published run (left out)"
                         for r in ghosts]
        done.point_files += len(files)
    olds = {part: _old_rows(store, part, files, published, full) for part, files in listing.items()}
    new = sorted({r for part, files in listing.items() for r in files if r in published and r not in olds[part][1]})
    for run_id in new:  # every point file of a run checked before any partition takes its rows
        _check_point_files(store, run_id, [part for part, files in listing.items() if run_id in files], verdicts)
    for part, files in sorted(listing.items()):
        done.tables.append(_compact_partition(store, part, files, olds.pop(part), verdicts))
    done.partitions = len(listing)
    return done


def _old_rows(store, part: str, files: dict[str, str], published: set[str], full: bool):
    """(rows kept, runs kept, old bytes, old (covered, excluded) run lists) of a partition's
    compacted file: the rows of the runs it covers that are still published with their point
    file; nothing kept with `full`."""
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        blob = store.get_bytes(compacted_rel(part))
    except StoreError:  # refused (a planted link, too large): rebuilt from the runs; its write says why
        return None, set(), None, None
    if blob is None or full:
        return None, set(), blob, None
    try:
        old = read_parquet(blob, compacted_rel(part), POINTS_LIMITS)  # bounded; page checksums verified
        meta = old.schema.metadata or {}
        reuse = run_list(meta, "covered") & set(files) & published
        keep = pc.is_in(old["run_id"], value_set=pa.array(sorted(reuse), pa.string()))
        return conform(old).filter(pc.fill_null(keep, False)), reuse, blob, (run_list(meta, "covered"),
                                                                              run_list(meta, "excluded"))
    except Exception:  # noqa: BLE001 - an unreadable compacted file is rebuilt from the runs
        return None, set(), blob, None


def _check_point_files(store, run_id: str, parts: list[str], verdicts: _Verdicts) -> None:
    """The run's stored point files must be exactly the ones its verified copy gives: the same
    partitions, each holding the derived rows. Otherwise the run is left out (one line)."""

    tables = verdicts.tables(run_id)
    if tables is None:
        return
    for part in parts:
        rel = point_file_rel(part, run_id)
        if rel not in tables:
            return verdicts.refuse(run_id, f"point file {part}/{run_id}.parquet is not one of the run's (left out)")
        stored = store.get_bytes(rel)
        try:
            same = stored is not None and (stored == points_bytes(tables[rel])
                                           or conform(read_parquet(stored, rel, POINTS_LIMITS)).equals(tables[rel]))
        except Exception:  # noqa: BLE001 - a point file that does not read is not the run's
            same = False
        if not same:
            return verdicts.refuse(run_id, f"point file {part}/{run_id}.parquet does not hold the rows the run gives "
                                           "(tampered?); left out until that file is removed")
    return None


def _compact_partition(store, part: str, files: dict[str, str], old, verdicts: _Verdicts):
    """One partition's compacted rows; its file rewritten when they (or its run lists) changed."""
    import pyarrow as pa

    kept, reuse, old_blob, old_lists = old
    parts, covered = ([kept] if kept is not None else []), sorted(reuse)
    for run_id in sorted(r for r in files if r not in reuse):
        tables = verdicts.seen(run_id)
        if tables is not None:
            parts.append(tables[point_file_rel(part, run_id)])
            covered.append(run_id)
    excluded = [r for r in files if r not in covered]
    if old_lists == (set(covered), set(excluded)):  # nothing new: the file stays as it is
        return kept
    table = sort_points(pa.concat_tables(parts)) if parts else point_schema().empty_table()
    blob = points_bytes(table, compacted_metadata(covered, excluded))
    if blob != old_blob:
        try:
            put_inside(store, compacted_rel(part), blob)
        except StoreError as e:  # the rows still reach the table; only this cache is not written
            verdicts.done.skipped.append(f"{e}; partition {part} not compacted")
    return table
