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
object copy on object stores); the manifest is moved last.

Credentials come from each backend's usual environment and config files; nothing here
writes them anywhere. Extra fsspec options: the `storage_options` argument, the JSON object
in `$BENCH_STORE_OPTIONS`, and `$BENCH_S3_ENDPOINT_URL` for S3-compatible servers.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench.errors import BenchError, ResultError, StoreError
from bench.redact import redact_text, redact_text_of
from bench.results import SUMMARY_FILE, RunResult, parse_summary
from bench.safepath import UnsafePath, check_run_id, inside
from bench.store.integrity import check_run_requests
from bench.store.manifest import check_manifest
from bench.store.publish import (
    MANIFEST_FILE,
    PreparedRun,
    manifest_bytes,
    prepare,
    sha256_hex,
)

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
    def read_manifest(self, run_id: str) -> dict | None:
        """The published manifest of a run, checked (store_paths.check_manifest) before it is
        returned; None when the run is not (fully) published."""
        try:
            check_run_id(run_id)
        except UnsafePath as e:
            raise StoreError(f"{self.where}: refused run folder: {e}") from None
        try:
            data = self._io(
                "read manifest", self.fs.cat_file, self.path(RUNS_DIR, run_id, MANIFEST_FILE), missing_ok=True
            )
        except FileNotFoundError:
            return None
        try:
            manifest = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise StoreError(f"{self.where}: run {run_id}: MANIFEST.json is not valid JSON") from None
        return check_manifest(manifest, run_id, self.where)

    def published_run_ids(self) -> list[str]:
        """Folder names of runs with a MANIFEST.json, sorted, from one listing (nothing read or checked)."""
        if self._local():  # one stat a run: fsspec's local glob stats every file of every run (9 s for 100k)
            runs = self.path(RUNS_DIR)
            names = os.listdir(runs) if os.path.isdir(runs) else []
            return sorted(n for n in names if os.path.isfile(f"{runs}/{n}/{MANIFEST_FILE}"))
        self.fs.invalidate_cache()
        pattern = self.path(RUNS_DIR, "*", MANIFEST_FILE)
        try:
            paths = self._io("list runs", self.fs.glob, pattern, missing_ok=True)
        except FileNotFoundError:
            return []
        return sorted(p.rstrip("/").split("/")[-2] for p in paths)

    def manifests(self, refused: list[str] | None = None) -> list[dict]:
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

    def read_file(self, run_id: str, rel: str, manifest: dict | None = None) -> bytes:
        """One file of a published run, checked against the manifest's sha256."""
        manifest = check_manifest(manifest, run_id, self.where) if manifest else self.read_manifest(run_id)
        if manifest is None:
            raise StoreError(f"{self.where}: no published run {run_id}")
        entry = next((e for e in manifest["files"] if e["path"] == rel), None)
        if entry is None:
            raise StoreError(f"{self.where}: run {run_id} has no file {rel}")
        data = self._io("read", self.fs.cat_file, self.path(RUNS_DIR, run_id, rel))
        if sha256_hex(data) != entry["sha256"]:
            raise StoreError(f"{self.where}: run {run_id}: {rel} does not match its manifest checksum")
        return data

    def read_run(self, run_id: str, manifest: dict | None = None) -> RunResult:
        """A published run.json, parsed; StoreError (one line) for one that is not a bench result."""
        data = self.read_file(run_id, SUMMARY_FILE, manifest)
        return _parse_untrusted(data, f"{self.where}/{RUNS_DIR}/{run_id}/{SUMMARY_FILE}")

    def read_checked_run(self, run_id: str, manifest: dict | None = None) -> RunResult:
        """`read_run`, and every point's requests Parquet read and checked against it
        (bench.store.integrity); StoreError when one disagrees."""
        manifest = check_manifest(manifest, run_id, self.where) if manifest else self.read_manifest(run_id)
        run = self.read_run(run_id, manifest)
        check_run_requests(run, lambda rel: self.read_file(run_id, rel, manifest), f"{self.where}: run {run_id}")
        return run

    def iter_runs(self) -> Iterator[tuple[str, RunResult]]:
        """(run_id, RunResult) of every published run."""
        for manifest in self.manifests():
            yield manifest["run_id"], self.read_run(manifest["run_id"], manifest)

    # -- writing ------------------------------------------------------------------------
    def upload(self, run: PreparedRun) -> Uploaded:
        """Publish one prepared run; a no-op when the identical run is already published."""
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
        does not exist. A listing cached by the filesystem is dropped first."""
        if self._local():
            try:  # fsspec's local ls costs ~5 us a name, and a partition holds thousands
                return sorted(os.listdir(path))
            except (FileNotFoundError, NotADirectoryError):
                return []
        self.fs.invalidate_cache(path)
        try:
            entries = self._io("list", self.fs.ls, path, False, missing_ok=True)
        except FileNotFoundError:
            return []
        return sorted(str(e).rstrip("/").rsplit("/", 1)[-1] for e in entries)

    def get_bytes(self, rel: str) -> bytes | None:
        """A store-level file (e.g. a point file), unchecked; None when there is none."""
        try:
            return self._io("read", self.fs.cat_file, self.path(rel), missing_ok=True)
        except FileNotFoundError:
            return None

    def put_bytes(self, rel: str, data: bytes) -> str:
        """Write a store-level file (e.g. costmodel/costmodel.csv) via staging; returns its
        URL as it may be shown (credentials redacted)."""
        staged = self.path(STAGING_DIR, f"{uuid.uuid4().hex[:12]}.{rel.rsplit('/', 1)[-1]}")  # a short name
        try:
            self._put_verified(staged, data)
            self._publish_file(staged, self.path(rel), data)
        finally:
            self._remove_quietly(staged)
        return f"{self.where.rstrip('/')}/{rel}"

    def pull(self, dest: Path, hardware: str | None = None, model: str | None = None,
             skipped: list[str] | None = None) -> list[Path]:
        """Copy published runs (optionally one hardware / model) into DEST/<run_id>/; verified.

        A run already complete in DEST (its MANIFEST.json matches) is not fetched again. A run
        that fails a check (manifest, path, checksum, run.json) is never placed in DEST: with
        `skipped` given, its one-line reason is appended there and the pull goes on;
        without, the first one raises StoreError.
        """
        dest = Path(dest)
        dest.mkdir(parents=True, exist_ok=True)
        out = []
        for manifest in self.manifests(refused=skipped):
            if hardware and manifest.get("hardware") != hardware:
                continue
            if model and model not in (manifest.get("models") or [manifest.get("model")]):
                continue
            try:
                out.append(self._pull_one(manifest, dest))
            except (StoreError, UnsafePath) as e:
                if skipped is None:
                    raise StoreError(str(e)) from None
                skipped.append(str(e))
        return out

    # -- internals ----------------------------------------------------------------------
    def _local(self) -> bool:
        return "file" in ((self.fs.protocol,) if isinstance(self.fs.protocol, str) else self.fs.protocol)

    def _pull_one(self, manifest: dict, dest: Path) -> Path:
        run_id = manifest["run_id"]
        check_manifest(manifest, run_id, self.where)
        target = inside(dest, run_id)
        local = target / MANIFEST_FILE
        if local.is_file() and local.read_bytes() == manifest_bytes(manifest):
            return target
        partial = dest / f".{run_id}.partial-{uuid.uuid4().hex[:8]}"
        try:
            partial.mkdir()
            for entry in manifest["files"]:
                path = inside(partial, entry["path"])
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(self.read_file(run_id, entry["path"], manifest))
            _check_pulled_summary(partial, self.where, run_id)
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

    def _with_points(self, run: PreparedRun, done: Uploaded) -> Uploaded:
        """After the manifest (a run's points are never seen before the run is): its point
        files, which a re-upload finds already there (bench.store.points)."""
        from bench.store.points import publish_run_points

        done.point_files, done.note = publish_run_points(self, run)
        return done

    def _published_manifest(self, run_id: str) -> dict | None:
        """For upload: the manifest already under this id; a refused one is different content."""
        try:
            return self.read_manifest(run_id)
        except StoreError as e:
            if "read manifest failed: " in str(e):
                raise  # the store did not answer (an outage): no verdict on the content
            raise StoreError(f"{self.where}: run id {run_id} is already published with different content "
                             f"({str(e).rsplit(': ', 1)[-1]}); refusing to overwrite") from None

    def _existing(self, run: PreparedRun, existing: dict, size: int) -> Uploaded:
        if existing.get("content_sha256") != run.manifest["content_sha256"]:
            raise StoreError(
                f"{self.where}: run id {run.run_id} is already published with different content; refusing to overwrite"
            )
        return Uploaded(run.run_id, run.source, "exists", len(run.files), size)

    def _put_verified(self, path: str, data: bytes) -> None:
        self._io("write", self.fs.pipe_file, path, data)
        self._verify(path, data)

    def _publish_file(self, staged: str, final: str, data: bytes) -> None:
        """Move one verified staged file into its published place, then check it there."""
        self._io("publish", self.fs.mv, staged, final)
        self._verify(final, data)

    def _verify(self, path: str, data: bytes) -> None:
        self.fs.invalidate_cache(path)
        size = self._io("stat", self.fs.size, path)
        remote = self._io("read back", self.fs.cat_file, path)
        if size != len(data) or sha256_hex(remote) != sha256_hex(data):
            raise StoreError(f"{self.where}: {path}: checksum mismatch after upload ({size} of {len(data)} bytes)")

    def _remove_quietly(self, path: str) -> None:
        try:
            if self.fs.exists(path):
                self.fs.rm(path, recursive=True)
        except Exception:  # noqa: BLE001, S110 - staging leftovers are never read; a failed cleanup is harmless
            pass

    def _io(self, what: str, fn, *args, missing_ok: bool = False):
        """Call one fsspec operation; backend errors become one-line StoreErrors.

        With missing_ok, FileNotFoundError passes through for the caller to handle."""
        try:
            return fn(*args)
        except BenchError:
            raise
        except FileNotFoundError:
            if missing_ok:
                raise
            raise StoreError(f"{self.where}: {what} failed: not found: "
                             f"{_one_line(args[0] if args else '', self.url)}") from None
        except Exception as e:  # noqa: BLE001 - each backend (botocore, gcsfs, hf) has its own error types
            raise StoreError(f"{self.where}: {what} failed: {type(e).__name__}: {_one_line(e, self.url)}") from None


def upload(run_dirs: list[Path], url: str, storage_options: dict | None = None) -> list[Uploaded]:
    """Validate every run first (any refusal uploads nothing), then publish each one."""
    prepared = []
    for run_dir in run_dirs:
        try:
            prepared.append(prepare(Path(run_dir)))
        except ResultError as e:
            raise StoreError(f"refused: {e}") from None
    store = Store(url, storage_options)
    return [store.upload(run) for run in prepared]


def pull(url: str, dest: Path, hardware: str | None = None, model: str | None = None,
         storage_options: dict | None = None, skipped: list[str] | None = None) -> list[Path]:
    """Fetch published runs into a local cache folder; returns the local run folders.
    See Store.pull for `skipped`."""
    return Store(url, storage_options).pull(dest, hardware=hardware, model=model, skipped=skipped)


def ls(url: str, storage_options: dict | None = None, refused: list[str] | None = None) -> list[dict]:
    """One row per published run: run_id, date, model, hardware, n_gpus, engine, ...
    (see Store.manifests for `refused`)."""
    rows = []
    for m in Store(url, storage_options).manifests(refused=refused):
        rows.append({
            "run_id": m["run_id"],
            "date": (m.get("created_utc") or "")[:10],
            "model": m.get("model") or ",".join(m.get("models") or []),
            "hardware": m.get("hardware"),
            "n_gpus": m.get("n_gpus"),
            "engine": m.get("engine"),
            "harness_version": m.get("harness_version"),
            "status": m.get("status"),
            "n_points": m.get("n_points"),
            "n_valid_points": m.get("n_valid_points"),
        })
    return rows


def default_cache_dir() -> Path:
    """Where `bench pull` puts runs: $BENCH_CACHE_DIR/runs or ~/.cache/bench/runs."""
    base = os.environ.get("BENCH_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "bench")
    return Path(base) / "runs"


def _check_pulled_summary(run_dir: Path, url: str, run_id: str) -> None:
    """A pulled run.json must parse, and each point's requests file must be one the
    manifest brought (its path was checked by the result schema), read as Parquet and
    agree with run.json."""
    result = _parse_untrusted((run_dir / SUMMARY_FILE).read_bytes(), f"{url}: run {run_id}: {SUMMARY_FILE}")
    for point in result.points:
        if point.requests_file and not inside(run_dir, point.requests_file).is_file():
            raise StoreError(f"{url}: run {run_id}: point {point.point_id}: {point.requests_file} is not in the run")
    check_run_requests(result, lambda rel: inside(run_dir, rel).read_bytes(), f"{url}: run {run_id}")


def _parse_untrusted(data: bytes, source: str) -> RunResult:
    """run.json bytes from a store -> RunResult. Whatever the bytes, the only error is a
    one-line StoreError: a store is untrusted input, and one bad run must not stop a pull."""
    try:
        return parse_summary(json.loads(data), source)
    except ResultError as e:
        raise StoreError(f"refused: {e}") from None
    except Exception as e:  # noqa: BLE001  malformed JSON or a shape the parser did not expect
        raise StoreError(f"{source}: refused: not a readable bench result ({type(e).__name__})") from None


def _one_line(e: Exception | str, url: str) -> str:
    """A backend error on one line, credentials removed (it may quote the URL, with or without its scheme)."""
    return redact_text_of(" ".join(str(e).split()), url)[:300]
