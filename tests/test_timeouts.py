"""A test that hangs fails alone (issue 18): the project's pytest configuration sets a per-test
timeout whose method lets the session go on (docs/reliability.md, "Tests: a hang fails one test")."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def test_the_project_bounds_every_test(pytestconfig):
    # base: no timeout configured, a hung test held CI until its 90-minute limit
    assert 900 <= float(pytestconfig.getini("timeout")) <= 1800  # the slowest vLLM test took 906 s here
    assert pytestconfig.getini("timeout_method") == "signal"


@pytest.mark.slow
def test_a_hanging_test_fails_alone_and_the_session_goes_on(tmp_path):
    """The project's configuration, its bound shortened to 2 s, on a test that waits forever."""
    (tmp_path / "test_hang.py").write_text(
        "import threading\n\n"
        "def test_waits_forever():\n    threading.Event().wait()\n\n"
        "def test_after_it():\n    assert True\n")
    env = os.environ | {"PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}  # pytest-timeout alone: a quick start
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "pytest_timeout",
                           "-c", str(PYPROJECT), "--rootdir", str(tmp_path), "-o", "timeout=2",
                           str(tmp_path / "test_hang.py")],
                          check=False, capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env)
    assert "1 failed, 1 passed" in done.stdout, done.stdout[-2000:]
    assert "Timeout" in done.stdout
