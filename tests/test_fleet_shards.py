"""Fleet pieces without a backend: shards and ids, `bench sweep --config/--upload`, the state
of a shard from what the store and its backend say, the partial-run mirror, the machine
check, local placement, and `bench fleet --help` importing no backend."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner
from result_factory import make_run

from bench.catalog.device import Detected
from bench.cli import cli
from bench.errors import ConfigError
from bench.fleet import state
from bench.fleet.backends.local import LocalBackend
from bench.fleet.partial import PartialRun
from bench.fleet.records import Shard, ShardStatus
from bench.fleet.shard import machine_hardware
from bench.fleet.shards import parse_hardware, plan_fleet, shard_id
from bench.store import Store, ls
from bench.testing.fake_server import FakeServer, FakeServerConfig

SWEEP = """name: shards
models: [tiny-llama]
engine: endpoint
endpoint_url: {url}
engine_args: {{max_num_seqs: [4, 8]}}
workloads: [{{kind: random, input_len: 8, output_len: 8}}]
loads: [{{kind: concurrency, concurrency: [1, 2]}}]
n_requests: 3
n_warmup: 1
telemetry: none
client_workers: 1
"""


@pytest.fixture
def sweep(tmp_path):
    path = tmp_path / "shards.yaml"
    path.write_text(SWEEP.format(url="http://127.0.0.1:9"))
    return path


def detected(name="NVIDIA H100 80GB HBM3", hardware_id="h100-sxm", vendor="nvidia", count=4):
    return Detected(hardware_id, name, vendor, count, "550.54" if vendor != "cpu" else None, 80.0)


def test_help_imports_no_backend():
    code = ("import sys\nfrom bench.cli import main\n"
            "for args in (['fleet', '--help'], ['fleet', 'launch', '--help'], ['fleet', 'plan', '--help']):\n"
            "    try:\n        main(args)\n    except SystemExit:\n        pass\n"
            "print('MODULES', sorted(m for m in ('ray', 'sky', 's3fs', 'torch', 'vllm') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    assert "--ray-address" in out.stdout and out.stdout.strip().endswith("MODULES []"), out.stdout[-300:]


def test_shards_are_configs_times_hardware_with_stable_ids(sweep):
    fleet = plan_fleet(sweep, ["h100-sxm", "h200-sxm|b200"])
    assert len(fleet.shards) == 4 and len({s.config_id for s in fleet.shards}) == 2
    assert [s.hardware for s in fleet.shards] == [("h100-sxm",)] * 2 + [("b200", "h200-sxm")] * 2
    assert fleet.shards[2].shard_id == shard_id(fleet.shards[2].config_id, ("h200-sxm", "b200"))
    assert fleet.shards[2].shard_id.endswith("_b200_h200-sxm") and fleet.shards[0].n_points == 2
    again = plan_fleet(sweep, ["h100-sxm", "b200|h200-sxm"])
    assert again.fleet_id == fleet.fleet_id and [s.shard_id for s in again.shards] == [s.shard_id for s in fleet.shards]
    assert plan_fleet(sweep, ["h100-sxm"]).fleet_id != fleet.fleet_id  # another hardware list, another fleet
    assert "sweep_text" not in fleet.record().to_json() and "127.0.0.1:9" not in fleet.record().to_json()


def test_hardware_errors_are_one_line(sweep):
    with pytest.raises(ConfigError, match="unknown hardware 'h999'"):
        parse_hardware(["h100-sxm|h999"])
    with pytest.raises(ConfigError, match="name the hardware types"):
        plan_fleet(sweep, [])


def test_sweep_config_unknown_id_lists_the_known(sweep):
    for command in ("plan", "sweep"):
        result = CliRunner().invoke(cli, [command, str(sweep), "--config", "nope"])
        assert result.exit_code == 2, result.output
        line = result.output.strip().splitlines()[-1]
        assert line.startswith("bench: error: no engine config 'nope' in plan 'shards' (known: tiny-llama-")
        assert line.count("tiny-llama-") == 2


@pytest.mark.slow
def test_sweep_one_config_and_upload(tmp_path):
    with FakeServer(FakeServerConfig(ttft_s=0.01, itl_s=0.002)) as srv:
        path = tmp_path / "one.yaml"
        path.write_text(SWEEP.format(url=srv.base_url))
        cid = plan_fleet(path, ["cpu-host"]).shards[1].config_id
        store = str(tmp_path / "store")
        result = CliRunner().invoke(cli, ["sweep", str(path), "--config", cid, "--out", str(tmp_path / "runs"),
                                          "--upload", store])
    assert result.exit_code == 0, result.output
    assert "published: " in result.output
    [row] = ls(store)
    run = Store(store).read_run(row["run_id"])
    assert {p.engine_config_id for p in run.points} == {cid} and len(run.points) == 2
    assert list(run.config.engine_configs) == [cid]


def test_shard_state_from_status_store_and_backend():
    shard = Shard(shard_id="s", config_id="c", hardware=["h100-sxm"], n_gpus=1, model="m", precision="bf16",
                  parallel="TP 1", engine="vllm", n_points=1)
    published = {"run-1"}.__contains__
    fresh = {"state": "running", "heartbeat_utc": state.utc_now(), "attempt": "a1"}
    stale = {**fresh, "heartbeat_utc": "2020-01-01T00:00:00Z"}

    def st(status, view=None):
        return state.shard_state(shard, ShardStatus.read(status), published, view)

    assert st({"state": "done", "run_id": "run-1", "run_status": "complete"}).state == "done"
    gone = st({"state": "done", "run_id": "run-2"})
    assert gone.state == "failed" and "not in the store" in gone.detail
    assert st(fresh).state == "running"
    assert st(stale).state == "failed" and "no heartbeat" in st(stale).detail
    assert st(fresh, state.View("exited", "pid 7 is gone")).detail == "lost: pid 7 is gone"
    assert st(stale, state.View("running")).state == "running"  # the backend knows better than a heartbeat
    assert st({"state": "failed", "error": "engine failed to start"}).detail == "engine failed to start"
    assert st({"state": "failed"}, state.View("queued", "waiting for slot-0")).state == "running"
    assert st(None).state == "missing" and st(None, state.View("exited")).state == "failed"


def test_partial_mirror_round_trip(tmp_path):
    run = make_run(tmp_path / "runs", concurrencies=(1, 4), status="running")
    (run / "engine-x.log").write_text("started with --api-key sk-abcdefghijklmnopqrstuvwx\n")
    (run / "requests" / "half-written.parquet").write_bytes(b"not named by run.json")
    store = Store(str(tmp_path / "store"))
    mirror = PartialRun(store, "fleet/f-1/shards/s/partial/h100-sxm-abc")
    sent = mirror.sync(run)
    assert sent >= 4 and mirror.sync(run) == 0  # nothing changed, nothing sent again
    restored = PartialRun(store, mirror.prefix).restore(tmp_path / "restored")
    assert restored is not None and restored.name == run.name
    assert not (restored / "requests" / "half-written.parquet").exists()
    assert "sk-abc" not in (restored / "engine-x.log").read_text()
    assert json.loads((restored / "run.json").read_text()) == json.loads((run / "run.json").read_text())
    assert PartialRun(store, "fleet/f-1/shards/s/partial/other").restore(tmp_path / "none") is None


def test_machine_check():
    h100 = detected()
    assert machine_hardware(["h100-sxm", "h200-sxm"], lambda: h100)[0] == "h100-sxm"
    with pytest.raises(ConfigError, match=r"has NVIDIA H100 80GB HBM3 \(h100-sxm\); the shard wants h200-sxm"):
        machine_hardware(["h200-sxm"], lambda: h100)
    cpu = detected("cpu", "cpu-host", "cpu", 1)
    assert machine_hardware(["cpu-host"], lambda: cpu)[0] == "cpu-host"
    assert machine_hardware(["h100-sxm"], lambda: cpu) == ("h100-sxm", "named (no GPU on this machine to check)")
    with pytest.raises(ConfigError, match="cannot tell which"):
        machine_hardware(["h100-sxm", "h200-sxm"], lambda: cpu)


def test_local_placement(sweep, tmp_path):
    tp2 = tmp_path / "tp2.yaml"
    tp2.write_text(SWEEP.format(url="http://127.0.0.1:9").replace("{max_num_seqs: [4, 8]}",
                                                                   "{max_num_seqs: [4, 8], tensor_parallel_size: 2}"))
    fleet = plan_fleet(tp2, ["h100-sxm"])
    packed = LocalBackend(tmp_path, pack=True, detect=detected)._assign(fleet, fleet.shards)
    assert sorted(packed.values()) == [(["gpu-0", "gpu-1"], {"CUDA_VISIBLE_DEVICES": "0,1"}),
                                       (["gpu-2", "gpu-3"], {"CUDA_VISIBLE_DEVICES": "2,3"})]
    slots = LocalBackend(tmp_path, detect=detected)._assign(fleet, fleet.shards)
    assert sorted(slots.values()) == [(["slot-0"], {}), (["slot-0"], {})]  # one after another
    with pytest.raises(ConfigError, match="needs --pack"):
        LocalBackend(tmp_path, parallel=2, detect=detected)._assign(fleet, fleet.shards)

    def cpu():
        return detected("cpu", "cpu-host", "cpu", 1)

    with pytest.raises(ConfigError, match="--pack needs GPUs"):
        LocalBackend(tmp_path, pack=True, detect=cpu)._assign(plan_fleet(sweep, ["cpu-host"]), [])
    with pytest.raises(ConfigError, match="this box is cpu-host; shard .* wants h100-sxm"):
        LocalBackend(tmp_path, detect=cpu)._assign(fleet, fleet.shards)


def test_a_configuration_across_nodes_is_no_shard(tmp_path):
    path = tmp_path / "nodes.yaml"
    path.write_text("""name: nodes
