"""A published manifest is untrusted input: check it before any of its files is fetched.

Its `content_sha256` is recomputed from its file list, so a file list edited after
publication (a planted `../../` entry, a swapped checksum) is refused. A manifest that
passes is a typed, frozen `Manifest`: readers (pull, ls, verify, the table's build and
queries, signatures) read its fields, never the JSON; it keeps the bytes it was read from
(`manifest_bytes`), so a comparison or a signature covers exactly what was published.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, PrivateAttr, ValidationError

from bench.errors import StoreError
from bench.safepath import UnsafePath, check_rel_path, check_run_id
from bench.store.bounded import MAX_FILE_BYTES
from bench.store.schema import POINTS_DIR

MANIFEST_FILE = "MANIFEST.json"
MANIFEST_VERSION = 1
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def manifest_bytes(manifest: dict[str, Any] | Manifest) -> bytes:
    """A manifest's canonical bytes (sorted keys): what is written, compared and signed; a
    `Manifest` gives those of the JSON it was read from, unknown keys included."""
    raw = manifest.raw if isinstance(manifest, Manifest) else manifest
    return (json.dumps(raw, indent=2, sort_keys=True) + "\n").encode()


class FileEntry(BaseModel):
    """One file of a published run: its path inside the run folder, size (bytes) and sha256 (hex)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    path: str
    size: int
    sha256: str


class Manifest(BaseModel):
    """A published run's MANIFEST.json, checked (`check_manifest` makes one). The file list,
    run id and content hash are verified; the descriptive fields (model, hardware, ...) are
    what the uploader wrote, typed but not verified (the table derives its own from run.json)."""

    model_config = ConfigDict(frozen=True, extra="ignore")
    run_id: str
    content_sha256: str
    files: list[FileEntry]
    manifest_version: int | None = None
    source_run_id: str | None = None
    schema_version: int | None = None
    created_utc: str | None = None
    status: str | None = None
    harness_version: str | None = None
    model: str | None = None  # the one model measured; None for a run of several (`models`)
    models: list[str] | None = None
    hardware: str | None = None
    n_gpus: int | None = None
    engine: str | None = None
    n_points: int | None = None
    n_valid_points: int | None = None
    _raw: dict[str, Any] = PrivateAttr(default_factory=dict)

    @property
    def raw(self) -> dict[str, Any]:
        """The JSON object it was read from (for `manifest_bytes`)."""
        return self._raw

    @property
    def point_files(self) -> dict[str, str]:
        """{store-relative path: sha256} of the point files it lists (`manifest_point_files`)."""
        return manifest_point_files(self._raw)

    def entry(self, rel: str) -> FileEntry | None:
        """The file entry of REL; None when the run has no such file."""
        return next((e for e in self.files if e.path == rel), None)

    def has_model(self, key: str) -> bool:
        return key in self.models if self.models else key == self.model


def content_digest(entries: list[dict[str, Any]]) -> str:
    """The sha256 that names a run's content: over each file's path and sha256, in order."""
    return hashlib.sha256("".join(f"{e['path']}\0{e['sha256']}\n" for e in entries).encode()).hexdigest()


def check_manifest(manifest: Any, run_id: str, where: str) -> Manifest:
    """A published manifest (parsed JSON, or a Manifest already checked), checked before any of
    its files is read; the typed Manifest.

    Its run id must be the folder it was found in, every file entry a safe relative path
    with an integer size (at most MAX_FILE_BYTES) and a sha256, no path twice, and its `content_sha256` must be
    the digest of its file list (and end the run id). StoreError otherwise, one line."""
    def bad(why: str) -> StoreError:
        return StoreError(f"{where}: run {str(run_id)[:80]}: refused manifest: {why}")

    try:
        check_run_id(run_id)
    except UnsafePath as e:
        raise bad(str(e)) from None
    if isinstance(manifest, Manifest):  # checked when it was made: only its folder is new
        if manifest.run_id != run_id:
            raise bad(f"names run {manifest.run_id[:80]!r}, not the folder it is in")
        return manifest
    if not isinstance(manifest, dict):
        raise bad("not a JSON object")
    if manifest.get("run_id") != run_id:
        raise bad(f"names run {str(manifest.get('run_id'))[:80]!r}, not the folder it is in")
    files = manifest.get("files")
    if not isinstance(files, list) or not files:
        raise bad("no file list")
    seen = set()
    for entry in files:
        if not isinstance(entry, dict) or set(entry) != {"path", "size", "sha256"}:
            raise bad("a file entry is not {path, size, sha256}")
        try:
            check_rel_path(entry["path"])
        except UnsafePath as e:
            raise bad(str(e)) from None
        if entry["path"] in seen:
            raise bad(f"{entry['path']} listed twice")
        seen.add(entry["path"])
        size = entry["size"]
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise bad(f"{entry['path']}: size is not a non-negative integer")
        if size > MAX_FILE_BYTES:
            raise bad(f"{entry['path']}: size {size} is more than the limit of {MAX_FILE_BYTES} bytes")
        if not isinstance(entry["sha256"], str) or not _SHA256_RE.match(entry["sha256"]):
            raise bad(f"{entry['path']}: sha256 is not 64 hex digits")
    if "run.json" not in seen:
        raise bad("no run.json in its file list")
    digest = content_digest(files)
    if manifest.get("content_sha256") != digest:
        raise bad("its file list does not match its content_sha256")
    if not run_id.endswith(digest[:12]):
        raise bad("run id does not end with its content hash")
    try:
        typed = Manifest.model_validate(manifest)
    except ValidationError as e:  # a descriptive field of another type than bench writes
        first = e.errors()[0]
        field = ".".join(str(part) for part in first["loc"])
        raise bad(f"{field[:60]}: {first['msg'][:80]}") from None
    typed._raw = manifest
    return typed


def manifest_point_files(manifest: dict[str, Any]) -> dict[str, str]:
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
        if isinstance(rel, str) and isinstance(digest, str) and _SHA256_RE.match(digest) \
                and rel.startswith(POINTS_DIR + "/") and rel.endswith(f"/{run_id}.parquet") and rel.count("/") == 4:
            try:
                out[check_rel_path(rel)] = digest
            except UnsafePath:
                continue
    return out
