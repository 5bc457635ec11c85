"""The load in client worker processes: merge, global schedules, a dying worker, Ctrl-C."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest

from bench.load import team as T
from bench.load import workers as W
from bench.load.arrivals import arrival_offsets_s
from bench.load.driver import run_point_sync
from bench.load.types import LoadJob
from bench.load.workload import RandomPrompts
from bench.testing.fake_server import FakeServer, FakeServerConfig

FAST = FakeServerConfig(ttft_s=0.01, itl_s=0.002)


def _counters(srv) -> dict:
    values = {line.split("{")[0]: float(line.rsplit(" ", 1)[1]) for line in srv.metrics_text().splitlines()
              if line.startswith("vllm:")}
    return {"generation_tokens": values["vllm:generation_tokens_total"],
            "prompt_tokens": values["vllm:prompt_tokens_total"]}


@pytest.fixture
def teams(monkeypatch):
    """Every Team the driver makes (its worker processes), for tests that reach into them."""
    made = []
    init = T.Team.__init__

    def spy(self, *a, **kw):
        init(self, *a, **kw)
        made.append(self)

    monkeypatch.setattr(T.Team, "__init__", spy)
    return made


@pytest.mark.slow
def test_two_workers_merge_into_one_closed_loop_with_exact_token_counts(teams):
    wl = RandomPrompts(12, 8, 500, seed=3)
    with FakeServer(FAST, mode="thread") as srv:
        pr = run_point_sync(LoadJob(srv.base_url, FAST.model, wl, {"kind": "concurrency", "concurrency": 6}, 6, 60,
                                    workers=2))
        counts = _counters(srv)
        emits = srv.emits()
    assert [r.request_id for r in pr.records] == list(range(66))  # request order, warm-up first, none lost
    assert all(r.ok for r in pr.records), [r.error for r in pr.records if not r.ok]
    assert {r.worker for r in pr.measured} == {0, 1}  # both workers sent measured requests
    assert pr.client_token_counts() == counts == {"generation_tokens": 66 * 8, "prompt_tokens": 66 * 12}
    assert set(emits) == {f"{pr.client.request_id_prefix}-{r.request_id}" for r in pr.records}
    # one global closed loop: 6 in flight over both workers, the window from the 6th send to the last
    meas = pr.measured
    assert pr.max_in_flight == 6 and pr.target_reached
    assert pr.window_t1_s == max(r.t_send for r in meas)
    assert pr.window_t0_s == sorted(r.t_send for r in meas)[5]
    assert all(r.t_done >= (r.t_last or r.t_send) for r in pr.records)
    assert max(r.t_last for r in pr.records if r.phase == "warmup") < min(r.t_send for r in meas)  # barrier
    # each worker watched itself; the point's figures are the worst worker's
    assert pr.client.n_workers == 2 and [w.index for w in pr.loops] == [0, 1]
    assert len({w.pid for w in pr.loops} | {os.getpid()}) == 3  # two processes, not this one
    worst = max(pr.loops, key=lambda w: w.loop_lag_s_p99)
    assert pr.worst_loop == worst
    assert pr.cpu_busy_cores == pytest.approx(sum(w.cpu_share for w in pr.loops))
    assert all(not p.is_alive() for p in teams[0].procs.values())


@pytest.fixture(scope="module")
def rate_server():
    """A fake server in its own process (its CPU is not this one's), shared by the seeds: they only send to it."""
    with FakeServer(FakeServerConfig(ttft_s=0.003, itl_s=0.001), mode="process") as srv:
        yield srv


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_rate_load_over_two_workers_keeps_the_global_arrival_schedule(seed, rate_server):
    rate, n, burst = 150.0, 240, 0.5
    load = {"kind": "rate", "rate_rps": rate, "arrival": "gamma", "burstiness": burst}
    wl = RandomPrompts(8, 4, 500, seed=seed)
    pr = run_point_sync(LoadJob(rate_server.base_url, FAST.model, wl, load, 0, n, workers=2, seed=seed))
    meas = sorted(pr.measured, key=lambda r: r.request_id)
    assert all(r.ok for r in meas) and {r.worker for r in meas} == {0, 1}
    assert [r.worker for r in meas[:4]] == [0, 1, 0, 1]  # every other arrival of one schedule
    planned = arrival_offsets_s(n, rate, "gamma", burst, seed)
    sched = np.asarray([r.t_sched for r in meas])
    assert sched - sched[0] == pytest.approx(planned, abs=1e-9)  # exactly the planned schedule, over both workers
    late = np.asarray([r.t_send for r in meas]) - sched
    # sends keep to it: the median is the event-loop timer's accuracy (about 1 ms); the tail is
    # the host's scheduling (a 2-core box at load 5-6 from parallel suites: p95 29 ms)
    assert np.median(np.abs(late)) < 0.004 and np.percentile(np.abs(late), 95) < 0.05
    sent = np.asarray([r.t_send for r in meas])
    gaps = np.diff(np.sort(sent))
    assert gaps.mean() == pytest.approx(1 / rate, rel=0.2)
    assert gaps.std() / gaps.mean() == pytest.approx(1 / np.sqrt(burst), rel=0.3)  # the dispersion of gamma(0.5)


@pytest.mark.slow
def test_a_worker_that_dies_mid_point_fails_it_and_the_others_records_are_kept(teams):
    wl = RandomPrompts(8, 16, 500, seed=1)
    killed = []

    def progress(info):
        if info["done"] >= 10 and not killed:
            pid = teams[0].procs[1].pid
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    with FakeServer(FakeServerConfig(ttft_s=0.005, itl_s=0.004), mode="thread") as srv:
        with pytest.raises(W.ClientWorkerDied) as err:
            run_point_sync(LoadJob(srv.base_url, FAST.model, wl, {"kind": "concurrency", "concurrency": 4}, 0, 400,
                                   workers=2, progress=progress))
        emits = srv.emits()
    assert f"client worker 1 (pid {killed[0]}) died mid-point: exit code -9" in str(err.value)
    kept = err.value.records
    assert kept and {r.worker for r in kept} == {0}  # worker 0's records came back
    assert all(r.t_done is not None for r in kept) and sum(r.ok for r in kept) >= len(kept) - 2
    prefix = next(iter(emits)).rsplit("-", 1)[0]
    assert {f"{prefix}-{r.request_id}" for r in kept} <= set(emits)
    assert len(kept) < 400  # the point stopped early instead of running on with half its slots
    assert all(not p.is_alive() for p in teams[0].procs.values())


def _bounded(fn, timeout_s: float):
    """fn() on a thread; (finished, its result or exception). A hang fails the caller instead of hanging it."""
    import threading

    out = {}

    def run():
        try:
            out["value"] = fn()
        except BaseException as e:  # noqa: BLE001  handed to the test
            out["value"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout_s)
    return not t.is_alive(), out.get("value")


@pytest.mark.slow
def test_a_frozen_worker_is_given_up_after_its_silence_and_the_others_never_wait_on_it(teams, monkeypatch):
    """Issue 18: a worker stopped (SIGSTOP) in the middle of the measured phase holds nothing the
    others need: they go on taking requests, and the orchestrator kills it after WORKER_SILENT_S
    of silence and fails the point with the others' records (base: the point never ended)."""
    monkeypatch.setattr(T, "WORKER_SILENT_S", 1.0)
    wl = RandomPrompts(8, 16, 500, seed=2)
    frozen = {}

    def progress(info):
        if info["done"] >= 10 and not frozen:
            frozen["pid"], frozen["t"] = teams[0].procs[1].pid, time.perf_counter()
            os.kill(frozen["pid"], signal.SIGSTOP)

    with FakeServer(FakeServerConfig(ttft_s=0.005, itl_s=0.004), mode="thread") as srv:
        try:
            job = LoadJob(srv.base_url, FAST.model, wl, {"kind": "concurrency", "concurrency": 4}, 0, 2000,
                          workers=2, progress=progress)
            ended, err = _bounded(lambda: run_point_sync(job), 30.0)
        finally:
            for p in teams[0].procs.values():
                if p.is_alive():
                    p.kill()
    assert ended, "the point did not end within 30 s of a worker's freeze"
    assert isinstance(err, W.ClientWorkerDied), err
    assert f"client worker 1 (pid {frozen['pid']}) died mid-point: no word from it for 1 s" in str(err)
    kept = err.records
    assert kept and {r.worker for r in kept} == {0}
    # worker 0 kept taking requests while worker 1 was frozen: nothing of the frozen one blocked it
    assert sum(1 for r in kept if r.t_send > frozen["t"] + 0.2) >= 4
    assert len(kept) < 2000


def test_a_worker_reaching_a_barrier_after_a_death_is_released(teams, monkeypatch):
    """Workers 1 and 2 are frozen at start; worker 0 waits at the warm-up barrier; worker 1 is
    killed; once the orchestrator has seen the death, worker 2 goes on and reaches the barrier.
    It must be released (found by scripts/worker_kill_check.py: only workers already waiting were
    released, so worker 2 waited for a "go" forever while the orchestrator waited for worker 0,
    released and gone on to the measured barrier, to be "at warmup"; the base had the same rule)."""
    import threading

    start = T.Team.start

    def start_and_freeze(self):
        start(self)
        for k in (1, 2):
            os.kill(self.procs[k].pid, signal.SIGSTOP)

    monkeypatch.setattr(T.Team, "start", start_and_freeze)
    state = {}

    def wait_for(cond, what):
        deadline = time.monotonic() + 30
        while not cond():
            assert time.monotonic() < deadline, what
            time.sleep(0.005)  # the poll period of a bounded wait on the orchestrator's state

    def kill_1_then_free_2():
        wait_for(lambda: teams and teams[0].at.get(0) == "warmup", "worker 0 never reached the warm-up barrier")
        os.kill(teams[0].procs[1].pid, signal.SIGKILL)
        wait_for(lambda: teams[0].dead, "the orchestrator never saw worker 1 die")
        os.kill(teams[0].procs[2].pid, signal.SIGCONT)
        state["done"] = True

    with FakeServer(FAST, mode="thread") as srv:
        killer = threading.Thread(target=kill_1_then_free_2, daemon=True)
        killer.start()
        try:
            job = LoadJob(srv.base_url, FAST.model, RandomPrompts(8, 4, 500, seed=3),
                          {"kind": "concurrency", "concurrency": 3}, 6, 60, workers=3)
            finished, err = _bounded(lambda: run_point_sync(job), 30.0)
            killer.join(30)
        finally:
            for p in (teams[0].procs.values() if teams else []):
                if p.is_alive():
                    os.kill(p.pid, signal.SIGCONT)
                    p.kill()
    assert state.get("done"), "the faults were not injected in order"
    assert finished, "the point did not end within 30 s of the death"
    assert isinstance(err, W.ClientWorkerDied) and "client worker 1 " in str(err) and "exit code -9" in str(err)
    assert set(teams[0].records) == {0, 2}  # both survivors sent their records back


@pytest.mark.slow
def test_the_worker_kill_check_reports_no_hang():
    """scripts/worker_kill_check.py, a few kills at random moments (the lead runs 200): every point
    ends within its bound, failed with the others' records (base: a kill inside the shared
    counter's or stop event's lock hung the point; a kill just before a barrier's "go" raised
    BrokenPipeError out of the point)."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "worker_kill_check.py"
    done = subprocess.run([sys.executable, str(script), "--kills", "2", "--seed", "7", "--bound-s", "30",
                           "--max-trials", "20"], check=False, capture_output=True, text=True, timeout=300)
    last = (done.stdout.strip().splitlines() or [""])[-1]
    assert done.returncode == 0 and last.startswith("kills: 2, hangs: 0, wrong outcomes: 0"), done.stdout[-2000:]


@pytest.mark.slow
def test_the_feed_hands_every_index_to_exactly_one_reader_and_tops_up_a_small_pipe(monkeypatch):
    """The pipe that replaced the locked counter (bench.load.feed): 3 readers with 8 slots each
    take 60,000 indices through a 64 KiB pipe (16,384 at a time, the rest topped up)."""
    import asyncio
    import fcntl
    import threading

    from bench.load import feed as F

    monkeypatch.setattr(F, "_grow", lambda fd, wanted_bytes: fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ))
    n = 60_000
    feed = F.IndexFeed(5, 5 + n)
    assert feed.pipe_bytes * 2 < n * F.RECORD_BYTES
    taken: list[list[int]] = [[] for _ in range(3)]

    def reader(k: int) -> None:
        work = F.PipeWork({5: feed.reader})

        async def slot() -> None:
            while (i := work.take()) is not None:
                if i == F.WAIT:
                    await asyncio.wait_for(work.more(), 10.0)
                else:
                    taken[k].append(i)
                    await asyncio.sleep(0)

        async def main() -> None:
            work.start(5, 5 + n)
            await asyncio.gather(*(slot() for _ in range(8)))

        asyncio.run(main())

    threads = [threading.Thread(target=reader, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads)
    got = sorted(i for part in taken for i in part)
    assert got == list(range(5, 5 + n))  # each exactly once, none lost, then end of file for all
    assert all(taken)  # every reader took some
    feed.close()


def test_a_reader_waits_for_more_when_the_feed_is_empty_but_open():
    import asyncio
    from multiprocessing import connection

    from bench.load import feed as F

    r, w = os.pipe()
    work = F.PipeWork({0: connection.Connection(r, writable=False)})
    os.write(w, np.array([7, 8], dtype="<u4").tobytes())

    async def main() -> list:
        work.start(0, 3)
        got = [work.take(), work.take(), work.take()]  # two queued, then nothing yet
        asyncio.get_running_loop().call_soon(os.write, w, np.array([9], dtype="<u4").tobytes())
        await asyncio.wait_for(work.more(), 5.0)
        got.append(work.take())
        asyncio.get_running_loop().call_soon(os.close, w)
        await asyncio.wait_for(work.more(), 5.0)  # the end of file wakes it too
        return got + [work.take()]

    assert asyncio.run(main()) == [7, 8, F.WAIT, 9, None]


def test_a_stopped_feed_ends_the_phase_for_every_reader():
    from bench.load import feed as F

    feed = F.IndexFeed(0, 10)
    work = F.PipeWork({0: feed.reader})
    work.start(0, 10)
    assert [work.take() for _ in range(3)] == [0, 1, 2]
    feed.stop()  # queued indices stay readable; nothing more is queued
    assert [work.take() for _ in range(8)] == [3, 4, 5, 6, 7, 8, 9, None]
    feed.close()


@pytest.mark.slow
def test_ctrl_c_ends_every_worker(teams):
    wl = RandomPrompts(8, 64, 500, seed=1)

    def progress(info):
        if info["done"] >= 4:
            raise KeyboardInterrupt

    t0 = time.monotonic()
    with FakeServer(FakeServerConfig(ttft_s=0.005, itl_s=0.01), mode="thread") as srv:
        with pytest.raises(KeyboardInterrupt):
            run_point_sync(LoadJob(srv.base_url, FAST.model, wl, {"kind": "concurrency", "concurrency": 4}, 0, 200,
                                   workers=2, progress=progress))
    assert time.monotonic() - t0 < 10
    procs = teams[0].procs.values()
    assert len(procs) == 2 and all(not p.is_alive() for p in procs)


def test_a_bad_url_fails_before_any_worker_starts(teams):
    with pytest.raises(ValueError, match="the client speaks http and https, not 'ftp'"):
        run_point_sync(LoadJob("ftp://127.0.0.1:9", "m", RandomPrompts(4, 4, 100),
                               {"kind": "concurrency", "concurrency": 1}, 0, 2, workers=1))
    assert not teams  # nothing was started


def test_an_error_inside_a_worker_reaches_the_orchestrator_in_one_line():
    import multiprocessing as mp

    from bench.load.client import ClientConfig

    job = W.WorkerJob(0, 1, "http://127.0.0.1:9", "m", ClientConfig(), "tag", [("measured", 4, 4)],
                      "bench-no-such-block", [0, 1], {"kind": "concurrency", "concurrency": 1}, 0, [], False)
    parent, child = mp.Pipe()
    handler = signal.getsignal(signal.SIGINT)
    try:
        W._worker_main(job, child, None, {}, mp.RawValue("b", 0))  # in this process: it ignores SIGINT
    finally:
        signal.signal(signal.SIGINT, handler)
    kind, text = parent.recv()
    assert kind == "error" and text.startswith("FileNotFoundError:") and "\n" not in text


@pytest.mark.parametrize("load,n,cores,expected", [
    ({"kind": "concurrency", "concurrency": 16}, 100, 2, 1),  # the 2-core reference machine: one worker
    ({"kind": "concurrency", "concurrency": 1024}, 4096, 16, 4),
    ({"kind": "concurrency", "concurrency": 4096}, 8192, 64, 16),
    ({"kind": "concurrency", "concurrency": 4096}, 8192, 8, 3),  # capped by the cores
    ({"kind": "concurrency", "concurrency": 2}, 100, 64, 1),
    ({"kind": "rate", "rate_rps": 50.0, "max_concurrency": 600}, 1000, 32, 3),
    ({"kind": "rate", "rate_rps": 50.0}, 200, 32, 1),
])
def test_worker_count_follows_the_load_and_the_cores(load, n, cores, expected):
    assert W.choose_workers(load, n, cores=cores) == expected


def test_shared_bodies_round_trip_and_unlink():
    bodies = [b"", b"abc", bytes(range(256)), b"x" * 10_000]
    shared = W.SharedBodies.create(bodies)
    other = W.SharedBodies(shared.shm.name, shared.offsets)
    assert [other[i] for i in range(len(other))] == bodies
    other.close()
    shared.close(unlink=True)
    with pytest.raises(FileNotFoundError):
        W.SharedBodies(shared.shm.name, shared.offsets)


def _runner_plan(url: str, n_requests: list[int]):
    """One point per entry of `n_requests` (a point stopped by the test is long enough not to end
    first; one that must run through is short)."""
    from bench.plan import EngineConfig, Plan, PointSpec

    cfg = EngineConfig(model="tiny-llama", engine="endpoint", endpoint_url=url)
    points = [PointSpec(point_id=f"p{i}_c4", engine_config_id=cfg.config_id(),
                        workload={"kind": "random", "input_len": 8, "output_len": 16},
                        load={"kind": "concurrency", "concurrency": 4}, n_warmup=0, n_requests=n)
              for i, n in enumerate(n_requests)]
    return Plan(engine_configs=[cfg], points=points, name="workers", n_devices=1, telemetry="none")


def _runner_env(workers: int):
    from bench.run.environment import RunEnvironment
    from bench.testing.fake_device import fake_device

    return RunEnvironment(device=fake_device("cpu", name="test"), idle_baseline_s=0.0, client_workers=workers)


@pytest.mark.slow
def test_in_a_run_a_dead_worker_fails_its_point_and_the_next_point_runs(teams, tmp_path):
    from bench.results import read_requests, read_summary
    from bench.run.events import RequestsDone
    from bench.run.runner import execute

    def kill_worker_1(event):
        if isinstance(event, RequestsDone) and event.done >= 8 and len(teams) == 1 and teams[0].procs[1].is_alive():
            os.kill(teams[0].procs[1].pid, signal.SIGKILL)

    with FakeServer(FakeServerConfig(ttft_s=0.005, itl_s=0.004), mode="thread") as srv:
        result = execute(_runner_plan(srv.base_url, [200, 24]), tmp_path, _runner_env(2), on_event=kill_worker_1)
    first, second = result.points
    assert first.status == "failed" and "client worker 1" in first.error and "died mid-point" in first.error
    assert second.status == "ok" and second.client.n_workers == 2  # same engine, fresh workers
    kept = read_requests(tmp_path, first)
    assert kept and {r.worker for r in kept} == {0} and first.n_requests == len(kept)
    assert read_summary(tmp_path).status == "partial"


@pytest.mark.slow
def test_ctrl_c_in_a_run_ends_every_worker_and_keeps_the_finished_point(teams, tmp_path):
    from bench.results import read_summary
    from bench.run.events import RequestsDone
    from bench.run.runner import execute

    def interrupt_second_point(event):
        if isinstance(event, RequestsDone) and len(teams) == 2 and event.done >= 4:
            raise KeyboardInterrupt

    with FakeServer(FakeServerConfig(ttft_s=0.005, itl_s=0.004), mode="thread") as srv:
        with pytest.raises(KeyboardInterrupt):
            execute(_runner_plan(srv.base_url, [24, 100]), tmp_path, _runner_env(2), on_event=interrupt_second_point)
    run = read_summary(tmp_path)
    assert run.status == "interrupted" and [p.status for p in run.points] == ["ok"]
    assert all(not p.is_alive() for team in teams for p in team.procs.values())
