"""The local fleet backend end to end: two shards (two engine configurations of the endpoint
engine against a fake server) run as detached processes on this box and publish to a real
S3 API (moto's server on loopback); one shard is killed mid-run (SIGKILL of its whole
session), shows as failed, and a relaunch submits only that one, which resumes from its
partial run in the store without losing or re-measuring a finished point."""

from __future__ import annotations

import json
import signal
import time

import pytest
from click.testing import CliRunner

from bench.cli import cli
from bench.fleet import control
from bench.fleet.backends.local import kill_session, session_pids
from bench.store import Store
from bench.testing.fake_server import FakeServer, FakeServerConfig

# 16 output tokens at 25 ms: 0.4 s a request; each point takes 1-2 s, a shard about 6 s.
SLOW = FakeServerConfig(ttft_s=0.02, itl_s=0.025)


def sweep_file(tmp_path, url: str):
    path = tmp_path / "fleet-e2e.yaml"
    path.write_text(f"""name: fleet-e2e
models: [tiny-llama]
engine: endpoint
endpoint_url: {url}
engine_args: {{max_num_seqs: [4, 8]}}   # two engine configurations: two shards
workloads: [{{kind: random, input_len: 8, output_len: 16}}]
loads: [{{kind: concurrency, concurrency: [1, 2, 3, 4]}}]
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


def states(store_url: str, fleet_id: str, work) -> dict[str, object]:
    """Each shard's state as `bench fleet status --work-dir WORK` reads it."""
    store = Store(store_url)
    record = control.one_record(store, fleet_id)
    backend = control.user_backend(fleet_id, work_dir=str(work))
    return {s.shard.shard_id: s for s in control.status(store, record, backend)}


def wait_for(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


@pytest.mark.slow
def test_two_shards_one_killed_and_relaunched(tmp_path, s3_url):
    work = tmp_path / "work"
    with FakeServer(SLOW) as srv:
        sweep = sweep_file(tmp_path, srv.base_url)
        common = ["--store", s3_url, "--work-dir", str(work)]
        out = invoke("fleet", "plan", str(sweep), *common, "--parallel", "2")
        assert "2 shards" in out and "launch would submit 2 of 2 shards" in out
        out = invoke("fleet", "launch", str(sweep), *common, "--parallel", "2")
        assert "2 to submit (0 done, 0 running)" in out
        fleet_id = out.split()[1].rstrip(":")
        a, b = sorted(states(s3_url, fleet_id, work))

        # kill shard a (its whole session) once its first point is mirrored to the store
        def a_has_a_point():
            st = states(s3_url, fleet_id, work)[a].status
            return st is not None and 1 <= st.points_done < 4
        wait_for(a_has_a_point, 120, "shard a to finish a point")
        pid = json.loads((work / fleet_id / a / "launch.json").read_text())["pid"]
        assert kill_session(pid, signal.SIGKILL) >= 2  # the shard and its `bench sweep`
        wait_for(lambda: not session_pids(pid), 10, "the killed session to end")
        partial = _mirrored_points(s3_url, fleet_id, a)
        assert partial, "nothing of shard a was mirrored before the kill"

        killed = states(s3_url, fleet_id, work)[a]
        assert killed.state == "failed" and killed.detail.startswith("lost:"), killed
        wait_for(lambda: states(s3_url, fleet_id, work)[b].state == "done", 120, "shard b to finish")

        out = invoke("fleet", "status", "--store", s3_url, "--work-dir", str(work))
        assert "1 done, 0 running" in out and "1 failed" in out

        out = invoke("fleet", "launch", str(sweep), *common, "--parallel", "2")
        assert "1 to submit (1 done, 0 running)" in out and a in out and b not in out.split("to submit")[1]
        done = wait_for(lambda: all(s.state == "done" for s in states(s3_url, fleet_id, work).values()) and
                        states(s3_url, fleet_id, work), 180, "both shards done")

    out = invoke("fleet", "status", "--store", s3_url, "--fleet", fleet_id, "--work-dir", str(work))
    assert "2 done, 0 running, 0 failed, 0 missing" in out
    store = Store(s3_url)
    run_a = store.read_checked_run(done[a].status.run_id)
    assert [p.status for p in run_a.points] == ["ok"] * 4
    # the SIGKILL reaches the sweep either first (its run is left running: stale) or after the
    # parent-death SIGTERM of its guard (it ended its run as interrupted); either way it resumes
    assert run_a.extra["resumed_from"] in (["stale (process gone)"], ["interrupted"])
    finished = {p.point_id: p.started_utc for p in run_a.points}
    for point_id, started in partial.items():  # kept, not measured again
        assert finished[point_id] == started
    assert done[b].status.run_id != done[a].status.run_id
    assert len({m.run_id for m in store.manifests()}) == 2
    # a third launch submits nothing: every shard is done
    out = invoke("fleet", "launch", str(sweep), "--store", s3_url, "--work-dir", str(work))
    assert "0 to submit (2 done, 0 running)" in out


def _mirrored_points(url: str, fleet_id: str, shard_id: str) -> dict[str, str]:
    """point id -> started_utc of the finished points in the shard's mirror."""
    store = Store(url)
    store.fs.invalidate_cache()
    [summary] = store.fs.glob(store.path("fleet", fleet_id, "shards", shard_id, "partial", "*", "run.json"))
    points = json.loads(store.fs.cat_file(summary))["points"]
    return {p["point_id"]: p["started_utc"] for p in points if p["status"] == "ok"}


@pytest.mark.slow
def test_one_slot_queues_and_cancel_keeps_what_is_done(tmp_path):
    """--parallel 1 (the default): the second shard waits for the slot; `cancel` stops both,
    the running one through SIGTERM (its run ends interrupted, its finished points mirrored)."""
    store_url, work = str(tmp_path / "store"), tmp_path / "work"
    with FakeServer(SLOW) as srv:
        sweep = sweep_file(tmp_path, srv.base_url)
        out = invoke("fleet", "launch", str(sweep), "--store", store_url, "--work-dir", str(work))
        fleet_id = out.split()[1].rstrip(":")
        shards = [line.split(":")[0].strip() for line in out.splitlines()[-2:]]

        def one_runs_one_waits():
            """(running, waiting) once one shard has a point done and the other waits for the slot;
            which of the two took the slot first is the OS's choice, not the launch order."""
            now = states(store_url, fleet_id, work)
            seen[:] = [f"{k}: {v.state} ({v.detail}; points {v.status.points_done if v.status else None})"
                       for k, v in now.items()]
            for run, wait in (shards, shards[::-1]):
                if (now[run].status is not None and now[run].status.points_done >= 1 and now[run].state == "running"
                        and "waiting for slot-0" in now[wait].detail):
                    return run, wait
            return None
        seen: list[str] = []  # the last states read, for the message if the wait runs out
        try:
            a, b = wait_for(one_runs_one_waits, 120, "one shard running (a point done), the other queued")
        except AssertionError as e:
            raise AssertionError(f"{e}; last seen: {'; '.join(seen)}") from None
        out = invoke("fleet", "cancel", "--store", store_url, "--fleet", fleet_id, "--work-dir", str(work))
        assert f"{a}: stopped" in out and f"{b}: stopped" in out
    now = states(store_url, fleet_id, work)
    assert now[a].state == "failed" and "interrupted" in now[a].detail, now[a]
    assert now[b].state == "failed" and "exited before it started" in now[b].detail, now[b]
    assert not session_pids(json.loads((work / fleet_id / a / "launch.json").read_text())["pid"])
    assert len(_mirrored_points(store_url, fleet_id, a)) >= 1  # what it finished is in the store
