"""Signed uploads: ed25519 key pairs, and a detached signature of a published run.

    bench keys new --out DIR                  DIR/<name>.key (private, 0600) and DIR/<name>.pub
    bench upload RUN --to URL --sign KEY      URL/runs/<run_id>/signatures/<key id>.json

A signature is a statement, signed with the key: the run id, the sha256 of the run's
canonical manifest bytes (`manifest_bytes`, which lists every file of the run with its size
and sha256) and the size and sha256 of each of the run's point files (which the manifest
cannot list: they are written after it). The statement and its signature are one small
JSON file beside the manifest, one per signer; the manifest and the run id stay as they are,
so signed and unsigned stores are read alike. Readers that pass `--trust` check, with the
public keys they were given (never a key the store offers), that a run's statement is signed
by one of them and names the manifest and the point files they read (bench.store.trust).

A key id is the first 16 hex digits of the sha256 of the raw 32-byte public key.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.errors import ConfigError, StoreError
from bench.results import SUMMARY_FILE, parse_summary
from bench.safepath import UnsafePath, check_rel_path, check_run_id
from bench.store.bounded import MAX_SMALL_JSON_BYTES, MAX_SUMMARY_BYTES, load_json
from bench.store.manifest import manifest_bytes
from bench.store.rows import run_point_files

SIGNATURES_DIR = "signatures"
FORMAT = "bench-run-signature/1"
ALGORITHM = "ed25519"
PRIVATE_SUFFIX, PUBLIC_SUFFIX = ".key", ".pub"
MAX_KEY_FILE_BYTES = 64 << 10
_KEY_ID_RE = re.compile(r"^[0-9a-f]{16}$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_FIELDS = {"format", "algorithm", "key_id", "run_id", "manifest_sha256", "point_files", "signature"}


@dataclass(frozen=True)
class Signer:
    """A private key, loaded to sign uploads."""

    key: Any  # cryptography Ed25519PrivateKey
    key_id: str
    path: Path


@dataclass
class TrustedKeys:
    """The public keys a reader trusts, by key id, and where each came from."""

    keys: dict[str, Any] = field(default_factory=dict)  # key id -> cryptography Ed25519PublicKey
    sources: dict[str, str] = field(default_factory=dict)  # key id -> file


@dataclass(frozen=True)
class Signed:
    """A run whose statement verified: who signed it, and the point files it names."""

    run_id: str
    key_id: str
    point_files: dict[str, dict]  # store-relative path -> {"size": bytes, "sha256": hex}


def key_id_of(public_key) -> str:
    """The id of an ed25519 public key: 16 hex digits of the sha256 of its raw bytes."""
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return hashlib.sha256(public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)).hexdigest()[:16]


def new_key_pair(out_dir: Path, name: str | None = None) -> tuple[str, Path, Path]:
    """Write OUT_DIR/NAME.key (PKCS#8 PEM, mode 0600) and OUT_DIR/NAME.pub (PEM); NAME defaults
    to `bench-<key id>`. Returns (key id, private path, public path); an existing file is
    never replaced (ConfigError)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
        PublicFormat,
    )

    key = Ed25519PrivateKey.generate()
    key_id = key_id_of(key.public_key())
    name = name or f"bench-{key_id}"
    if not _NAME_RE.match(name):
        raise ConfigError(f"--name {name!r}: use letters, digits, '.', '_' and '-' (at most 64)")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    private, public = out_dir / f"{name}{PRIVATE_SUFFIX}", out_dir / f"{name}{PUBLIC_SUFFIX}"
    for path in (private, public):
        if path.exists() or path.is_symlink():
            raise ConfigError(f"{path} exists; a key file is never replaced (choose another --name or --out)")
    _write_new(private, key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()), 0o600)
    _write_new(public, key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo), 0o644)
    return key_id, private, public


