"""Each run's load points as immutable Parquet files, partitioned by hardware and model.

    URL/costmodel/points/hardware=<id>/model=<key>/<run_id>.parquet      one run's ok points (upload)
    URL/costmodel/compacted/hardware=<id>/model=<key>/compacted.parquet  one partition's runs (build)

A point file holds the rows `bench.store.rows.point_rows` makes for the run's ok points
of that hardware and model (valid and invalid; no catalog figures, no cost: both are added
when the table is made), in POINT_COLUMNS order with fixed types, sorted, written with the
table's Parquet options and no timestamps: the same run gives the same bytes anywhere
(bench.store.rows derives them, no I/O; this module lists, reads and writes them). Names
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

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from bench.errors import StoreError
from bench.safepath import RUN_ID_RE, UnsafePath, check_rel_path
from bench.store.bounded import POINTS_LIMITS, load_json, read_parquet
from bench.store.manifest import manifest_point_files  # noqa: F401 - read from here by the readers
from bench.store.rows import (  # noqa: F401 - a run's point files, derived (importable here as before)
    manifest_entries,
    partition_of,
    partition_value,
    point_file_rel,
    points_bytes,
    rows_to_arrow,
    run_point_files,
    run_point_tables,
)
from bench.store.schema import (  # noqa: F401
    COMPACTED_DIR,
    COMPACTED_FILE,
    POINT_COLUMNS,
    POINTS_DIR,
    conform,
    point_schema,
    sort_points,
)

if TYPE_CHECKING:
    import pandas as pd


@dataclass
class PointsRead:
    """What a read of point files gave: its rows, the files opened, and files left out (one line each)."""

    table: pd.DataFrame
    files: list[str] = field(default_factory=list)
    partitions: int = 0
    skipped: list[str] = field(default_factory=list)
    excluded: list[str] = field(default_factory=list)  # with --trust: "run_id: reason" of runs left out


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
    return {run_id: f"{folder}/{name}" for name in _names(store, folder) if (run_id := _point_file_run_id(name))}


def _point_file_run_id(name: str) -> str | None:
    """The run id a point file's NAME (`<run id>.parquet`) gives; None for any other name."""
    run_id = name.removesuffix(".parquet")
    return run_id if run_id != name and RUN_ID_RE.match(run_id) else None


def point_listing(store, hardware: list | None = None, model: list | None = None) -> dict[str, dict[str, str]]:
    """{partition: {run_id: path}}: `list_point_files` of each of `list_partitions`. On a
    remote store asked for every partition, one recursive listing finds them all (a listing
    a folder costs a round trip each: 1 + hardware + partitions of them)."""
    if hardware or model or "file" in protocols(store.fs):  # locally each listing is checked (no link followed)
        return {part: list_point_files(store, part) for part in list_partitions(store, hardware=hardware, model=model)}
    base = store.path(POINTS_DIR)
    out: dict[str, dict[str, str]] = {}
    for rel in store.list_below(base):
        parts = rel.split("/")
        if (len(parts) < 3 or not parts[0].startswith("hardware=") or not parts[1].startswith("model=")
                or _safe(parts[:2]) != parts[:2]):
            continue
        files = out.setdefault(f"{parts[0]}/{parts[1]}", {})
        if len(parts) == 3 and (run_id := _point_file_run_id(parts[2])):
            files[run_id] = f"{base}/{rel}"
    return dict(sorted(out.items()))


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
