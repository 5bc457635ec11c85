"""The fake server in several processes on one port: connections are spread over them, and
what it recorded (emit times, token counters) reads as one server's."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from bench.load.driver import run_point_sync
from bench.load.types import LoadJob
from bench.load.workload import RandomPrompts
from bench.testing.fake_server import FakeServer, FakeServerConfig

FAST = FakeServerConfig(ttft_s=0.005, itl_s=0.002)


def _counters(text: str) -> dict[str, float]:
    return {line.split("{")[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
            if line.startswith("vllm:")}


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"  # exited, not reaped
    except FileNotFoundError:
        return True


def _wait_gone(pids: list[int], timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if all(_gone(p) for p in pids):
            return True
        time.sleep(0.05)
    return False


@pytest.mark.slow
def test_requests_are_spread_over_the_processes_and_read_as_one_server():
    wl = RandomPrompts(12, 8, 500, seed=5)
    with FakeServer(FAST, mode="process", processes=2) as srv:
        assert len(srv.pids) == 2
        pr = run_point_sync(LoadJob(srv.base_url, FAST.model, wl, {"kind": "concurrency", "concurrency": 64}, 4, 256))
        emits = srv.emits()
        merged_text = srv.metrics_text()
        with urllib.request.urlopen(srv.base_url + "/metrics", timeout=10) as r:  # any process: the total
            shared_text = r.read().decode()
        counters = srv.counters()
    assert all(r.ok for r in pr.records), [r.error for r in pr.records if not r.ok][:3]
    keys = [f"{pr.client.request_id_prefix}-{r.request_id}" for r in pr.records]
    assert sorted(emits) == sorted(keys)  # every request exactly once (emits() refuses a key seen twice)
    per_proc = [sum(1 for e in emits.values() if e["proc"] == i) for i in (0, 1)]
    assert sum(per_proc) == 260 and min(per_proc) > 0, per_proc
    for rec, key in zip(pr.records, keys):
        assert [n for _, n in emits[key]["chunks"] if n > 0] == rec.chunk_tokens
    client = pr.client_token_counts()
    want = {"vllm:generation_tokens_total": client["generation_tokens"],
            "vllm:prompt_tokens_total": client["prompt_tokens"]}
    assert {k: _counters(merged_text)[k] for k in want} == want
    assert {k: _counters(shared_text)[k] for k in want} == want
    assert counters["n_requests"] == 260 and counters["generation_tokens"] == client["generation_tokens"]


@pytest.mark.slow
def test_one_process_records_as_before():
    with FakeServer(FAST, mode="process") as srv:
        pr = run_point_sync(LoadJob(srv.base_url, FAST.model, RandomPrompts(12, 4, 500, seed=1),
                                    {"kind": "concurrency", "concurrency": 2}, 0, 4))
        emits = srv.emits()
        assert len(srv.pids) == 1
        assert _counters(srv.metrics_text())["vllm:generation_tokens_total"] == 16
    assert len(emits) == 4 and all({"t_recv", "chunks"} <= set(e) and "proc" not in e for e in emits.values())
    assert all(r.ok for r in pr.records)


@pytest.mark.slow
def test_the_processes_stop_with_the_server():
    with FakeServer(FAST, mode="process", processes=3) as srv:
        pids = srv.pids
        assert len(set(pids)) == 3 and not any(_gone(p) for p in pids)
    assert _wait_gone(pids, timeout_s=1.0)  # reaped in __exit__
    assert srv.pids == []


@pytest.mark.slow
def test_the_processes_exit_when_their_parent_is_killed():
    code = ("import json, time\n"
            "from bench.testing.fake_server import FakeServer, FakeServerConfig\n"
            "srv = FakeServer(FakeServerConfig(), mode='process', processes=2).__enter__()\n"
            "print(json.dumps(srv.pids), flush=True)\n"
            "time.sleep(60)\n")
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        pids = json.loads(parent.stdout.readline())
        assert not any(_gone(p) for p in pids)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=10)
        assert _wait_gone(pids)  # their stdin closed with the parent
    finally:
        parent.kill()
        parent.wait()
        parent.stdout.close()


def test_several_processes_need_process_mode():
    with pytest.raises(ValueError, match="mode='process'"):
        FakeServer(FAST, mode="thread", processes=2)
    with pytest.raises(ValueError):
        FakeServer(FAST, mode="process", processes=0)
