"""Reading a store into local folders: `bench pull` (verified run folders) and `bench ls`.

A pulled run is downloaded into a hidden temporary folder under DEST, each file checked
against its manifest (size before the read, sha256 after: Store.read_file), its run.json
parsed and its request files checked against it, and only then renamed into DEST/<run_id>/.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

from bench.errors import StoreError
from bench.results import SUMMARY_FILE
from bench.safepath import UnsafePath, inside
from bench.store.integrity import check_run_requests
from bench.store.manifest import MANIFEST_FILE, Manifest, check_manifest, manifest_bytes
from bench.store.store import Store, _parse_untrusted


def pull_runs(store: Store, dest: Path, hardware: str | None = None, model: str | None = None,
              skipped: list[str] | None = None) -> list[Path]:
    """Copy published runs (optionally one hardware / model) into DEST/<run_id>/; verified.

    A run already complete in DEST (its MANIFEST.json matches) is not fetched again. A run
    that fails a check (manifest, path, size, checksum, run.json) is never placed in DEST:
    with `skipped` given, its one-line reason is appended there and the pull goes on;
    without, the first one raises StoreError.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for manifest in store.manifests(refused=skipped):
        if hardware and manifest.hardware != hardware:
            continue
        if model and not manifest.has_model(model):
            continue
        try:
            out.append(_pull_one(store, manifest, dest))
        except (StoreError, UnsafePath) as e:
            if skipped is None:
                raise StoreError(str(e)) from None
            skipped.append(str(e))
    return out


def pull(url: str, dest: Path, hardware: str | None = None, model: str | None = None,
         storage_options: dict | None = None, skipped: list[str] | None = None) -> list[Path]:
    """Fetch published runs into a local cache folder; returns the local run folders.
    See `pull_runs` for `skipped`."""
    return pull_runs(Store(url, storage_options), dest, hardware=hardware, model=model, skipped=skipped)


def ls(url: str, storage_options: dict | None = None, refused: list[str] | None = None) -> list[dict]:
    """One row per published run: run_id, date, model, hardware, n_gpus, engine, ...
    (see Store.manifests for `refused`)."""
    rows = []
    for m in Store(url, storage_options).manifests(refused=refused):
        rows.append({
            "run_id": m.run_id, "date": (m.created_utc or "")[:10], "model": m.model or ",".join(m.models or []),
            "hardware": m.hardware, "n_gpus": m.n_gpus, "engine": m.engine, "harness_version": m.harness_version,
            "status": m.status, "n_points": m.n_points, "n_valid_points": m.n_valid_points,
        })
    return rows


def default_cache_dir() -> Path:
    """Where `bench pull` puts runs: $BENCH_CACHE_DIR/runs or ~/.cache/bench/runs."""
    base = os.environ.get("BENCH_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "bench")
    return Path(base) / "runs"


def _pull_one(store: Store, manifest: Manifest, dest: Path) -> Path:
    run_id = manifest.run_id
    check_manifest(manifest, run_id, store.where)
    target = inside(dest, run_id)
    local = target / MANIFEST_FILE
    if local.is_file() and local.read_bytes() == manifest_bytes(manifest):
        return target
    partial = dest / f".{run_id}.partial-{uuid.uuid4().hex[:8]}"
    try:
        partial.mkdir()
        for entry in manifest.files:
            path = inside(partial, entry.path)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(store.read_file(run_id, entry.path, manifest))
        _check_pulled_summary(partial, store.where, run_id)
        (partial / MANIFEST_FILE).write_bytes(manifest_bytes(manifest))
        if target.exists():
            shutil.rmtree(target)
        try:
            os.rename(partial, target)
        except OSError:
            if not (target / MANIFEST_FILE).is_file():  # not a concurrent pull that won
                raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return target


def _check_pulled_summary(run_dir: Path, url: str, run_id: str) -> None:
    """A pulled run.json must parse, and each point's requests file must be one the
    manifest brought (its path was checked by the result schema), read as Parquet and
    agree with run.json."""
    result = _parse_untrusted((run_dir / SUMMARY_FILE).read_bytes(), f"{url}: run {run_id}: {SUMMARY_FILE}")
    for point in result.points:
        if point.requests_file and not inside(run_dir, point.requests_file).is_file():
            raise StoreError(f"{url}: run {run_id}: point {point.point_id}: {point.requests_file} is not in the run")
    check_run_requests(result, lambda rel: inside(run_dir, rel).read_bytes(), f"{url}: run {run_id}")
