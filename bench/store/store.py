"""The shared store: published runs under one fsspec URL (local folder, s3://, gs://, hf://...).

    URL/runs/<run_id>/run.json, requests/*.parquet, power.parquet, engine.log, ...
    URL/runs/<run_id>/MANIFEST.json     file list with sizes and sha256; written last
    URL/staging/<run_id>.<nonce>/...    uploads in progress (never read)
    URL/costmodel/points/hardware=<id>/model=<key>/<run_id>.parquet
                                        each run's load points, written at upload (bench.store.points)
    URL/costmodel/costmodel.parquet|csv the shared table (bench.store.costmodel)

A run is visible only once its MANIFEST.json exists, so an interrupted upload is invisible
and can simply be repeated. The run id is derived from the content (the redacted run.json
and the hashes of every file), so two writers of different runs never share a prefix, and
two writers of the same run write the same bytes. Every file is written to staging,
verified by re-reading it, then moved into place (an atomic rename locally, one atomic
object copy on object stores, the staging folder deleted in one batch at the end); the
manifest is moved last. A remote read is one ranged GET (docs/store.md).

Credentials come from each backend's usual environment and config files; nothing here
writes them anywhere. Extra fsspec options: the `storage_options` argument, the JSON object
in `$BENCH_STORE_OPTIONS`, and `$BENCH_S3_ENDPOINT_URL` for S3-compatible servers.
"""

from __future__ import annotations

import io
import json
import os
import stat
import uuid
from dataclasses import dataclass
from pathlib import Path

from bench.errors import BenchError, ResultError, StoreError, StoreUnavailable, one_line
from bench.redact import redact_text, redact_text_of
from bench.results import SUMMARY_FILE, RunResult, parse_summary
from bench.safepath import UnsafePath, check_rel_path, check_run_id
from bench.store import bounded, remote
from bench.store.bounded import (
    MAX_FILE_BYTES,
    MAX_MANIFEST_BYTES,
    MAX_SUMMARY_BYTES,
    load_json,
)
from bench.store.integrity import check_run_requests
from bench.store.manifest import (
    MANIFEST_FILE,
    Manifest,
    check_manifest,
    manifest_bytes,
    sha256_hex,
)
from bench.store.publish import PreparedRun, prepare, publish_run_points

RUNS_DIR = "runs"
STAGING_DIR = "staging"


@dataclass
class Uploaded:
    run_id: str
    source: Path
    status: str  # "published" (new in the store) | "exists" (identical run already there)
    n_files: int
    size_bytes: int
    point_files: int = 0  # its point files (bench.store.points), written now or already there
    note: str | None = None  # why it has none, when it has none
    signed_by: str | None = None  # the key id of the signature written (bench.store.signing)


def storage_options_for(url: str, explicit: dict | None = None) -> dict:
    """fsspec options for a store URL: $BENCH_STORE_OPTIONS, $BENCH_S3_ENDPOINT_URL, then `explicit`."""
    options: dict = {}
    env = os.environ.get("BENCH_STORE_OPTIONS")
    if env:
        try:
            parsed = json.loads(env)
        except json.JSONDecodeError as e:
            raise StoreError(f"$BENCH_STORE_OPTIONS is not a JSON object ({e.msg})") from None
        if not isinstance(parsed, dict):
            raise StoreError("$BENCH_STORE_OPTIONS is not a JSON object")
        options.update(parsed)
    protocol = url.split("://", 1)[0] if "://" in url else "file"
    if protocol in ("s3", "s3a") and os.environ.get("BENCH_S3_ENDPOINT_URL"):
        options.setdefault("client_kwargs", {})["endpoint_url"] = os.environ["BENCH_S3_ENDPOINT_URL"]
    if protocol in ("file", "local"):
        options["auto_mkdir"] = True
    options.update(explicit or {})
    return options