def load_signer(path: Path) -> Signer:
    """The private key in PATH (from `new_key_pair`); ConfigError, one line, for a file that is
    readable by others, not a PEM ed25519 private key, or encrypted."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    data, mode = _read_key_file(Path(path))
    if mode & 0o077:
        raise ConfigError(f"{path}: a private key readable by others (mode {mode & 0o777:04o}); "
                          f"run chmod 600 {path}")
    try:
        key = load_pem_private_key(data, password=None)
    except Exception as e:  # noqa: BLE001 - cryptography's errors for bad or encrypted PEM
        raise ConfigError(f"{path}: not an unencrypted PEM private key ({type(e).__name__})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{path}: not an ed25519 key (bench keys new makes one)")
    return Signer(key, key_id_of(key.public_key()), Path(path))


def load_trusted(paths: list[Path]) -> TrustedKeys:
    """The public keys in PATHS: each a .pub file, or a folder whose *.pub files are read
    (not its subfolders). ConfigError for a file that is not an ed25519 public key (a private
    key included: give its .pub), or when no key is found."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    trusted = TrustedKeys()
    for given in map(Path, paths):
        files = sorted(p for p in given.glob(f"*{PUBLIC_SUFFIX}") if p.is_file()) if given.is_dir() else [given]
        if not files:
            raise ConfigError(f"--trust {given}: no *{PUBLIC_SUFFIX} file in this folder")
        for path in files:
            data, _ = _read_key_file(path)
            if b"PRIVATE KEY" in data:
                raise ConfigError(f"--trust {path}: a private key; give its public key ({PUBLIC_SUFFIX})")
            try:
                key = load_pem_public_key(data)
            except Exception as e:  # noqa: BLE001 - cryptography's errors for bad PEM
                raise ConfigError(f"--trust {path}: not a PEM public key ({type(e).__name__})") from None
            if not isinstance(key, Ed25519PublicKey):
                raise ConfigError(f"--trust {path}: not an ed25519 key")
            trusted.keys[key_id_of(key)] = key
            trusted.sources.setdefault(key_id_of(key), str(path))
    return trusted


def signature_rel(run_id: str, key_id: str) -> str:
    """Where a run's signature by KEY_ID lives in the store, relative to its root."""
    return check_rel_path(f"runs/{check_run_id(run_id)}/{SIGNATURES_DIR}/{key_id}.json")


def statement(run_id: str, manifest_digest: str, point_files: dict[str, bytes], key_id: str) -> dict:
    """What a signer states about a run (without its signature)."""
    return {"format": FORMAT, "algorithm": ALGORITHM, "key_id": key_id, "run_id": run_id,
            "manifest_sha256": manifest_digest,
            "point_files": {rel: {"size": len(b), "sha256": hashlib.sha256(b).hexdigest()}
                            for rel, b in sorted(point_files.items())}}


def signed_bytes(stmt: dict) -> bytes:
    """The bytes a signature covers: the statement as canonical JSON (sorted keys, no spaces)."""
    return json.dumps({k: v for k, v in stmt.items() if k != "signature"}, sort_keys=True,
                      separators=(",", ":"), ensure_ascii=True).encode()


def sign_statement(stmt: dict, signer: Signer) -> bytes:
    """The signature file: the statement and its base64 signature, as canonical JSON."""
    signature = base64.b64encode(signer.key.sign(signed_bytes(stmt))).decode()
    return (json.dumps({**stmt, "signature": signature}, sort_keys=True, indent=1) + "\n").encode()


def manifest_digest(manifest) -> str:
    """sha256 of a manifest's canonical bytes (bench.store.publish.manifest_bytes)."""
    return hashlib.sha256(manifest_bytes(manifest)).hexdigest()


def sign_run(store, run_id: str, manifest: dict, point_rels: list[str], signer: Signer) -> str:
    """Write the signer's signature of a published run (its manifest and the point files at
    POINT_RELS as they are in the store); an identical one already there is left. Returns
    its store-relative path."""
    points = {rel: data for rel in point_rels if (data := store.get_bytes(rel)) is not None}
    blob = sign_statement(statement(run_id, manifest_digest(manifest), points, signer.key_id), signer)
    rel = signature_rel(run_id, signer.key_id)
    if store.get_bytes(rel, MAX_SMALL_JSON_BYTES) != blob:  # ed25519 is deterministic: same statement, same bytes
        store.put_bytes(rel, blob)
    return rel


