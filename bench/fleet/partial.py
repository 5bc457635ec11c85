"""A shard's run folder mirrored into the store after every finished point, and restored
from it on the next attempt (a preempted spot machine loses no finished point).

The mirror lives under URL/fleet/<fleet>/shards/<shard>/partial/<hardware>-<plan digest>/:
a run resumes only on the hardware and plan it started with (a shard that may run on
either of two types keeps one mirror per type). It is never published: only the finished
run's upload (bench.store) is. A sync reads run.json once, then copies the files that
snapshot names (each point's requests file is complete before run.json names it), the
engine logs and the run's other files, and writes run.json last, so the mirror never names
a file it does not hold. Text files are redacted as an upload redacts them. Unchanged files
are not sent again.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from bench.errors import ResultError, StoreError
from bench.redact import redact_text
from bench.safepath import UnsafePath, check_rel_path, check_run_id, inside
from bench.store.bounded import MAX_FILE_BYTES, MAX_SUMMARY_BYTES, load_json

SUMMARY = "run.json"
_TEXT = {".log", ".txt", ".json", ".yaml", ".yml", ".csv", ".md"}


class PartialRun:
    """The mirror of one shard's run folder at `prefix` (a path inside the store)."""

    def __init__(self, store, prefix: str):
        self.store = store
        self.prefix = prefix.rstrip("/")
        self.sent: dict[str, str] = {}  # rel -> sha256 of what the mirror holds

    def sync(self, run_dir: Path) -> int:
        """Bring the mirror up to the run folder's last written state; returns files sent."""
        from bench.results import parse_summary

        run_dir = Path(run_dir)
        try:
            summary = (run_dir / SUMMARY).read_bytes()
        except FileNotFoundError:
            return 0
        try:
            run = parse_summary(json.loads(summary), str(run_dir / SUMMARY))
        except (ValueError, ResultError):
            return 0  # never: run.json is replaced atomically; a torn read is not mirrored
        named = {p.requests_file for p in run.points if p.requests_file}
        sent = 0
        for path in sorted(run_dir.rglob("*")):
            rel = path.relative_to(run_dir).as_posix()
            if not path.is_file() or path.is_symlink() or rel == SUMMARY or any(p.startswith(".") for p in rel.split("/")):
                continue
            if rel.startswith("requests/") and rel not in named:
                continue  # a point still being written, or the solo reference of a packed run
            sent += self._put(rel, path.read_bytes(), text=path.suffix in _TEXT)
        return sent + self._put(SUMMARY, summary, text=False)

    def put_text(self, rel: str, text: str) -> int:
        """One more file of the mirror's shard (its log), redacted."""
        return self._put(rel, text.encode(), text=True)

    def _put(self, rel: str, data: bytes, text: bool) -> int:
        if text:
            data = redact_text(data.decode("utf-8", errors="replace")).encode()
        digest = hashlib.sha256(data).hexdigest()
        if self.sent.get(rel) == digest:
            return 0
        self.store.put_bytes(f"{self.prefix}/{rel}", data)
        self.sent[rel] = digest
        return 1

    def restore(self, dest: Path) -> Path | None:
        """The mirrored run folder, copied into DEST/<its run folder name>; None when the
        store holds no usable mirror (nothing there, or a run.json that does not read)."""
        from bench.results import parse_summary

        fs = self.store.fs
        root = self.store.path(self.prefix)
        fs.invalidate_cache()
        try:
            found = fs.find(root)
        except FileNotFoundError:
            return None
        files = {p[len(root):].lstrip("/"): p for p in found}
        if SUMMARY not in files:
            return None
        data = self._get(files[SUMMARY])
        where = f"{self.store.where}: {self.prefix}/{SUMMARY}"
        try:  # a mirror that does not read is started over, never trusted
            name = check_run_id(parse_summary(load_json(data, where, MAX_SUMMARY_BYTES), where).run_id)
        except (StoreError, ResultError, UnsafePath):
            return None
        target = Path(dest) / name
        target.mkdir(parents=True, exist_ok=False)
        for rel, remote in sorted(files.items()):
            try:
                check_rel_path(rel)
            except UnsafePath:
                continue  # a planted name never becomes a path
            data = self._get(remote)
            local = inside(target, rel)
            local.parent.mkdir(parents=True, exist_ok=True)
            local.write_bytes(data)
            self.sent[rel] = hashlib.sha256(data).hexdigest()
        return target

    def _get(self, remote: str) -> bytes:
        """One file of the mirror: bounded, and locally a regular file only (bench.store.bounded)."""
        return self.store.read_bytes(remote, MAX_FILE_BYTES, what=f"read {self.prefix}")
