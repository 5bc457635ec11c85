"""Bounded reads of untrusted store files: JSON, Parquet, and the local files themselves.

A store is written by others, so every file read from one is checked before it is trusted
with memory or a parser:

- **JSON** (`load_json`): at most `max_bytes`, nested at most `max_depth` levels. The depth
  is found by a scan of the brackets outside strings, without recursion, before
  `json.loads` runs (which recurses once a level and would raise RecursionError).
- **Parquet** (`read_parquet`, `parquet_footer`): the footer is read first and checked
  (its length, rows, columns, row groups, and the bytes its fixed-width columns decode to)
  against `ParquetLimits`; then the columns are read in batches, page checksums verified,
  until the decoded bytes pass the limit.
- **Local files** (`read_local`, `local_dirs`): opened one folder at a time below the
  store's root with O_NOFOLLOW (a symbolic link anywhere below the root is refused, so a
  read or write never leaves the store) and O_NONBLOCK (a FIFO never blocks the open); only
  a regular file is read, and never more than its expected size.

Every refusal is one StoreError line naming the file.
"""

from __future__ import annotations

import errno
import json
import os
import re
import stat
from dataclasses import dataclass
from typing import Any

from bench.errors import StoreError

MiB = 1 << 20
MAX_JSON_DEPTH = 64  # run.json nests 8 levels today
MAX_MANIFEST_BYTES = 16 * MiB  # ~150 bytes a file entry: 100k files
MAX_SUMMARY_BYTES = 64 * MiB  # run.json; the largest committed one is 99 kB
MAX_SMALL_JSON_BYTES = 1 * MiB  # signatures, keys
MAX_FILE_BYTES = 4096 * MiB  # any one file a manifest may list
JSON_BRACKETS = b"[]{}"

_STRING_RE = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in JSON_BRACKETS)
_OPEN = frozenset(b"[{")


@dataclass(frozen=True)
class ParquetLimits:
    """What one Parquet file from a store may hold before any column is read."""

    max_rows: int
    max_columns: int = 512
    max_row_groups: int = 10_000
    max_footer_bytes: int = 64 * MiB  # a compacted file's footer lists the runs it covers
    max_decoded_bytes: int = 1024 * MiB  # Arrow bytes, as declared (fixed width) and as read


REQUESTS_LIMITS = ParquetLimits(max_rows=2_000_000)  # one load point's requests
POINTS_LIMITS = ParquetLimits(max_rows=20_000_000, max_decoded_bytes=8192 * MiB)  # point and compacted files

