"""Files that are never torn: write a temporary file beside the target, fsync, rename."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
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


def atomic_folder(final: Path, marker: str, write: Callable[[Path], None]) -> Path:
    """The folder `final`, built once: `write(tmp)` fills a temporary sibling, which is renamed
    into place, so a crash never leaves a half-written folder. A folder holding `marker` is
    complete and kept; a concurrent builder's twin that won the rename is taken as is."""
    if (final / marker).is_file():
        return final
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private; the cache may be shared
        write(tmp)
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / marker).is_file():  # not a concurrent twin: a real failure
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final
