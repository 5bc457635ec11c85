"""A real two-node vLLM launch on this machine: `bench node serve` as the follower's agent and
`bench sweep` as the head, TP 2 over 2 nodes on the CPU build (torch.distributed over gloo,
one process per "node"). The same command lines run on two GPU machines (docs/fleet.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from bench.engines.multinode import NodeClient
from bench.engines.process import free_port

SECRET = "two-node-test-secret-0123456789"


@pytest.mark.vllm
def test_tp2_over_two_nodes_serves_and_counts_both_nodes(tmp_path, model_cache):
    port = free_port()
    env = {**os.environ, "BENCH_NODE_SECRET": SECRET}  # the head's and the agent's shared secret
    env.pop("BENCH_NODE_SECRET_FILE", None)
    agent = subprocess.Popen([sys.executable, "-m", "bench", "node", "serve", "--head", "127.0.0.1", "--port", str(port),
                              "--log-dir", str(tmp_path / "node-logs")], stderr=subprocess.PIPE, text=True,
                             start_new_session=True, env=env)
    try:
        assert "bench node: serving nominal energy of 1 device(s)" in agent.stderr.readline()
        sweep = tmp_path / "two-node.yaml"
        sweep.write_text(
            "name: two-node\nmodels: [tiny-llama]\nengine_args: {tensor_parallel_size: 2, nnodes: 2}\n"
            f"nodes: ['127.0.0.1:{port}']\nworkloads: [{{input_len: 32, output_len: 16}}]\n"
            "loads: [{concurrency: [2]}]\nn_requests: 16\n")
        done = subprocess.run([sys.executable, "-m", "bench", "sweep", str(sweep), "--out", str(tmp_path / "runs")],
                              capture_output=True, text=True, timeout=900, check=False, env=env)
        assert done.returncode in (0, 4), done.stderr[-2000:]  # 4: partial (an invalid point is still measured)
        (run_dir,) = (tmp_path / "runs").iterdir()
        run = json.loads((run_dir / "run.json").read_text())
        (point,) = run["points"]
        assert point["status"] == "ok", point.get("error")
        cid = point["engine_config_id"]
        server = point["server"]  # tokens: the head's counters equal what the client received
        assert server["counter_delta"]["generation_tokens"] == server["client_counts"]["generation_tokens"] > 0
        (follower,) = run["extra"]["nodes"][cid]["followers"].values()
        argv = " ".join(follower["argv"])
        assert "--headless --nnodes 2 --node-rank 1 --master-addr 127.0.0.1" in argv
        log = next((tmp_path / "node-logs").glob("node1-*.log")).read_text()
        assert "world_size=2 rank=1" in log  # the follower's worker joined the head's torch.distributed world
        energy = point["energy"]
        assert energy["n_devices"] == 2 and energy["avg_power_w"] == pytest.approx(2 * 65.0)  # cpu-host nominal, x2
        health = NodeClient(f"127.0.0.1:{port}", secret=SECRET.encode()).health()
        assert health.child.state == "exited"  # the run stopped the follower
    finally:
        agent.terminate()
        try:
            agent.wait(timeout=60)
        except subprocess.TimeoutExpired:
            agent.kill()