def load_json(data: bytes | str, where: str, max_bytes: int, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """The JSON value of DATA; StoreError (one line) when it is larger than `max_bytes`,
    nested deeper than `max_depth`, or not JSON."""
    if isinstance(data, str):
        data = data.encode("utf-8", errors="surrogatepass")
    if len(data) > max_bytes:
        raise StoreError(f"{where}: refused: {len(data)} bytes of JSON, more than the limit of {max_bytes}")
    depth = json_depth(data, max_depth)
    if depth > max_depth:
        raise StoreError(f"{where}: refused: JSON nested deeper than {max_depth} levels")
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as e:  # JSONDecodeError, UnicodeDecodeError, int digit limits
        why = e.msg if isinstance(e, json.JSONDecodeError) else type(e).__name__
        raise StoreError(f"{where}: refused: not valid JSON ({why})") from None


def json_depth(data: bytes, stop_above: int) -> int:
    """How deep the brackets of DATA nest outside its strings (the scan stops once it passes
    `stop_above`). A loop, not recursion: any depth costs one pass over the brackets."""
    brackets = _STRING_RE.sub(b'""', data).translate(None, _NOT_BRACKETS)
    depth = deepest = 0
    for c in brackets:
        if c in _OPEN:
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > stop_above:
                    break
        else:
            depth -= 1
    return deepest


# -- Parquet --------------------------------------------------------------------------------

def footer_length(tail: bytes, size: int, where: str, limits: ParquetLimits, what: str = "Parquet") -> int:
    """The footer length stated in a Parquet file's last 8 bytes (TAIL), checked against the
    file's SIZE and the limits."""
    if size < 12 or len(tail) < 8 or tail[-4:] != b"PAR1":
        raise StoreError(f"{where}: does not read as {what} (no PAR1 trailer)")
    length = int.from_bytes(tail[-8:-4], "little")
    if length > size - 12:
        raise StoreError(f"{where}: does not read as {what} (a footer of {length} bytes in a {size}-byte file)")
    if length > limits.max_footer_bytes:
        raise StoreError(f"{where}: refused: Parquet footer of {length} bytes, more than the limit "
                         f"of {limits.max_footer_bytes}")
    return length


def parquet_footer(footer: bytes, size: int, where: str, limits: ParquetLimits, what: str = "Parquet"):
    """pyarrow FileMetaData of a footer (the file's last `footer_length + 8` bytes), checked
    by `check_footer`. The footer alone is parsed: no column is touched."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    length = footer_length(footer[-8:], size, where, limits, what)
    if len(footer) < length + 8:
        raise StoreError(f"{where}: does not read as {what} (its footer cut short)")
    try:
        meta = pq.ParquetFile(pa.BufferReader(b"PAR1" + footer[-(length + 8):]), **_thrift_limits(limits)).metadata
    except Exception as e:  # noqa: BLE001 - untrusted bytes: any parser failure is a refusal
        raise StoreError(f"{where}: does not read as {what} (its footer: {type(e).__name__})") from None
    check_footer(meta, where, limits)
    return meta


def check_footer(meta, where: str, limits: ParquetLimits) -> None:
    """StoreError unless a file's metadata stays within LIMITS: rows, columns, row groups, and
    the Arrow bytes its rows decode to at 8 bytes a value at least.

    Only file-level fields are read: pyarrow 26 aborts the process (an uncaught C++ exception)
    on `row_group(i)` of some corrupt footers, where its readers raise OSError."""
    def refuse(why: str) -> StoreError:
        return StoreError(f"{where}: refused: Parquet {why}")

    if meta.num_columns > limits.max_columns:
        raise refuse(f"with {meta.num_columns} columns, more than the limit of {limits.max_columns}")
    if meta.num_row_groups > limits.max_row_groups:
        raise refuse(f"with {meta.num_row_groups} row groups, more than the limit of {limits.max_row_groups}")
    if meta.num_rows < 0:
        raise StoreError(f"{where}: does not read as Parquet (a negative row count)")
    if meta.num_rows > limits.max_rows:
        raise refuse(f"of {meta.num_rows} rows, more than the limit of {limits.max_rows}")
    decoded = meta.num_rows * meta.num_columns * 8
    if decoded > limits.max_decoded_bytes:
        raise refuse(f"decoding to at least {decoded} bytes, more than the limit of {limits.max_decoded_bytes}")


def read_parquet(data: bytes, where: str, limits: ParquetLimits, columns: list[str] | None = None,
                 what: str = "Parquet"):
    """DATA, a whole Parquet file, as an Arrow table: the footer checked first, page checksums
    verified (where the writer made them), and the read stopped once the decoded batches
    pass `limits.max_decoded_bytes`. StoreError (one line) for anything else."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    parquet_footer(data[-(limits.max_footer_bytes + 8):], len(data), where, limits, what)
    try:
        source = pq.ParquetFile(pa.BufferReader(data), page_checksum_verification=True, **_thrift_limits(limits))
        batches, decoded = [], 0
        for batch in source.iter_batches(batch_size=16_384, columns=columns, use_threads=False):
            decoded += batch.nbytes
            if decoded > limits.max_decoded_bytes:
                raise StoreError(f"{where}: refused: Parquet decoding to more than {limits.max_decoded_bytes} bytes")
            batches.append(batch)
        schema = source.schema_arrow
        if columns is not None:
            schema = pa.schema([schema.field(c) for c in columns])
        return pa.Table.from_batches(batches, schema=schema)
    except StoreError:
        raise
    except Exception as e:  # noqa: BLE001 - untrusted bytes: any reader failure is a refusal
        raise StoreError(f"{where}: does not read as {what} ({type(e).__name__})") from None


def _thrift_limits(limits: ParquetLimits) -> dict:
    return {"thrift_string_size_limit": limits.max_footer_bytes,
            "thrift_container_size_limit": max(1000, limits.max_columns * limits.max_row_groups)}


# -- local files ----------------------------------------------------------------------------

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
_FILE_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)


def rel_below(root: str, path: str, where: str) -> list[str]:
    """The parts of PATH below ROOT; StoreError for a path that is not below it."""
    prefix = root.rstrip("/") + "/"
    if not path.startswith(prefix):
        raise StoreError(f"{where}: refused: {path} is not inside the store")
    parts = path[len(prefix):].split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise StoreError(f"{where}: refused: {path} is not a plain path inside the store")
    return parts


