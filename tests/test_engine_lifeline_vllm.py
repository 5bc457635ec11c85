"""Engines die with bench, for real (issue 18, defect 2): `bench run` with the default engine
(vLLM's CPU build, the tiny Llama) is killed with SIGKILL once its engine serves; within a
bounded time no process of the engine's group (api_server, EngineCore, Worker, resource
tracker) is left. Before the fix, EngineCore and Worker ran on at 24-90 % CPU, parent pid 1.
Run under `flock /tmp/bench-vllm.lock` (one vLLM at a time on a shared box)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

START_TIMEOUT_S = 600  # a vLLM CPU start takes 60-120 s on a loaded 2-core box
GONE_TIMEOUT_S = 60  # vLLM stops in about 1 s on SIGTERM; the watchdog's SIGKILL follows after 10 s


def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def _group(pgid: int) -> list[str]:
    """Live processes of the group, as 'pid command'."""
    out = []
    for entry in Path("/proc").iterdir():
        fields = _stat(int(entry.name)) if entry.name.isdigit() else None
        if fields and int(fields[2]) == pgid and fields[0] != "Z":
            cmd = (Path(f"/proc/{entry.name}/cmdline").read_bytes().replace(b"\0", b" ")[:80]).decode(errors="replace")
            out.append(f"{entry.name} {cmd}")
    return out


def _engine_of(bench_pid: int) -> int | None:
    """The pid of bench's vLLM api_server child, once there is one."""
    for entry in Path("/proc").iterdir():
        fields = _stat(int(entry.name)) if entry.name.isdigit() else None
        if fields and int(fields[1]) == bench_pid:
            cmdline = Path(f"/proc/{entry.name}/cmdline").read_bytes()
            if b"vllm.entrypoints.openai.api_server" in cmdline:
                return int(entry.name)
    return None


def _until(condition, timeout_s: float, what: str, bench: subprocess.Popen):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        assert bench.poll() is None, f"bench exited ({bench.returncode}) while waiting for {what}"
        time.sleep(0.5)
    raise AssertionError(f"{what}: not within {timeout_s} s")


@pytest.mark.vllm
def test_a_sigkilled_bench_run_leaves_no_vllm_process(tmp_path):
    out = tmp_path / "runs"
    bench = subprocess.Popen([sys.executable, "-m", "bench", "run", "--concurrency", "1", "--requests", "400",
                              "--out", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pgid = None
    try:
        pgid = _until(lambda: _engine_of(bench.pid), 120, "the engine process", bench)
        assert os.getpgid(pgid) == pgid

        def serving():
            logs = list(out.glob("*/engine-*.log"))
            return logs and "Application startup complete" in logs[0].read_text(errors="replace")

        _until(serving, START_TIMEOUT_S, "the engine serving", bench)
        assert len(_group(pgid)) >= 3, _group(pgid)  # api_server, EngineCore, Worker (+ resource tracker)
        bench.kill()
        bench.wait(timeout=30)
        deadline = time.monotonic() + GONE_TIMEOUT_S
        while _group(pgid) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _group(pgid) == [], f"left after {GONE_TIMEOUT_S} s: {_group(pgid)}"
    finally:
        bench.kill()
        if pgid is not None:
            try:
                os.killpg(pgid, 9)
            except ProcessLookupError:
                pass
