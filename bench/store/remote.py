"""Reads of a remote (object) store in as few round trips as they can be: each request to
S3 and the like costs tens of milliseconds, a stat as much as a read.

- `read_at_once`: a whole file in one ranged GET of one byte more than allowed (no stat
  first); the caller's stat-first path gives the verdict when it is not within the limits.
- `tail`: a Parquet footer's bytes in one suffix-range GET, which holds a small file whole.

A missing file is FileNotFoundError (the caller says so); a range the store refuses (an
empty file, HTTP 416) is None; any other failure is the store's: StoreUnavailable at once,
since botocore's own retries already ran and a second request would only wait again.
"""

from __future__ import annotations

import errno

from bench.errors import StoreError, one_line
from bench.redact import redact_text_of

FOOTER_TAIL_BYTES = 128 << 10  # a Parquet footer is read from one suffix GET of this many bytes


def read_at_once(store, path: str, max_bytes: int, expect_size: int | None) -> bytes | None:
    """A remote file of STORE (a bench.store.Store), its bytes when within `max_bytes` and
    exactly `expect_size` (when given); None otherwise (the caller stats it and says why)."""
    allowed = max_bytes if expect_size is None else min(max_bytes, expect_size)
    data = get_range(store, path, "read", start=0, end=allowed + 1) if allowed > 0 else None
    if data is None or len(data) > allowed or (expect_size is not None and len(data) != expect_size):
        return None
    return data


def get_range(store, path: str, what: str, **byte_range) -> bytes | None:
    """One ranged GET (fsspec `cat_file` START/END); None when the store refuses the range."""
    def get():
        try:
            return store.fs.cat_file(path, **byte_range)
        except OSError as e:
            if e.errno == errno.EINVAL:  # s3fs's "requested range is not satisfiable"
                return None
            raise

    data = store._io(what, get, missing_ok=True)
    return data if isinstance(data, bytes) else None


def tail(store, path: str, what: str) -> tuple[bytes, int]:
    """(the last FOOTER_TAIL_BYTES of a remote file, its size): a file shorter than that
    comes whole, its size known; a longer one is stated as well (a second request)."""
    try:
        data = get_range(store, path, what, start=-FOOTER_TAIL_BYTES) or b""
    except FileNotFoundError:
        raise StoreError(f"{store.where}: {what} failed: not found: {one_line(redact_text_of(path, store.url))}") from None
    if 0 < len(data) < FOOTER_TAIL_BYTES:
        return data, len(data)
    size = store._io("stat", store.fs.size, path)
    return (data if len(data) <= size else b""), size
