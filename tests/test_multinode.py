"""One model over several machines: the per-node vLLM command lines (golden), the node agents
(`bench node serve`) on 127.0.0.1 with fake NVML boards, energy summed over every node in the
head's window, and followers or agents that die mid-point."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from bench.engines.multinode import (
    NodeClient,
    follower_argv,
    node_launch_args,
)
from bench.engines.node_wire import ChildState, Rendezvous
from bench.plan import EngineConfig
from bench.run.runner import execute
from bench.testing.fake_server import FakeServer, FakeServerConfig
from tests.test_runner_fast import FAST, endpoint, make_env, make_plan

RDV = Rendezvous(head_addr="10.0.0.1", master_port=29501, dp_rpc_port=13345)
LOCAL_RDV = Rendezvous(head_addr="127.0.0.1", master_port=29501, dp_rpc_port=13345)  # the agents' head here
PY = sys.executable
SECRET = "multinode-test-secret-0123456789"


@pytest.fixture(autouse=True)
def node_secret(monkeypatch):
    """The shared secret of the head (this process) and of every agent it starts (inherited)."""
    monkeypatch.delenv("BENCH_NODE_SECRET_FILE", raising=False)
    monkeypatch.setenv("BENCH_NODE_SECRET", SECRET)


def _cfg(**fields) -> EngineConfig:
    return EngineConfig(model="tiny-llama", weights="dummy", dtype="bfloat16", **fields)


def test_tp_x_pp_over_two_nodes_golden():
    cfg = _cfg(tensor_parallel_size=4, pipeline_parallel_size=2, nnodes=2)
    assert cfg.n_gpus == 8 and cfg.n_gpus_local == 4
    assert node_launch_args(cfg, 0, RDV) == {
        "dtype": "bfloat16", "tensor_parallel_size": 4, "pipeline_parallel_size": 2, "load_format": "dummy",
        "nnodes": 2, "node_rank": 0, "master_addr": "10.0.0.1", "master_port": 29501}
    assert follower_argv(cfg, "/models/tiny", 1, RDV) == [
        PY, "-m", "bench.engines.vllm_headless", "--model", "/models/tiny",
        "--dtype", "bfloat16", "--tensor-parallel-size", "4", "--pipeline-parallel-size", "2", "--load-format", "dummy",
        "--headless", "--nnodes", "2", "--node-rank", "1", "--master-addr", "10.0.0.1", "--master-port", "29501"]


def test_dp_over_two_nodes_golden():
    cfg = _cfg(tensor_parallel_size=2, data_parallel_size=4, enable_expert_parallel=True, nnodes=2)
    assert cfg.n_gpus == 8 and cfg.n_gpus_local == 4
    assert node_launch_args(cfg, 0, RDV) == {
        "dtype": "bfloat16", "tensor_parallel_size": 2, "data_parallel_size": 4, "enable_expert_parallel": True,
        "load_format": "dummy", "data_parallel_size_local": 2, "data_parallel_address": "10.0.0.1",
        "data_parallel_rpc_port": 13345}
    assert follower_argv(cfg, "/models/tiny", 1, RDV)[5:] == [
        "--dtype", "bfloat16", "--tensor-parallel-size", "2", "--data-parallel-size", "4", "--enable-expert-parallel",
        "--load-format", "dummy", "--headless", "--data-parallel-size-local", "2", "--data-parallel-address", "10.0.0.1",
        "--data-parallel-rpc-port", "13345", "--data-parallel-start-rank", "2"]


@pytest.mark.parametrize("fields, problem", [
    ({"data_parallel_size": 3, "nnodes": 2}, "whole replicas per node"),
    ({"tensor_parallel_size": 3, "nnodes": 2}, "must divide the world size"),
    ({"tensor_parallel_size": 2, "nnodes": 2, "nodes": ["a:1", "b:2"]}, "needs 1"),
    ({"tensor_parallel_size": 2, "nnodes": 2, "nodes": ["no-port"]}, "host:port"),
    ({"nodes": ["a:1"]}, "nnodes > 1"),
])
def test_configs_that_cannot_be_split_are_refused(fields, problem):
    with pytest.raises(ValueError, match=problem):
        _cfg(**fields)


def test_nodes_never_change_the_config_id():
    a = _cfg(tensor_parallel_size=2, nnodes=2)
    assert a.config_id() == _cfg(tensor_parallel_size=2, nnodes=2, nodes=["10.0.0.2:8790"]).config_id()
    assert a.config_id() != _cfg(tensor_parallel_size=2).config_id()
    assert _cfg().config_id() == _cfg(nnodes=1).config_id()  # single-node ids unchanged


@pytest.mark.vllm
@pytest.mark.parametrize("fields", [
    {"tensor_parallel_size": 4, "pipeline_parallel_size": 2, "nnodes": 2},
    {"tensor_parallel_size": 2, "data_parallel_size": 4, "nnodes": 2},
])
def test_every_node_argv_parses_with_vllms_own_parser(fields):
    from bench.engines.base import engine_args_to_cli
    from bench.engines.vllm_headless import parse

    cfg = _cfg(**fields)
    for rank in range(cfg.nnodes):
        args = node_launch_args(cfg, rank, RDV)
        ns = parse(["--model", "/models/tiny", *engine_args_to_cli(args)])
        for key, value in args.items():
            assert getattr(ns, key) == value, (rank, key)
        assert ns.headless is (rank > 0)


# --- node agents on 127.0.0.1 ------------------------------------------------------------------

class Node:
    """A fake node agent in its own process (bench.testing.fake_node)."""

    def __init__(self, tmp_path, name: str, watts: str, wait: bool = True):
        self.dir = tmp_path / name
        self.dir.mkdir()
        self.ready = self.dir / "ready.json"
        self.proc = subprocess.Popen([PY, "-m", "bench.testing.fake_node", "--watts", watts, "--log-dir", str(self.dir),
                                      "--ready-file", str(self.ready)], start_new_session=True)
        if wait:
            self.wait()

    def wait(self) -> None:
        """Until the agent listens (its ready file), bounded."""
        deadline = time.monotonic() + 30
        while not self.ready.exists():
            assert self.proc.poll() is None and time.monotonic() < deadline, "fake node did not start"
            time.sleep(0.01)  # the poll period of a bounded wait on the agent's ready file
        self.addr = f"127.0.0.1:{json.loads(self.ready.read_text())['port']}"

    def health(self):
        return NodeClient(self.addr).health()

    def kill(self) -> None:
        """SIGKILL the agent (its headless child, in a process group of its own, is ended at teardown)."""
        if self.proc.poll() is None:
            self.orphan = self.health().child.pid
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def close(self) -> None:
        child = self.health().child if self.proc.poll() is None else ChildState(state="none")
        self.proc.terminate()
        self.proc.wait(timeout=30)
        if child.state == "running":  # a SIGTERMed agent stops its child
            assert not os.path.exists(f"/proc/{child.pid}") or _zombie(child.pid)


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@pytest.fixture
def nodes(tmp_path):
    made = [Node(tmp_path, "node1", "200", wait=False), Node(tmp_path, "node2", "300", wait=False)]
    try:
        for n in made:  # both started before either is waited for: their imports overlap
            n.wait()
    except BaseException:
        for n in made:
            os.killpg(n.proc.pid, signal.SIGKILL)
            n.proc.wait()
        raise
    yield made
    for n in made:
        if n.proc.poll() is None:
            n.close()
        if getattr(n, "orphan", None):
            try:
                os.killpg(n.orphan, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _multinode(url: str, nodes: list[Node]) -> EngineConfig:
    return endpoint(url, data_parallel_size=3, nnodes=3, nodes=[n.addr for n in nodes])


@pytest.mark.slow
def test_energy_is_summed_over_every_node_in_the_heads_window(nodes, tmp_path):
    with FakeServer(FakeServerConfig(ttft_s=0.01, itl_s=0.01)) as server:
        cfg = _multinode(server.base_url, nodes)
        result = execute(make_plan([cfg], n_requests=12), tmp_path / "run", make_env(watts=[100.0]))
    (point,) = result.points
    assert point.status == "ok", point.error
    energy = point.energy
    assert energy.energy_valid, energy.energy_invalid_reasons
    assert energy.n_devices == 3 and len(energy.per_gpu_energy_j) == 3
    window = energy.window_s
    assert energy.avg_power_w == pytest.approx(100 + 200 + 300, rel=0.02)  # head + node1 + node2
    for got, watts in zip(energy.per_gpu_energy_j, (100, 200, 300)):
        assert got == pytest.approx(watts * window, rel=0.02)
    described = result.extra["nodes"][cfg.config_id()]
    argv = {addr: " ".join(f["argv"]) for addr, f in described["followers"].items()}
    assert "--headless" in argv[nodes[0].addr] and "--data-parallel-start-rank 1" in argv[nodes[0].addr]
    assert "--data-parallel-start-rank 2" in argv[nodes[1].addr]
    telemetry = result.extra["telemetry"][cfg.config_id()]
    assert telemetry["devices"] == ["head/gpu0", f"{nodes[0].addr}/gpu0", f"{nodes[1].addr}/gpu0"]
    for n in nodes:  # the run stopped every follower's child
        assert n.health().child.state == "exited"


class _KillDuringPoint(threading.Thread):
    """Runs `action` once the first point's measured requests are under way (the server has seen
    `after` requests: the warm-up and a few more), whatever the engine start took."""

    def __init__(self, server, action, after: int = 3):
        super().__init__(daemon=True)
        self.server, self.action, self.after = server, action, after
        self.stop = threading.Event()
        self.start()

    def run(self):
        while not self.stop.wait(0.02):
            if self.server.counters()["n_requests"] >= self.after:
                self.action()
                return

    def cancel(self):
        self.stop.set()


@pytest.mark.slow
def test_a_follower_that_dies_fails_the_point_and_the_next_point_runs_on_a_restart(nodes, tmp_path):
    def kill_child():
        pid = nodes[1].health().child.pid
        os.killpg(pid, signal.SIGKILL)

    with FakeServer(FakeServerConfig(ttft_s=0.01, itl_s=0.03)) as server:  # a point: about 2 s
        cfg = _multinode(server.base_url, nodes)
        killer = _KillDuringPoint(server, kill_child)
        try:
            result = execute(make_plan([cfg], n_points=2, n_requests=8), tmp_path / "run", make_env(watts=[100.0]))
        finally:
            killer.cancel()
    first, second = result.points
    assert first.status == "failed"
    assert f"node {nodes[1].addr}" in first.error and "fake headless vLLM" in first.error  # its log tail, quoted
    assert second.status == "ok", second.error  # the agent started a new child
    assert second.energy.model_dump()["energy_valid"]


@pytest.mark.slow
def test_an_agent_that_dies_fails_the_point_and_the_configuration(nodes, tmp_path):
    with FakeServer(FakeServerConfig(ttft_s=0.01, itl_s=0.03)) as server, FakeServer(FAST) as quick:
        cfg = _multinode(server.base_url, nodes)
        other = endpoint(quick.base_url)  # the next configuration goes on (its points need not be long)
        killer = _KillDuringPoint(server, nodes[0].kill)
        try:
            result = execute(make_plan([cfg, other], n_points=2, n_requests=8), tmp_path / "run",
                             make_env(watts=[100.0]))
        finally:
            killer.cancel()
    first, second, third, fourth = result.points
    assert first.status == "failed" and f"node {nodes[0].addr}: agent unreachable" in first.error
    assert second.status == "failed" and "engine failed to start" in second.error and nodes[0].addr in second.error
    assert third.status == fourth.status == "ok"


def _wait_for(condition, timeout_s: float, what: str) -> None:
    """Poll `condition` until it holds; fail naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout_s} s waiting for {what}"
        time.sleep(0.01)


