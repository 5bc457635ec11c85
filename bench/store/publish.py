"""What an upload publishes: a run folder validated, redacted, hashed and named by its content.

The run id is derived from the content (the redacted run.json and the hashes of every
file), so two writers of different runs never share a prefix and two writers of the same
run write the same bytes. The manifest lists every file with its size and sha256, and the
run's point files (bench.store.points, made from its verified figures) with their sha256.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.errors import StoreError
from bench.redact import redact, redact_text
from bench.results import SUMMARY_FILE, RunResult, parse_summary, read_summary
from bench.safepath import UnsafePath, check_rel_path, inside
from bench.store.bounded import POINTS_LIMITS, read_parquet
from bench.store.manifest import (  # noqa: F401 - MANIFEST_VERSION, manifest_bytes: importable here as before
    MANIFEST_FILE,
    MANIFEST_VERSION,
    content_digest,
    manifest_bytes,
    sha256_hex,
)
from bench.store.points import publish_point_files
from bench.store.rows import manifest_entries, run_models
from bench.store.verify import verified_point_files

REPORT_DIR = "report"  # `bench report` writes here inside a run folder; derived, never uploaded
_TEXT_SUFFIXES = {".log", ".txt", ".yaml", ".yml", ".json", ".md", ".csv"}


@dataclass
class PreparedRun:
    """A validated, redacted run ready to upload: its id, file bytes and manifest."""

    source: Path
    run_id: str
    files: dict[str, bytes]
    manifest: dict[str, Any]
    point_files: dict[str, bytes] = field(default_factory=dict)  # store-relative path -> bytes


def prepare(run_dir: Path) -> PreparedRun:
    """Validate a run folder, redact secrets, hash every file and derive the run id.

    Raises ResultError for a malformed result or unknown schema and StoreError for a run
    still running, or one whose request files are missing, do not read as Parquet or
    disagree with run.json (bench.store.integrity), or whose figures are not the ones its
    records give or are implausible (bench.store.verify), or with another Parquet file that
    does not read (page checksums verified).
    """
    run_dir = Path(run_dir)
    result = read_summary(run_dir)
    if result.status == "running":
        from bench.run.lock import run_state

        if run_state(run_dir, result.status) == "running":
            raise StoreError(f"{run_dir}: run is still running (status 'running'); upload it when it ends")
        raise StoreError(f"{run_dir}: run is stale (its process is gone, status still 'running'); "
                         f"finish it with --resume {run_dir} first")
    for point in result.points:
        if not point.requests_file:
            continue
        try:
            found = inside(run_dir, point.requests_file).is_file()
        except UnsafePath as e:
            raise StoreError(f"{run_dir}: point {point.point_id}: refused requests_file: {e}") from None
        if not found:
            raise StoreError(f"{run_dir}: point {point.point_id}: missing {point.requests_file}")
    clean = redact(result.model_dump(mode="json"))
    parse_summary(clean, str(run_dir / SUMMARY_FILE))
    files = {SUMMARY_FILE: (json.dumps(clean, indent=2, sort_keys=True) + "\n").encode()}
    for path in sorted(run_dir.rglob("*")):
        rel = path.relative_to(run_dir).as_posix()
        if _hidden(rel) or rel.split("/", 1)[0] == REPORT_DIR:
            continue
        if path.is_symlink():
            raise StoreError(f"{run_dir}: {rel} is a symbolic link; a run folder to upload holds plain files only")
        if not path.is_file() or rel in (SUMMARY_FILE, MANIFEST_FILE):
            continue
        try:
            check_rel_path(rel)
        except UnsafePath as e:
            raise StoreError(f"{run_dir}: cannot upload {rel!r}: {e}") from None
        data = path.read_bytes()
        if path.suffix in _TEXT_SUFFIXES:
            data = redact_text(data.decode("utf-8", errors="replace")).encode()
        files[rel] = data
    entries = [{"path": rel, "size": len(d), "sha256": sha256_hex(d)} for rel, d in sorted(files.items())]
    digest = content_digest(entries)
    run = RunResult.model_validate(clean)
    requests = {p.requests_file for p in run.points}
    for rel, data in files.items():  # power, server metrics: each must read, page checksums verified
        if rel.endswith(".parquet") and rel not in requests:
            read_parquet(data, f"{run_dir}: {rel}", POINTS_LIMITS)
    models = run_models(run)
    run_id = "-".join(
        [re.sub(r"\D", "", run.created_utc[:10]) or "nodate", _slug(models[0] if len(models) == 1 else "multi"),
         _slug(run.config.hardware_id), digest[:12]]
    )
    manifest = {
        "manifest_version": MANIFEST_VERSION,
        "run_id": run_id,
        "content_sha256": digest,
        "source_run_id": run.run_id,
        "schema_version": run.schema_version,
        "created_utc": run.created_utc,
        "status": run.status,
        "harness_version": run.harness.version,
        "model": models[0] if len(models) == 1 else None,
        "models": models,
        "hardware": run.config.hardware_id,
        "n_gpus": run.config.n_gpus,
        "engine": run.config.engine,
        "n_points": len(run.points),
        "n_valid_points": sum(1 for p in run.points if p.valid and p.status == "ok"),
        "files": entries,
    }
    point_files = verified_point_files(run_id, run, files.get, str(run_dir))
    manifest["point_files"] = manifest_entries(point_files)
    return PreparedRun(run_dir, run_id, files, manifest, point_files)


def publish_run_points(store, run: PreparedRun) -> tuple[int, str | None]:
    """The upload hook: the point files of a just-published PreparedRun (those `prepare` made
    from its verified copy and listed in its manifest). Returns (files, None), or (0, reason)
    for a run that does not verify: such a run (only a caller that skipped `prepare`'s checks
    can publish one) gets no point file, and `bench costmodel build` skips it with its reason."""
    files = run.point_files
    if not files:
        where = f"{store.where}: run {run.run_id}"
        result = parse_summary(json.loads(run.files[SUMMARY_FILE]), f"{where}/{SUMMARY_FILE}")
        try:
            files = verified_point_files(run.run_id, result, run.files.get, where)
        except StoreError as e:
            return 0, f"no point file: {e}"
    publish_point_files(store, files)
    return len(files), None


def _slug(value: Any) -> str:
    text = re.sub(r"[^a-z0-9.]+", "-", str(value or "unknown").lower()).strip("-.")
    return text[:40] or "unknown"


def _hidden(rel: str) -> bool:
    return any(part.startswith(".") for part in rel.split("/"))