def sign_upload(store, run, signer: Signer) -> str:
    """After an upload of RUN (a bench.store.publish.PreparedRun): sign its published manifest
    and its point files as the store holds them. Returns the signer's key id."""
    manifest = store.read_manifest(run.run_id)
    if manifest is None or manifest.content_sha256 != run.manifest["content_sha256"]:
        raise StoreError(f"{store.where}: run {run.run_id}: not published as uploaded; nothing signed")
    result = parse_summary(load_json(run.files[SUMMARY_FILE], run.run_id, MAX_SUMMARY_BYTES), run.run_id)
    sign_run(store, run.run_id, manifest, sorted(run_point_files(run.run_id, result)), signer)
    return signer.key_id


def verify_run(store, run_id: str, trusted: TrustedKeys, manifest: dict | None = None) -> Signed | str:
    """The run's statement signed by a trusted key, checked against its published manifest;
    else the one-line reason it is not trusted. Only the trusted keys' signature files are
    read (never a key the store offers)."""
    try:
        manifest = manifest if manifest is not None else store.read_manifest(run_id)
    except StoreError as e:
        return f"manifest refused ({str(e).rsplit(': ', 1)[-1]})"
    if manifest is None:
        return "not published (no MANIFEST.json)"
    digest = manifest_digest(manifest)
    problems = []
    for key_id in sorted(trusted.keys):
        rel = signature_rel(run_id, key_id)
        try:
            data = store.get_bytes(rel, MAX_SMALL_JSON_BYTES)
            if data is None:
                continue
            signed = _check_signature(load_json(data, rel, MAX_SMALL_JSON_BYTES, max_depth=4), run_id, key_id,
                                      trusted.keys[key_id], digest)
        except StoreError as e:
            problems.append(f"key {key_id}: {str(e).rsplit(': ', 1)[-1]}")
            continue
        if isinstance(signed, Signed):
            return signed
        problems.append(f"key {key_id}: {signed}")
    if problems:
        return "; ".join(problems)
    return "not signed by a trusted key"


def _check_signature(doc: Any, run_id: str, key_id: str, public_key, digest: str) -> Signed | str:
    """A signature file's statement verified with PUBLIC_KEY; else why not."""
    from cryptography.exceptions import InvalidSignature

    if not isinstance(doc, dict) or set(doc) != _FIELDS:
        return "signature file is not a bench run signature"
    if (doc["format"], doc["algorithm"], doc["key_id"], doc["run_id"]) != (FORMAT, ALGORITHM, key_id, run_id):
        return "signature file names another format, key or run"
    try:
        signature = base64.b64decode(str(doc["signature"]), validate=True)
        public_key.verify(signature, signed_bytes(doc))
    except (ValueError, InvalidSignature):
        return "bad signature (the statement was changed, or another key made it)"
    if doc["manifest_sha256"] != digest:
        return "signed another manifest than the published one"
    points = doc["point_files"]
    if not isinstance(points, dict) or not all(_point_entry(rel, e) for rel, e in points.items()):
        return "signed point file list is malformed"
    return Signed(run_id, key_id, points)


def _point_entry(rel: Any, entry: Any) -> bool:
    try:
        check_rel_path(rel)
    except UnsafePath:
        return False
    return (isinstance(entry, dict) and set(entry) == {"size", "sha256"} and type(entry["size"]) is int
            and entry["size"] >= 0 and isinstance(entry["sha256"], str) and bool(_SHA256_RE.match(entry["sha256"])))


def _read_key_file(path: Path) -> tuple[bytes, int]:
    """(bytes, mode) of a small regular key file, opened without blocking (never a FIFO)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise ConfigError(f"{path}: cannot read key file ({e.strerror})") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise ConfigError(f"{path}: not a regular file")
    with os.fdopen(fd, "rb", buffering=0) as f:
        data = f.read(MAX_KEY_FILE_BYTES + 1)
    if len(data) > MAX_KEY_FILE_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_KEY_FILE_BYTES} bytes; not a key file")
    return data, info.st_mode


def _write_new(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(path, mode)  # whatever the umask