@pytest.mark.slow
def test_a_missed_snapshot_at_the_window_end_makes_energy_invalid_naming_the_node(tmp_path):
    from bench.run.node_agent import NodeAgent
    from bench.run.node_http import make_server
    from bench.telemetry.fake_nvml import FakeNvmlTelemetry
    from bench.telemetry.remote import with_nodes

    meter = FakeNvmlTelemetry([250.0])("nvml", gpu_indices=[0]).meter
    agent = NodeAgent(meter, cache_dir=tmp_path, log_dir=tmp_path, gpus=[0])
    server = make_server(agent, "127.0.0.1", 0, {"127.0.0.1"}, SECRET.encode())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    addr = f"127.0.0.1:{server.server_address[1]}"
    session = with_nodes(FakeNvmlTelemetry([100.0])("nvml", gpu_indices=[0]), [addr]).start()
    (remote,) = session.meter.remotes

    def samples_after(t_s: float) -> int:
        frame = session.power_series()
        return int((frame["t_s"] > t_s).sum())

    try:
        t0 = time.perf_counter()
        # a window of a second at least: a remote read's timestamp skew (a few ms on a busy box)
        # is then well within the counter-vs-power cross-check's 5 % (a 0.1 s window showed 5 %)
        _wait_for(lambda: samples_after(t0) >= 2 * 3 and time.perf_counter() - t0 >= 1.0, 30,
                  "three samples of both nodes in a window of a second")
        t_end = time.perf_counter()  # both nodes' counters read after it too, however late the sampler runs
        _wait_for(lambda: samples_after(t_end) >= 2, 30, "a sample of both nodes after the window end")
        whole = session.energy_between(t0, t_end)
        assert whole.energy_valid, whole.energy_invalid_reasons
        assert whole.avg_power_w == pytest.approx(350, rel=0.05)
        assert remote.read_errors == 0
        server.shutdown()
        server.server_close()
        # the sampler reads one node after the other: once a read of the agent has failed, every
        # successful one is behind it, and every later one fails
        _wait_for(lambda: remote.read_errors >= 1, 30, "a failed read of the stopped agent")
        t1 = time.perf_counter()
        failed_by_t1 = remote.read_errors
        _wait_for(lambda: remote.read_errors > failed_by_t1, 30, "a failed read after the window end")
        cut = session.energy_between(t0, t1)
    finally:
        session.stop()
    assert not cut.energy_valid and cut.energy_j is None
    assert f"{addr}/gpu0: counter not read at the window end" in cut.energy_invalid_reasons
    assert "agent unreachable" in session.meter.describe()["nodes"][0]["last_error"]
    assert session.describe()["read_errors"] >= 1  # the agent's missed reads count as the session's