models: [llama-3.1-8b]
engine_args: {tensor_parallel_size: 8, data_parallel_size: 2, nnodes: [1, 2]}
workloads: [{kind: random, input_len: 128, output_len: 32}]
loads: [{kind: concurrency, concurrency: [1]}]
""")
    fleet = plan_fleet(path, ["h100-sxm"])
    assert fleet.shards == []
    reasons = [s.reason for s in fleet.skipped]  # nnodes 1: 16 GPUs on one machine; nnodes 2: two machines
    assert len(reasons) == 2 and any("spans 2 nodes: only the skypilot backend" in r for r in reasons)
    (shard,) = plan_fleet(path, ["h100-sxm"], multinode=True).shards  # SkyPilot: num_nodes 2
    assert (shard.nnodes, shard.n_gpus) == (2, 8)


def test_a_multinode_shard_hands_its_followers_to_bench_sweep(tmp_path, monkeypatch):
    """The launcher puts the followers' agents in $BENCH_NODES; the shard passes them as the sweep's `nodes`."""
    import bench.fleet.shard as shard_mod

    seen = {}

    class Stop(Exception):
        pass

    def popen(argv, **kw):
        seen["argv"] = argv
        raise Stop

    monkeypatch.setenv("BENCH_NODES", "10.0.0.2:8790,10.0.0.3:8790")
    monkeypatch.setattr(shard_mod.subprocess, "Popen", popen)
    run = shard_mod.ShardRun("s.yaml", "cfg-1", ["h100-sxm"], "f-1", str(tmp_path / "store"), work_dir=tmp_path)
    with pytest.raises(Stop):
        run._sweep("h100-sxm", None)
    i = seen["argv"].index("--set")
    assert seen["argv"][i + 1] == 'nodes=["10.0.0.2:8790", "10.0.0.3:8790"]'



def test_a_queued_shard_waits_in_a_process_that_imports_no_store(sweep, tmp_path):
    """The process a local shard starts in (it waits for its slot, then becomes `bench fleet
    shard`) imports no store, pandas or pydantic: its import time is on every shard's start.
    The slot is held here, so the waiter is caught waiting; its module is then imported alone."""
    import fcntl
    import os
    import signal

    from bench.fleet.backends.local import kill_session, session_pids

    def cpu():
        return detected("cpu", "cpu-host", "cpu", 1)

    fleet = plan_fleet(sweep, ["cpu-host"])
    backend = LocalBackend(tmp_path / "work", detect=cpu)
    (tmp_path / "work" / "locks").mkdir(parents=True)
    slot = os.open(tmp_path / "work" / "locks" / "slot-0.lock", os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(slot, fcntl.LOCK_EX)  # held: the shard waits for it
    folder = tmp_path / "work" / fleet.fleet_id / fleet.shards[0].shard_id
    try:
        backend.submit(fleet, fleet.shards[:1], str(tmp_path / "store"))
        pid = json.loads((folder / "launch.json").read_text())["pid"]
        argv = open(f"/proc/{pid}/cmdline", "rb").read().decode().split("\0")
        assert (folder / "queued").exists() and session_pids(pid) == [pid]
    finally:
        kill_session(json.loads((folder / "launch.json").read_text())["pid"], signal.SIGKILL)
        os.close(slot)
    assert "-m" in argv, (argv, (folder / "shard.log").read_text(errors="replace")[-500:])  # seen once at load 5
    module = argv[argv.index("-m") + 1]
    code = f"import sys, {module}\nprint(sorted(m for m in ('bench.store', 'pandas', 'pydantic') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0 and out.stdout.strip() == "[]", (module, out.stdout, out.stderr[-500:])
