"""Files that are never torn: write a temporary file beside the target, fsync, rename."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from bench.errors import write_error


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temporary file in the same folder and rename: never a torn file."""
    path = Path(path)
    try:
        _atomic_write(path, text)
    except OSError as e:  # full disk, read-only folder: what was written before stays as it was
        raise write_error(e, f"cannot write {path}: {e.strerror or e}; the previous version of the file is kept") from None


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