@pytest.mark.slow
def test_the_agent_answers_only_the_head_and_only_its_own_version(tmp_path):
    from bench.engines.multinode import NodeClient, start_request
    from bench.errors import EngineError
    from bench.run.node_agent import NodeAgent
    from bench.run.node_http import make_server
    from bench.telemetry.fake_nvml import FakeNvmlTelemetry

    meter = FakeNvmlTelemetry([250.0])("nvml", gpu_indices=[0]).meter
    agent = NodeAgent(meter, cache_dir=tmp_path, log_dir=tmp_path, gpus=[0])
    # another address is closed at accept (no answer at all); the head gets the version refusal
    for allowed, check in (({"10.9.9.9"}, "agent unreachable"), ({"127.0.0.1"}, r"refused \(400\).*this node")):
        server = make_server(agent, "127.0.0.1", 0, allowed, SECRET.encode())
        threading.Thread(target=server.serve_forever, daemon=True).start()
        client = NodeClient(f"127.0.0.1:{server.server_address[1]}")
        request = start_request(_cfg(tensor_parallel_size=2, nnodes=2), 1, LOCAL_RDV, "cuda")
        request = request.model_copy(update={"bench_version": "0.0.0-other"})
        try:
            with pytest.raises(EngineError, match=check):
                client.start(request)
        finally:
            server.shutdown()
            server.server_close()
    assert agent.child is None  # nothing was started