class Store:
    """One store URL. Creating it touches nothing remote; each method does its own I/O."""

    def __init__(self, url: str, storage_options: dict | None = None):
        import fsspec

        self.url = url
        self.where = redact_text(url)  # the URL for messages: never a password in it
        try:
            self.fs, root = fsspec.core.url_to_fs(url, **storage_options_for(url, storage_options))
        except (ImportError, ValueError) as e:
            raise StoreError(f"{self.where}: cannot open store ({_one_line(e, url)})") from None
        self.root = root.rstrip("/")

    def path(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    # -- reading ------------------------------------------------------------------------
    def read_manifest(self, run_id: str) -> Manifest | None:
        """The published manifest of a run, checked (store_paths.check_manifest) before it is
        returned; None when the run is not (fully) published."""
        try:
            check_run_id(run_id)
        except UnsafePath as e:
            raise StoreError(f"{self.where}: refused run folder: {e}") from None
        what = f"run {run_id}: {MANIFEST_FILE}"
        try:
            data = self.read_bytes(self.path(RUNS_DIR, run_id, MANIFEST_FILE), MAX_MANIFEST_BYTES, what=what,
                                   missing_ok=True)
        except FileNotFoundError:
            return None
        return check_manifest(load_json(data, f"{self.where}: {what}", MAX_MANIFEST_BYTES), run_id, self.where)

    def published_run_ids(self) -> list[str]:
        """Folder names of runs with a MANIFEST.json, sorted, from one listing (nothing read or checked)."""
        if self._local():  # one stat a run: fsspec's local glob stats every file of every run (9 s for 100k)
            return sorted(n for n in self.list_names(self.path(RUNS_DIR)) if self._local_manifest(n))
        # one recursive listing, paged by the store: a glob of runs/*/MANIFEST.json lists each run's folder
        return sorted(rel.split("/", 1)[0] for rel in self.list_below(self.path(RUNS_DIR))
                      if rel.count("/") == 1 and rel.endswith(f"/{MANIFEST_FILE}"))

    def manifests(self, refused: list[str] | None = None) -> list[Manifest]:
        """Manifests of every published run, sorted by run id.

        A manifest that fails its checks is left out, its one-line reason appended to
        `refused` (raised when `refused` is None): one planted run never hides the others."""
        out = []
        for run_id in self.published_run_ids():
            try:
                manifest = self.read_manifest(run_id)
            except StoreError as e:
                if refused is None:
                    raise
                refused.append(str(e))
                continue
            if manifest is not None:
                out.append(manifest)
        return out

    def read_file(self, run_id: str, rel: str, manifest: Manifest | None = None) -> bytes:
        """One file of a published run, checked against the manifest's sha256."""
        manifest = check_manifest(manifest, run_id, self.where) if manifest else self.read_manifest(run_id)
        if manifest is None:
            raise StoreError(f"{self.where}: no published run {run_id}")
        entry = manifest.entry(rel)
        if entry is None:
            raise StoreError(f"{self.where}: run {run_id} has no file {rel}")
        # the manifest's size bounds the read; the sha256 is checked on what was read
        data = self.read_bytes(self.path(RUNS_DIR, run_id, rel), MAX_FILE_BYTES, expect_size=entry.size,
                               what=f"run {run_id}: {rel}", expected_by="its manifest says")
        if sha256_hex(data) != entry.sha256:
            raise StoreError(f"{self.where}: run {run_id}: {rel} does not match its manifest checksum")
        return data

    def read_run(self, run_id: str, manifest: Manifest | None = None) -> RunResult:
        """A published run.json, parsed; StoreError (one line) for one that is not a bench result."""
        data = self.read_file(run_id, SUMMARY_FILE, manifest)
        return _parse_untrusted(data, f"{self.where}/{RUNS_DIR}/{run_id}/{SUMMARY_FILE}")

    def read_checked_run(self, run_id: str, manifest: Manifest | None = None) -> RunResult:
        """`read_run`, and every point's requests Parquet read and checked against it
        (bench.store.integrity); StoreError when one disagrees."""
        manifest = check_manifest(manifest, run_id, self.where) if manifest else self.read_manifest(run_id)
        run = self.read_run(run_id, manifest)
        check_run_requests(run, lambda rel: self.read_file(run_id, rel, manifest), f"{self.where}: run {run_id}")
        return run

    # -- writing ------------------------------------------------------------------------
    def upload(self, run: PreparedRun, signer=None) -> Uploaded:
        """Publish one prepared run; a no-op when the identical run is already published.
        With `signer` (bench.store.signing.Signer), the published run is then signed by it
        (an unsigned run already there gets the signature)."""
        done = self._upload(run)
        if signer is not None:
            from bench.store.signing import sign_upload

            done.signed_by = sign_upload(self, run, signer)
        return done

    def _upload(self, run: PreparedRun) -> Uploaded:
        size = sum(len(d) for d in run.files.values())
        existing = self._published_manifest(run.run_id)
        if existing is not None:
            return self._with_points(run, self._existing(run, existing, size))
        staging = self.path(STAGING_DIR, f"{run.run_id}.{uuid.uuid4().hex[:12]}")
        try:
            for rel, data in sorted(run.files.items()):
                self._put_verified(f"{staging}/{rel}", data)
            self._put_verified(f"{staging}/{MANIFEST_FILE}", manifest_bytes(run.manifest))
            existing = self._published_manifest(run.run_id)
            if existing is not None:  # another writer published it meanwhile
                return self._with_points(run, self._existing(run, existing, size))
            final = self.path(RUNS_DIR, run.run_id)
            for rel, data in sorted(run.files.items()):
                self._publish_file(f"{staging}/{rel}", f"{final}/{rel}", data)
            self._publish_file(f"{staging}/{MANIFEST_FILE}", f"{final}/{MANIFEST_FILE}", manifest_bytes(run.manifest))
        finally:
            self._remove_quietly(staging)
        return self._with_points(run, Uploaded(run.run_id, run.source, "published", len(run.files), size))

    def list_names(self, path: str) -> list[str]:
        """Entry names in one folder of the store (PATH from `path()`), sorted; none when it
        does not exist. A listing cached by the filesystem is dropped first. In a local store
        only plain files and folders are listed (no symbolic link, FIFO or device: a reader
        never follows one out of the store, nor blocks on one), reached through no link."""
        if self._local():
            # fsspec's local ls costs ~5 us a name, and a partition holds thousands; scandir's
            # entry types come with the listing, no stat a name
            folder = path.rstrip("/")
            parts = [] if folder == self.root else bounded.rel_below(self.root, folder, self.where)
            try:
                fd = bounded.open_dir(self.root, parts, self.where)
            except FileNotFoundError:
                return []
            try:
                with os.scandir(fd) as entries:
                    return sorted(e.name for e in entries
                                  if e.is_file(follow_symlinks=False) or e.is_dir(follow_symlinks=False))
            finally:
                os.close(fd)
        self.fs.invalidate_cache(path)
        try:
            entries = self._io("list", self.fs.ls, path, False, missing_ok=True)
        except FileNotFoundError:
            return []
        return sorted(str(e).rstrip("/").rsplit("/", 1)[-1] for e in entries)

    def list_below(self, path: str) -> list[str]:
        """Paths of every file below one folder of a remote store (PATH from `path()`), relative
        to it, sorted, from one recursive listing (paged by the store, no request a folder)."""
        self.fs.invalidate_cache(path)
        try:
            found = self._io("list", self.fs.find, path, missing_ok=True)
        except FileNotFoundError:
            return []
        prefix = path.rstrip("/") + "/"
        return sorted(p[len(prefix):] for p in map(str, found) if p.startswith(prefix))

    def get_bytes(self, rel: str, max_bytes: int = MAX_FILE_BYTES) -> bytes | None:
        """A store-level file (e.g. a point file), at most `max_bytes` (a larger one is a
        StoreError), its content unchecked; None when there is none."""
        try:
            return self.read_bytes(self.path(rel), max_bytes, what=rel, missing_ok=True)
        except FileNotFoundError:
            return None

    def read_bytes(self, path: str, max_bytes: int, expect_size: int | None = None, what: str = "read",
                   missing_ok: bool = False, expected_by: str = "expected") -> bytes:
        """One file of the store (PATH from `path()`), never more than `max_bytes` of it, and
        exactly `expect_size` bytes when given: its size is checked before it is read. Locally
        only a regular file, reached through no symbolic link, is read (never blocking on a
        FIFO: bench.store.bounded.read_local). StoreError (one line, naming WHAT) otherwise;
        FileNotFoundError with `missing_ok`."""
        where = f"{self.where}: {what}"
        try:
            if self._local():
                return bounded.read_local(self.root, path, where, max_bytes, expect_size, expected_by)
            data = remote.read_at_once(self, path, max_bytes, expect_size)
            if data is not None:
                return data
            size = self._io("stat", self.fs.size, path, missing_ok=True)
            if not isinstance(size, int):
                raise StoreError(f"{where}: the store gives no size for it")
            bounded.check_size(size, where, max_bytes, expect_size, expected_by)  # before any byte is read
            data = self._io(what, self.fs.cat_file, path, start=0, end=size, missing_ok=True) if size else b""
            return bounded.read_sized(io.BytesIO(data).read, None, where, max_bytes, expect_size, expected_by)
        except FileNotFoundError:
            if missing_ok:
                raise
            raise StoreError(f"{where}: not found") from None
        except OSError as e:
            raise StoreUnavailable(f"{where}: read failed: {type(e).__name__}: {_one_line(e, self.url)}") from None

    def parquet_footer(self, path: str, limits: bounded.ParquetLimits, what: str = "Parquet footer"):
        """The footer (pyarrow FileMetaData) of one Parquet file of the store, read alone and
        checked against LIMITS before it is parsed (bench.store.bounded.footer_from)."""
        where = f"{self.where}: {what}"
        try:
            if self._local():
                f, size = bounded.open_local(self.root, path, where)
                with f:
                    def read_range(start: int, end: int) -> bytes:
                        f.seek(start)
                        return f.read(end - start)

                    return bounded.footer_from(read_range, size, where, limits)
            tail, size = remote.tail(self, path, what)
            at = size - len(tail)  # the store offset of tail[0]

            def read_remote(start: int, end: int) -> bytes:
                if start >= at:
                    return tail[start - at:end - at]
                return self._io(what, self.fs.cat_file, path, start=start, end=end)

            return bounded.footer_from(read_remote, size, where, limits)
        except OSError as e:
            raise StoreUnavailable(f"{where}: read failed: {type(e).__name__}: {_one_line(e, self.url)}") from None

    def put_bytes(self, rel: str, data: bytes) -> str:
        """Write a store-level file (e.g. costmodel/costmodel.csv) via staging; returns its
        URL as it may be shown (credentials redacted). REL must be a plain relative path."""
        try:
            check_rel_path(rel)
        except UnsafePath as e:
            raise StoreError(f"{self.where}: refused to write {one_line(rel)!r}: {e}") from None
        staged = self.path(STAGING_DIR, f"{uuid.uuid4().hex[:12]}.{rel.rsplit('/', 1)[-1]}")  # a short name
        try:
            self._put_verified(staged, data)
            self._publish_file(staged, self.path(rel), data)
        finally:
            self._remove_quietly(staged, folder=False)
        return f"{self.where.rstrip('/')}/{rel}"

    # -- internals ----------------------------------------------------------------------
    def _local(self) -> bool:
        return "file" in ((self.fs.protocol,) if isinstance(self.fs.protocol, str) else self.fs.protocol)

    def _local_manifest(self, run_name: str) -> bool:
        """Whether runs/RUN_NAME/MANIFEST.json is a regular file (not followed if a link)."""
        try:
            return stat.S_ISREG(os.stat(self.path(RUNS_DIR, run_name, MANIFEST_FILE), follow_symlinks=False).st_mode)
        except OSError:
            return False

    def _with_points(self, run: PreparedRun, done: Uploaded) -> Uploaded:
        """After the manifest (a run's points are never seen before the run is): its point
        files, which a re-upload finds already there (bench.store.points)."""
        done.point_files, done.note = publish_run_points(self, run)
        return done

    def _published_manifest(self, run_id: str) -> Manifest | None:
        """For upload: the manifest already under this id; a refused one is different content."""
        try:
            return self.read_manifest(run_id)
        except StoreUnavailable:
            raise  # the store did not answer (an outage): no verdict on the content
        except StoreError as e:
            raise StoreError(f"{self.where}: run id {run_id} is already published with different content "
                             f"({str(e).rsplit(': ', 1)[-1]}); refusing to overwrite") from None

    def _existing(self, run: PreparedRun, existing: Manifest, size: int) -> Uploaded:
        if existing.content_sha256 != run.manifest["content_sha256"]:
            raise StoreError(
                f"{self.where}: run id {run.run_id} is already published with different content; refusing to overwrite"
            )
        return Uploaded(run.run_id, run.source, "exists", len(run.files), size)

    def _put_verified(self, path: str, data: bytes) -> None:
        self._inside(path)
        self._io("write", self.fs.pipe_file, path, data)
        self._verify(path, data)

    def _publish_file(self, staged: str, final: str, data: bytes) -> None:
        """Move one verified staged file into its published place, then check it there."""
        self._inside(final)
        if self._local():
            self._io("publish", self.fs.mv, staged, final)  # an atomic rename
        else:  # one object copy; the staged copy goes with its staging folder (one batch delete)
            self._io("publish", self.fs.cp_file, staged, final)
        self._verify(final, data)

    def _inside(self, path: str) -> None:
        """Locally: PATH's folders made, none of them a symbolic link, so a write stays in the store."""
        if self._local():
            bounded.local_dirs(self.root, path, f"{self.where}: write")

    def _verify(self, path: str, data: bytes) -> None:
        self.fs.invalidate_cache(path)
        try:
            remote = self.read_bytes(path, len(data), expect_size=len(data), what="read back")
        except StoreError as e:
            raise StoreError(f"{self.where}: {path}: mismatch after upload ({str(e).rsplit(': ', 1)[-1]})") from None
        if sha256_hex(remote) != sha256_hex(data):
            raise StoreError(f"{self.where}: {path}: checksum mismatch after upload")

    def _remove_quietly(self, path: str, folder: bool = True) -> None:
        """Remove a staging folder (or one staged file: one delete request, no listing)."""
        try:  # a path already gone raises, and is ignored: no existence check first
            if folder:
                self.fs.rm(path, recursive=True)
            else:
                self.fs.rm_file(path)
        except Exception:  # noqa: BLE001, S110 - staging leftovers are never read; a failed cleanup is harmless
            pass

    def _io(self, what: str, fn, *args, missing_ok: bool = False, **kwargs):
        """Call one fsspec operation; backend errors become one-line StoreErrors.

        With missing_ok, FileNotFoundError passes through for the caller to handle."""
        try:
            return fn(*args, **kwargs)
        except BenchError:
            raise
        except FileNotFoundError:
            if missing_ok:
                raise
            raise StoreError(f"{self.where}: {what} failed: not found: "
                             f"{_one_line(args[0] if args else '', self.url)}") from None
        except Exception as e:  # noqa: BLE001 - each backend (botocore, gcsfs, hf) has its own error types
            raise StoreUnavailable(f"{self.where}: {what} failed: {type(e).__name__}: {_one_line(e, self.url)}") from None


def upload(run_dirs: list[Path], url: str, storage_options: dict | None = None, signer=None) -> list[Uploaded]:
    """Validate every run first (any refusal uploads nothing), then publish each one (and sign
    it with `signer`, a bench.store.signing.Signer, when given)."""
    prepared = []
    for run_dir in run_dirs:
        try:
            prepared.append(prepare(Path(run_dir)))
        except ResultError as e:
            raise StoreError(f"refused: {e}") from None
    store = Store(url, storage_options)
    return [store.upload(run, signer) for run in prepared]


def _parse_untrusted(data: bytes, source: str) -> RunResult:
    """run.json bytes from a store -> RunResult. Whatever the bytes, the only error is a
    one-line StoreError: a store is untrusted input, and one bad run must not stop a pull."""
    try:
        return parse_summary(load_json(data, source, MAX_SUMMARY_BYTES), source)
    except StoreError:
        raise
    except ResultError as e:
        raise StoreError(f"refused: {e}") from None
    except Exception as e:  # noqa: BLE001  malformed JSON or a shape the parser did not expect
        raise StoreError(f"{source}: refused: not a readable bench result ({type(e).__name__})") from None


def _one_line(e: Exception | str, url: str) -> str:
    """A backend error on one line, credentials removed (it may quote the URL, with or without its scheme)."""
    return one_line(redact_text_of(str(e), url))
