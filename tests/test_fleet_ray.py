"""The Ray fleet backend on a real local Ray cluster (ray.cluster_utils.Cluster): two nodes
advertising different accelerators, two shards of one engine configuration for two hardware
types; each lands on the node of its type and publishes its run to the store."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

import bench
from bench.cli import cli
from bench.fleet import control
from bench.fleet.backends.ray import RayBackend
from bench.fleet.records import Shard
from bench.store import Store
from bench.testing.fake_server import FakeServer, FakeServerConfig


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Head: 1 CPU, 1 GPU, accelerator_type:H100; second node: 1 CPU, 1 GPU, accelerator_type:A100.
    (No real GPU: Ray schedules by the declared resources.) The nodes' workers import this
    checkout of bench and keep their shard folders in a temporary cache. Ray is imported here,
    not at the top (0.9 s a worker in every tier); missing, the test fails, never skips."""
    import ray  # a dev dependency (pyproject `dev`)
    from ray.cluster_utils import Cluster

    with pytest.MonkeyPatch.context() as mp:
        here = str(Path(bench.__file__).resolve().parent.parent)
        mp.setenv("PYTHONPATH", os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")])))
        mp.setenv("BENCH_CACHE_DIR", str(tmp_path_factory.mktemp("ray-cache")))
        c = Cluster(initialize_head=True, head_node_args={
            "num_cpus": 1, "num_gpus": 1, "resources": {"accelerator_type:H100": 1}})
        a100 = c.add_node(num_cpus=1, num_gpus=1, resources={"accelerator_type:A100": 1})
        ray.init(address=c.address, namespace="bench-fleet", log_to_driver=False)
        try:
            yield {"cluster": c, "h100": c.head_node.node_id, "a100": a100.node_id}
        finally:
            ray.shutdown()
            c.shutdown()


def test_options_place_by_accelerator():
    def shard(*hw, n=2):
        return Shard(shard_id="x_" + "_".join(hw), config_id="x", hardware=hw, n_gpus=n, model="m", precision="bf16",
                     parallel="TP 2", engine="vllm", n_points=1)

    backend = RayBackend()
    one = backend.options(shard("h100-sxm"))
    assert one["num_gpus"] == 2 and one["accelerator_type"] == "H100" and "label_selector" not in one
    either = backend.options(shard("a100-80g-sxm", "h200-sxm"))
    assert either["label_selector"] == {"ray.io/accelerator-type": "in(A100,H200)"}
    assert "accelerator_type" not in either
    assert backend.options(shard("h100-pcie", "h100-sxm"))["accelerator_type"] == "H100"
    assert backend.options(shard("cpu-host", n=1))["num_gpus"] == 0


def tasks_returned(record, timeout_s: float) -> dict:
    """The backend's view of every shard once each one's task has returned (bounded)."""
    ids = record.shard_ids()
    deadline = time.monotonic() + timeout_s
    while True:
        views = RayBackend().status(record, ids)
        if all(sid in views and views[sid].state == "exited" for sid in ids):
            return views
        if time.monotonic() > deadline:
            raise AssertionError(f"the shards' tasks did not return in {timeout_s:.0f} s: "
                                 f"{ {sid: (v.state, v.detail) for sid, v in views.items()} }")
        time.sleep(0.5)


@pytest.mark.slow
def test_shards_land_on_the_node_of_their_type(cluster, tmp_path):
    store_url = str(tmp_path / "store")
    with FakeServer(FakeServerConfig(ttft_s=0.01, itl_s=0.004)) as srv:
        sweep = tmp_path / "fleet-ray.yaml"
        sweep.write_text(f"""name: fleet-ray
models: [tiny-llama]
engine: endpoint
endpoint_url: {srv.base_url}
workloads: [{{kind: random, input_len: 8, output_len: 8}}]
loads: [{{kind: concurrency, concurrency: [1, 2]}}]
n_requests: 3
n_warmup: 1
telemetry: none
client_workers: 1
""")
        result = CliRunner().invoke(cli, ["fleet", "launch", str(sweep), "--backend", "ray", "--store", store_url,
                                          "--hardware", "h100-sxm", "--hardware", "a100-80g-sxm"],
                                    catch_exceptions=False)
        assert result.exit_code == 0, result.output
        assert "2 to submit" in result.output and "accelerator_type:H100" in result.output
        fleet_id = result.output.split()[1].rstrip(":")
        store = Store(store_url)
        states = control.wait(store, fleet_id, RayBackend(), echo=print, timeout_s=120, interval_s=1)
    assert [s.state for s in states] == ["done", "done"], [(s.shard.shard_id, s.detail) for s in states]
    record = control.one_record(store, fleet_id)
    # A shard is done once its run is published; its Ray task returns a moment later (the
    # shard process still has to exit: seconds on a loaded box). What the task reports is
    # read once both tasks have returned.
    views = tasks_returned(record, timeout_s=60)
    for s in states:
        hw = s.shard.hardware[0]
        info = views[s.shard.shard_id].info
        node = cluster["h100"] if hw == "h100-sxm" else cluster["a100"]
        assert info.node_id == node, (hw, info)
        assert info.returncode == 0
        assert info.resources["GPU"] == 1.0
        assert f"accelerator_type:{'H100' if hw == 'h100-sxm' else 'A100'}" in info.resources
        run = store.read_checked_run(s.status.run_id)
        assert run.config.hardware_id == hw and [p.status for p in run.points] == ["ok", "ok"]


@pytest.mark.slow  # imports ray (1-3 s)
@pytest.mark.parametrize("url", ["s3://user:pa55word@bucket/x", "https://storage.example.com/x?token=abcdefgh12345678",
                                 "https://b.s3.amazonaws.com/x?X-Amz-Signature=0123456789abcdef"])
def test_a_credential_never_travels_to_ray(tmp_path, url, monkeypatch):
    """Ray has no secrets: a store URL (or a plain setting) that carries a credential is refused
    before anything connects; the nodes bring their own credentials."""
    import ray

    from bench.errors import ConfigError
    from bench.fleet.shards import plan_fleet

    monkeypatch.setattr(ray, "init", lambda *a, **k: pytest.fail("ray.init was called"))
    sweep = tmp_path / "s.yaml"
    sweep.write_text("name: s\nmodels: [tiny-llama]\nengine: endpoint\nendpoint_url: http://127.0.0.1:9\n"
                     "workloads: [{kind: random, input_len: 8, output_len: 8}]\n"
                     "loads: [{kind: concurrency, concurrency: [1]}]\n")
    fleet = plan_fleet(sweep, ["h100-sxm"])
    with pytest.raises(ConfigError, match="carries a credential"):
        RayBackend("127.0.0.1:1").submit(fleet, fleet.shards, url)
    monkeypatch.setenv("BENCH_S3_ENDPOINT_URL", "https://user:pa55word@minio.example.com")
    with pytest.raises(ConfigError, match="BENCH_S3_ENDPOINT_URL carries a credential"):
        RayBackend("127.0.0.1:1").submit(fleet, fleet.shards, "s3://bucket/x")
