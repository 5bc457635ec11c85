"""A published manifest is untrusted input: check it before any of its files is fetched.

Its `content_sha256` is recomputed from its file list, so a file list edited after
publication (a planted `../../` entry, a swapped checksum) is refused.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from bench.errors import StoreError
from bench.safepath import UnsafePath, check_rel_path, check_run_id
from bench.store.bounded import MAX_FILE_BYTES

_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


def content_digest(entries: list[dict]) -> str:
    """The sha256 that names a run's content: over each file's path and sha256, in order."""
    return hashlib.sha256("".join(f"{e['path']}\0{e['sha256']}\n" for e in entries).encode()).hexdigest()


def check_manifest(manifest: Any, run_id: str, where: str) -> dict:
    """A published manifest, checked before any of its files is read.

    Its run id must be the folder it was found in, every file entry a safe relative path
    with an integer size (at most MAX_FILE_BYTES) and a sha256, no path twice, and its `content_sha256` must be
    the digest of its file list (and end the run id). StoreError otherwise, one line."""
    def bad(why: str) -> StoreError:
        return StoreError(f"{where}: run {str(run_id)[:80]}: refused manifest: {why}")

    try:
        check_run_id(run_id)
    except UnsafePath as e:
        raise bad(str(e)) from None
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
    return manifest