def open_dir(root: str, parts: list[str], where: str, create: bool = False) -> int:
    """A descriptor of ROOT/PARTS..., each part opened below the last without following a
    symbolic link (made when missing, with `create`). FileNotFoundError passes through."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0))
    try:
        for part in parts:
            if create:
                try:
                    os.mkdir(part, dir_fd=fd)
                except FileExistsError:
                    pass
            try:
                inner = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                raise
            except OSError as e:  # ELOOP: a symbolic link; ENOTDIR: a file or a link to one
                why = ("is a symbolic link or not a folder" if e.errno in (errno.ELOOP, errno.ENOTDIR)
                       else f"cannot be opened ({e.strerror})")
                raise StoreError(f"{where}: refused: {part!r} below the store's root {why}") from None
            os.close(fd)
            fd = inner
    except BaseException:
        os.close(fd)
        raise
    return fd


def local_dirs(root: str, path: str, where: str) -> None:
    """Make the folders of PATH (a file to write inside the store at ROOT), refusing any that
    is a symbolic link or not a folder, and a PATH that is not a plain file or folder:
    nothing is written outside the store."""
    parts = rel_below(root, path, where)
    os.makedirs(root, exist_ok=True)
    fd = open_dir(root, parts[:-1], where, create=True)
    try:
        mode = os.stat(parts[-1], dir_fd=fd, follow_symlinks=False).st_mode
    except FileNotFoundError:
        return
    finally:
        os.close(fd)
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise StoreError(f"{where}: refused: {path} exists and is not a plain file")


def open_local(root: str, path: str, where: str):
    """(unbuffered file, size in bytes) of a regular file inside the local store at ROOT,
    opened through no symbolic link and without blocking (a FIFO or device is refused).
    FileNotFoundError passes through."""
    parts = rel_below(root, path, where)
    dir_fd = open_dir(root, parts[:-1], where)
    try:
        fd = os.open(parts[-1], _FILE_FLAGS, dir_fd=dir_fd)
    except FileNotFoundError:
        raise
    except OSError:  # ELOOP: a symbolic link; ENXIO: a socket or FIFO without a writer
        raise StoreError(f"{where}: refused: not a regular file (a symbolic link or a special file)") from None
    finally:
        os.close(dir_fd)
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise StoreError(f"{where}: refused: not a regular file (a FIFO, device or folder)")
    return os.fdopen(fd, "rb", buffering=0), info.st_size


def read_local(root: str, path: str, where: str, max_bytes: int, expect_size: int | None = None,
               expected_by: str = "expected") -> bytes:
    """A regular file inside the local store at ROOT (`open_local`), never more than
    `max_bytes` of it (nor other than `expect_size`, when given). FileNotFoundError passes through."""
    f, size = open_local(root, path, where)
    with f:
        return read_sized(f.read, size, where, max_bytes, expect_size, expected_by)


def footer_from(read_range, size: int, where: str, limits: ParquetLimits):
    """The checked FileMetaData of a Parquet file of SIZE bytes, reading only its footer
    through READ_RANGE(start, end) (`parquet_footer`)."""
    tail = read_range(size - 8, size) if size >= 12 else b""
    length = footer_length(tail, size, where, limits)
    return parquet_footer(read_range(size - 8 - length, size), size, where, limits)


def check_size(size: int, where: str, max_bytes: int, expect_size: int | None = None,
               expected_by: str = "expected") -> None:
    """StoreError unless a file of SIZE bytes is `expect_size` bytes (when given) and at most `max_bytes`."""
    if expect_size is not None and size != expect_size:
        raise StoreError(f"{where}: refused: {size} bytes, {expected_by} {expect_size}")
    if size > max_bytes:
        raise StoreError(f"{where}: refused: {size} bytes, more than the limit of {max_bytes}")


def read_sized(read, size: int | None, where: str, max_bytes: int, expect_size: int | None = None,
               expected_by: str = "expected") -> bytes:
    """Bytes from READ(n) of a file stated to be SIZE bytes (None: not known), checked by
    `check_size` before and after; at most one byte more than allowed is ever read."""
    if size is not None:
        check_size(size, where, max_bytes, expect_size, expected_by)
    allowed = max_bytes if expect_size is None else min(max_bytes, expect_size)
    chunks, got = [], 0
    while got <= allowed:
        chunk = read(min(allowed + 1 - got, 8 * MiB))
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    data = b"".join(chunks)
    if len(data) > allowed:
        raise StoreError(f"{where}: refused: more than {allowed} bytes read "
                         f"({expected_by if expect_size is not None and allowed == expect_size else 'the limit'} "
                         f"{allowed})")
    check_size(len(data), where, max_bytes, expect_size, expected_by)
    return data
