"""Open loops on a schedule: trace loads send at the workload's timestamps; latencies are also
given from the scheduled send (no coordinated omission), with the client's schedule lag."""

from __future__ import annotations

import time

import numpy as np
import pytest

from bench.errors import ConfigError
from bench.load.driver import run_point_sync
from bench.load.types import LoadJob, Prompt
from bench.load.workload import RandomPrompts
from bench.measure.metrics import summarize
from bench.measure.validity import check_validity
from bench.plan.points import parse_load
from bench.testing.fake_server import FakeServer, FakeServerConfig


class Timed:
    """A workload whose prompts carry trace send times (s after the replay starts)."""

    def __init__(self, times_s: list[float], n_in: int = 8, n_out: int = 4):
        self.times_s, self.n_in, self.n_out = times_s, n_in, n_out

    def prompts(self, n: int) -> list[Prompt]:
        return [Prompt(self.n_in, self.n_out, token_ids=[7] * self.n_in, t_sched_s=t) for t in self.times_s[:n]]

    def describe(self) -> dict:
        return {"kind": "timed"}


BURSTY = [0.0, 0.01, 0.02, 0.3, 0.31, 0.6, 0.6, 0.6, 0.9, 1.2]


@pytest.mark.slow
@pytest.mark.parametrize("workers", [0, 2])
def test_a_trace_load_sends_each_request_at_its_timestamp(workers):
    with FakeServer(FakeServerConfig(ttft_s=0.005, itl_s=0.002), mode="thread") as srv:
        pr = run_point_sync(LoadJob(srv.base_url, "fake-model", Timed(BURSTY), {"kind": "trace"}, 0, 1000,
                                    workers=workers))
    meas = sorted(pr.measured, key=lambda r: r.request_id)
    assert len(meas) == len(BURSTY) and all(r.ok for r in meas)  # a short trace is replayed whole
    sched = np.asarray([r.t_sched for r in meas])
    assert sched - sched[0] == pytest.approx(BURSTY, abs=1e-9)  # the trace's own schedule
    lag = np.asarray([r.schedule_lag_s for r in meas])
    assert lag.min() >= -0.002 and np.median(np.abs(lag)) < 0.003  # event-loop timers fire to about 1 ms
    m = summarize(pr.records, (pr.window_t0_s, pr.window_t1_s), 1)
    assert m.schedule_lag_s_p99 is not None and pr.target_rate_rps is None
    assert (pr.window_t0_s, pr.window_t1_s) == (min(r.t_send for r in meas), max(r.t_send for r in meas))
    if workers:
        assert {r.worker for r in meas} == {0, 1}


@pytest.mark.slow
def test_a_stalling_server_grows_latency_from_the_schedule_not_from_the_send():
    """Coordinated omission: capped at 1 in flight, each request waits for the one before;
    TTFT from the actual send stays the server's 0.2 s, TTFT from the schedule grows."""
    load = {"kind": "rate", "rate_rps": 20.0, "max_concurrency": 1}
    with FakeServer(FakeServerConfig(ttft_s=0.2, itl_s=0.001), mode="thread") as srv:
        pr = run_point_sync(LoadJob(srv.base_url, "fake-model", RandomPrompts(8, 2, 500, seed=1), load, 0, 8))
    meas = sorted(pr.measured, key=lambda r: r.request_id)
    sent = np.asarray([r.ttft_s for r in meas])
    sched = np.asarray([r.ttft_sched_s for r in meas])
    assert np.all((sent > 0.19) & (sent < 0.3))
    assert np.all(np.diff(sched) > 0.1) and sched[-1] > 1.0  # the backlog shows
    m = summarize(pr.records, (pr.window_t0_s, pr.window_t1_s), 1)
    assert m.ttft_sched_s_p99 > 5 * m.ttft_s_p99 and m.schedule_lag_s_p99 > 1.0
    # the cap made the client wait on purpose: not "behind schedule"
    reasons = check_validity(m, parse_load(pr.load), pr).reasons
    assert not any("behind schedule" in r for r in reasons)