def test_a_sweep_file_spans_nodes_and_preflight_counts_devices_per_node():
    from bench.plan import build_plan, sweep_from_dict

    raw = {"models": ["tiny-llama"], "engine_args": {"tensor_parallel_size": 4, "nnodes": [1, 2]},
           "nodes": ["10.0.0.2:8790"], "workloads": [{"input_len": 32, "output_len": 8}],
           "loads": [{"concurrency": [1]}]}
    plan = build_plan(sweep_from_dict(raw, source="t.yaml"), "h100-sxm", 2)
    (cfg,) = plan.engine_configs  # TP 4 on one 2-GPU box does not fit; over 2 nodes it needs 2 per node
    assert cfg.nnodes == 2 and cfg.nodes == ["10.0.0.2:8790"] and cfg.n_gpus_local == 2
    (skipped,) = plan.skipped
    assert "needs 4 GPUs" in skipped.reason
    from bench.errors import ConfigError

    with pytest.raises(ConfigError, match="gpus lists 4 devices, the configuration needs 2"):  # per node
        sweep_from_dict({**raw, "gpus": [0, 1, 2, 3], "engine_args": {"tensor_parallel_size": 4, "nnodes": 2}},
                        source="t.yaml")


@pytest.mark.slow
def test_bench_node_release_stops_the_agent_and_its_child(nodes, tmp_path):
    from click.testing import CliRunner

    from bench.cli import cli
    from bench.engines.multinode import start_request

    node = nodes[0]
    cfg = endpoint("http://127.0.0.1:9", data_parallel_size=2, nnodes=2, nodes=[node.addr])
    started = NodeClient(node.addr).start(start_request(cfg, 1, LOCAL_RDV, "cuda"))
    assert node.health().child.state == "running"
    result = CliRunner().invoke(cli, ["node", "release", node.addr, "127.0.0.1:9"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert f"released {node.addr}" in result.output and "127.0.0.1:9: agent unreachable" in result.output
    assert node.proc.wait(timeout=30) == 0  # the agent exits cleanly
    assert _zombie(started.pid)  # and its child is gone
