"""The linter and the type checker, with the rules pinned in pyproject.toml, pass over the tree.

ruff runs in the fast tier (about a second). mypy runs over bench/ (docs/architecture.md,
"Checks"): warm from .mypy_cache it takes seconds; a cold run on a fresh clone (CI) about a
minute and a half on 2 cores.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _run(args: list[str], timeout_s: float) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=timeout_s)


def test_ruff_finds_nothing():
    ruff = shutil.which("ruff")
    if ruff is None:
        pytest.fail("ruff is not installed: pip install -e '.[dev]' (scripts/install.sh does)")
    done = _run([ruff, "check", "--no-cache", "bench", "tests", "scripts"], timeout_s=300)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]


@pytest.mark.slow
def test_mypy_finds_nothing_in_bench():
    done = _run([sys.executable, "-m", "mypy"], timeout_s=900)  # files, strictness: [tool.mypy]
    assert done.returncode == 0, done.stdout[-8000:] + done.stderr[-2000:]