@pytest.mark.slow
def test_a_client_that_falls_behind_an_uncapped_schedule_is_invalid():
    def busy(info):  # runs on the in-process event loop: blocks it, as a starved client would be
        time.sleep(0.03)

    with FakeServer(FakeServerConfig(ttft_s=0.002, itl_s=0.001), mode="thread") as srv:
        pr = run_point_sync(LoadJob(srv.base_url, "fake-model", Timed([0.01 * i for i in range(40)]),
                                    {"kind": "trace"}, 0, 40, progress=busy))
    m = summarize(pr.records, (pr.window_t0_s, pr.window_t1_s), 1)
    reasons = check_validity(m, parse_load(pr.load), pr).reasons
    assert m.schedule_lag_s_p99 > 0.01
    assert any(r.startswith("client behind schedule: send lag p99") for r in reasons), reasons


@pytest.mark.slow
def test_closed_loops_have_no_schedule_and_a_trace_load_needs_timestamps():
    with FakeServer(FakeServerConfig(ttft_s=0.002, itl_s=0.001), mode="thread") as srv:
        pr = run_point_sync(LoadJob(srv.base_url, "fake-model", RandomPrompts(8, 2, 500), {"kind": "concurrency",
                                    "concurrency": 2}, 0, 6))
        assert all(r.t_sched is None and r.ttft_sched_s is None for r in pr.records)
        assert summarize(pr.records, (pr.window_t0_s, pr.window_t1_s), 1).ttft_sched_s_p50 is None
        with pytest.raises(ConfigError, match="trace workload's timestamps"):
            run_point_sync(LoadJob(srv.base_url, "fake-model", RandomPrompts(8, 2, 500), {"kind": "trace"}, 0, 6))


@pytest.mark.slow
def test_a_mooncake_replay_shows_the_server_identical_prefixes_exactly_where_hash_ids_repeat():
    import json
    from pathlib import Path

    from bench.load.traces import TraceReplay

    path = Path(__file__).parent / "data" / "traces" / "mooncake_sample.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()][:24]
    replay = TraceReplay(str(path), "mooncake", 32000, seed=5, speedup=50.0, limit=24)
    cfg = FakeServerConfig(ttft_s=0.002, itl_s=0.001, record_prompts=True)
    with FakeServer(cfg, mode="thread") as srv:
        pr = run_point_sync(LoadJob(srv.base_url, "fake-model", replay, {"kind": "trace"}, 0, 24, workers=2))
        emits = srv.emits()
    assert all(r.ok for r in pr.records) and len(pr.records) == 24
    seen = {r.request_id: emits[f"{pr.client.request_id_prefix}-{r.request_id}"]["prompt"] for r in pr.records}
    blocks = {}  # hash id -> the token ids the server received for that block
    shared = 0
    for i, row in enumerate(rows):
        ids = seen[i]
        assert len(ids) == row["input_length"] and pr.records[i].n_in == row["input_length"]
        for j, h in enumerate(row["hash_ids"]):
            block = tuple(ids[j * 512:(j + 1) * 512])
            if h in blocks:
                shared += 1
                full, part = (blocks[h], block) if len(blocks[h]) >= len(block) else (block, blocks[h])
                assert full[:len(part)] == part  # the same hash id: the same tokens (a last block may be partial)
            else:
                for other, tokens in blocks.items():  # a new hash id never repeats another's block
                    assert tokens[:8] != block[:8], (h, other)
                blocks[h] = block
    assert shared >= 5  # the sample shares prefixes, so the check above ran
    sched = np.asarray(sorted(r.t_sched for r in pr.records))
    times = np.asarray([row["timestamp"] for row in rows], dtype=float) / 1e3 / 50.0
    assert sched - sched[0] == pytest.approx(times - times[0], abs=1e-9)
