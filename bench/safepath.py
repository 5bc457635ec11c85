"""Names read from untrusted input (a shared store, a pulled run.json) as file paths.

Every such name (a run id, a manifest's file entries, a run.json's `requests_file`) must
be a plain relative path that stays inside its root: no `..`, no absolute path, no drive
letter, no backslash, no hidden part, no control character.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

RUN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
_PART_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._+=@-]{0,254}$")
MAX_PATH_CHARS = 1024


class UnsafePath(ValueError):
    """A name from untrusted input that could leave its root."""


def check_rel_path(rel: Any) -> str:
    """`rel` if it is a plain relative POSIX path (parts of [A-Za-z0-9._+=@-], none starting
    with a dot), else UnsafePath naming the problem. Never touches the file system."""
    if not isinstance(rel, str) or not rel:
        raise UnsafePath(f"not a path: {rel!r}")
    if len(rel) > MAX_PATH_CHARS:
        raise UnsafePath(f"path longer than {MAX_PATH_CHARS} characters")
    if rel.startswith("/") or "\\" in rel or re.match(r"^[A-Za-z]:", rel):
        raise UnsafePath(f"absolute path or drive letter: {rel!r}")
    for part in rel.split("/"):
        if part in ("", ".", ".."):
            raise UnsafePath(f"empty, '.' or '..' part in {rel!r}")
        if not _PART_RE.match(part):
            raise UnsafePath(f"hidden or unexpected characters in {rel!r}")
    return rel


def check_run_id(run_id: Any) -> str:
    """`run_id` if it is one safe folder name, else UnsafePath."""
    if not isinstance(run_id, str) or not RUN_ID_RE.match(run_id) or run_id in (".", ".."):
        raise UnsafePath(f"not a valid run id: {str(run_id)[:80]!r}")
    return run_id


def inside(root: Path, rel: str) -> Path:
    """root/rel after checking rel, refusing a result that resolves (through symlinks
    already on disk) outside root."""
    check_rel_path(rel)
    root = Path(root)
    path = root / rel
    real_root = os.path.realpath(root)
    if os.path.commonpath([real_root, os.path.realpath(path)]) != real_root:
        raise UnsafePath(f"{rel!r} resolves outside {root}")
    return path
