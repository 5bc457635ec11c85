"""Fleets never re-measure: a store that goes down at the end of a local-backend fleet (a
moto S3 server of this test's own, stopped and started again on the same port).

- Back within the retry window: the shard's final publish retries and succeeds; one attempt.
- Down past it: the shard leaves its run complete on this machine and says how to publish
  it; the relaunch publishes that run and measures nothing (the fake server's request count).
- A shard killed by SIGKILL alone (not its session): its `bench sweep` stops with it.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket

import pytest
from click.testing import CliRunner
from test_fleet_local import SLOW, wait_for

from bench.cli import cli
from bench.fleet import control, state
from bench.fleet.backends.local import LocalBackend, session_pids
from bench.store import Store
from bench.testing.fake_server import FakeServer

N_POINTS, PER_POINT = 3, 5  # concurrency 1..3; 4 measured requests + 1 warm-up each


class StoppableS3:
    """A moto S3 server of one test, on a fixed loopback port, that can go down and come back
    (moto keeps its buckets in this process, so they survive the restart)."""

    def __init__(self):
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self._cls = ThreadedMotoServer
        self.server = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self):
        self.server = self._cls(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()

    def stop(self):
        if self.server is not None:
            self.server.stop()
            self.server = None


@pytest.fixture
def outage_s3(monkeypatch, tmp_path):
    """(store URL, server): a bucket on a server of this test's own. Each store call tries once
    (botocore's `max_attempts` counts retries after the first try: 0 is none; 1 would add a
    retry after up to a second's backoff to every call the outage refuses), so a refused
    connection fails in milliseconds."""
    import uuid

    server = StoppableS3()
    server.start()
    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
                 "BENCH_S3_ENDPOINT_URL": server.endpoint, "BENCH_CACHE_DIR": str(tmp_path / "cache"),
                 "BENCH_STORE_OPTIONS": json.dumps({"config_kwargs": {"retries": {"max_attempts": 0}}})}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    bucket = f"outage-{uuid.uuid4().hex[:10]}"
    Store(f"s3://{bucket}").fs.mkdir(bucket)
    try:
        yield f"s3://{bucket}/shared", server
    finally:
        server.stop()


def sweep_file(tmp_path, url: str, concurrency=(1, 2, 3)):
    path = tmp_path / "outage.yaml"
    path.write_text(f"""name: outage
models: [tiny-llama]
engine: endpoint
endpoint_url: {url}
workloads: [{{kind: random, input_len: 8, output_len: 16}}]
loads: [{{kind: concurrency, concurrency: {list(concurrency)}}}]
n_requests: 4
n_warmup: 1
telemetry: none
client_workers: 1
""")
    return path


def invoke(*args):
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


class LocalShard:
    """The one shard of a local fleet, read from this machine (the store may be down)."""

    def __init__(self, work, fleet_id: str):
        [self.folder] = [p for p in (work / fleet_id).iterdir() if p.is_dir()]
        self.shard_id = self.folder.name

    @property
    def pid(self) -> int:
        return json.loads((self.folder / "launch.json").read_text())["pid"]

    def log(self) -> str:
        return (self.folder / "shard.log").read_text(errors="replace")

    def runs(self) -> list[dict]:
        """Every run.json of every attempt here."""
        return [json.loads(p.read_text()) for p in sorted(self.folder.glob("*/*/*/run.json"))]

    def points_done(self) -> int:
        return max((sum(p["status"] == "ok" for p in r["points"]) for r in self.runs()), default=0)

    def gone(self) -> bool:
        return not session_pids(self.pid)


def launch(sweep, store_url, work) -> str:
    out = invoke("fleet", "launch", str(sweep), "--store", store_url, "--work-dir", str(work))
    return out.split()[1].rstrip(":")


def shard_state(store_url: str, fleet_id: str, work):
    """The shard's state as `bench fleet status --work-dir WORK` reads it."""
    store = Store(store_url)
    record = control.one_record(store, fleet_id)
    [st] = state.fleet_states(store, record, LocalBackend(work).status(record, record.shard_ids()))
    return st


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_the_final_publish_retries_through_a_short_store_outage(tmp_path, outage_s3, monkeypatch):
    store_url, s3 = outage_s3
    monkeypatch.setenv("BENCH_FLEET_PUBLISH_RETRY_S", "180")
    work = tmp_path / "work"
    with FakeServer(SLOW) as srv:
        fleet_id = launch(sweep_file(tmp_path, srv.base_url), store_url, work)
        shard = wait_for(lambda: (work / fleet_id).is_dir() and LocalShard(work, fleet_id), 30, "the shard's folder")
        wait_for(lambda: shard.points_done() >= 1, 120, "a first point")
        s3.stop()  # the rest of the run, its last mirror copy and its publish meet a store that is down
        wait_for(lambda: "publish failed, retrying" in shard.log() or shard.gone(), 120, "the first failed publish")
        assert not shard.gone(), shard.log()[-3000:]
        s3.start()
        wait_for(shard.gone, 180, "the shard to publish and exit")
        measured = srv.counters()["n_requests"]
    st = shard_state(store_url, fleet_id, work)
    assert st.state == "done", (st.detail, shard.log()[-3000:])
    assert measured == N_POINTS * PER_POINT  # every point measured once
    run = Store(store_url).read_checked_run(st.status.run_id)
    assert [p.status for p in run.points] == ["ok"] * N_POINTS
    assert f"{shard.shard_id}: failed:" not in shard.log()
    assert "different content" not in shard.log()  # an unreachable store is said as such
    assert len(list(shard.folder.glob("*/attempt.json"))) == 1  # one attempt


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_store_down_past_the_retry_window_re_measures_nothing(tmp_path, outage_s3, monkeypatch):
    store_url, s3 = outage_s3
    monkeypatch.setenv("BENCH_FLEET_PUBLISH_RETRY_S", "1")  # one retry, then it gives up
    work = tmp_path / "work"
    with FakeServer(SLOW) as srv:
        sweep = sweep_file(tmp_path, srv.base_url)
        fleet_id = launch(sweep, store_url, work)
        shard = wait_for(lambda: (work / fleet_id).is_dir() and LocalShard(work, fleet_id), 30, "the shard's folder")
        wait_for(lambda: shard.points_done() >= 1, 120, "a first point")
        s3.stop()
        wait_for(shard.gone, 180, "the shard to give up")
        log = shard.log()
        [local] = [r for r in shard.runs() if r["status"] == "complete"]
        measured = srv.counters()["n_requests"]
        assert measured == N_POINTS * PER_POINT, log[-3000:]
        said = [line for line in log.splitlines() if "publish later with: bench upload" in line]
        assert len(said) == 1 and f"--to {store_url}" in said[0], log[-3000:]

        s3.start()
        assert shard_state(store_url, fleet_id, work).state == "failed"
        out = invoke("fleet", "launch", str(sweep), "--store", store_url, "--work-dir", str(work))
        assert "1 to submit (0 done, 0 running)" in out
        wait_for(lambda: shard_state(store_url, fleet_id, work).state == "done", 120, "the relaunch to publish")
        assert srv.counters()["n_requests"] == measured  # the relaunch measured nothing
    st = shard_state(store_url, fleet_id, work)
    run = Store(store_url).read_checked_run(st.status.run_id)
    assert run.run_id == local["run_id"]
    assert {p.point_id: p.started_utc for p in run.points} == {p["point_id"]: p["started_utc"] for p in local["points"]}
    assert "publishing the complete run" in shard.log()


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_killed_shard_stops_its_sweep(tmp_path, outage_s3):
    """SIGKILL of the shard process alone: its `bench sweep` child is sent SIGTERM by the
    kernel (parent-death signal) and ends `interrupted`, its finished points kept."""
    store_url, _ = outage_s3
    work = tmp_path / "work"
    with FakeServer(SLOW) as srv:
        fleet_id = launch(sweep_file(tmp_path, srv.base_url, concurrency=(1, 2, 3, 4, 5, 6, 7, 8)), store_url, work)
        shard = wait_for(lambda: (work / fleet_id).is_dir() and LocalShard(work, fleet_id), 30, "the shard's folder")
        wait_for(lambda: shard.points_done() >= 1, 120, "a first point")
        pid = shard.pid
        os.kill(pid, signal.SIGKILL)  # the shard alone, not its session
        wait_for(shard.gone, 60, "every process of the killed shard's session to end")
    [run] = shard.runs()
    assert run["status"] == "interrupted", (run["status"], run.get("error"))
    assert 1 <= sum(p["status"] == "ok" for p in run["points"]) < 8
