"""The node agent (`bench node serve`) is authenticated and narrow (docs/fleet.md, "What an agent
accepts"): every request carries an HMAC of its method, path, time, nonce and body under the
shared secret; a start request is a typed configuration whose model, weights, rendezvous and
engine arguments pass the agent's own checks; connections from other addresses are closed at
once, idle ones from the head after a timeout, and only a few are served at a time.

Each agent here runs in this process on 127.0.0.1 over a fake NVML board, with the stand-in
follower of bench.testing.fake_node (a process that only sleeps) as its child."""

from __future__ import annotations

import http.client
import json
import os
import socket
import threading
import time

import pytest
from pydantic import BaseModel, ConfigDict

from bench.engines.multinode import NodeClient, start_request
from bench.engines.node_auth import WINDOW_S, load_secret, sign_request
from bench.engines.node_wire import ChildState, Rendezvous, StartAnswer
from bench.errors import ConfigError, EngineError
from bench.plan import EngineConfig
from bench.run.node_agent import NodeAgent
from bench.run.node_http import make_server
from bench.telemetry.fake_nvml import FakeNvmlTelemetry
from bench.testing.fake_node import fake_child

SECRET = b"test-secret-0123456789abcdef"
HEAD = "127.0.0.1"
RDV = Rendezvous(head_addr=HEAD, master_port=29501, dp_rpc_port=13345)


def _cfg(**fields) -> EngineConfig:
    return EngineConfig(**{"model": "tiny-llama", "weights": "dummy", "dtype": "bfloat16", "tensor_parallel_size": 2,
                           "nnodes": 2, **fields})


class Agent:
    """A NodeAgent behind make_server on 127.0.0.1, answering HEAD, in a thread of this process."""

    def __init__(self, tmp_path, allow_args=(), **server_kw):
        meter = FakeNvmlTelemetry([250.0])("nvml", gpu_indices=[0]).meter
        self.log: list[str] = []
        self.agent = NodeAgent(meter, cache_dir=tmp_path / "models", log_dir=tmp_path / "logs", gpus=[0],
                               child_command=fake_child, allow_args=allow_args)
        self.server = make_server(self.agent, "127.0.0.1", 0, {HEAD}, SECRET, log=self.log.append, **server_kw)
        self.port = self.server.server_address[1]
        self.addr = f"127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        self.client = NodeClient(self.addr, secret=SECRET)

    def raw(self, method: str, path: str, body: bytes = b"", headers: dict | None = None) -> tuple[int, dict]:
        """One request exactly as given (no signing unless `headers` carry one): status, JSON answer."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request(method, path, body=body or None, headers=headers or {})
            r = conn.getresponse()
            return r.status, json.loads(r.read() or b"{}")
        finally:
            conn.close()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.agent.close()


@pytest.fixture
def agent(tmp_path):
    a = Agent(tmp_path)
    yield a
    a.close()


# --- authentication --------------------------------------------------------------------------

@pytest.mark.parametrize("method, path", [("GET", "/health"), ("GET", "/energy"), ("POST", "/engine/start"),
                                          ("POST", "/engine/stop"), ("POST", "/exit")])
def test_an_unauthenticated_request_is_refused(agent, method, path):
    body = start_request(_cfg(), 1, RDV, "cuda").model_dump_json().encode() if path == "/engine/start" else b""
    status, answer = agent.raw(method, path, body, {"Content-Type": "application/json"})
    assert status == 401 and "not signed" in answer["error"]
    assert agent.agent.child is None and agent.thread.is_alive()  # nothing started, nothing stopped
    assert any(f"refused {method} {path} from 127.0.0.1 (401)" in line for line in agent.log)


def test_the_head_with_the_secret_is_answered_and_the_answer_is_signed(agent):
    health = agent.client.health()
    assert health.ok and health.child == ChildState(state="none")
    energy = agent.client.energy()
    assert energy.method == "nvml_counter" and len(energy.readings) == 1


def test_a_wrong_secret_is_refused_at_once_not_waited_for(agent):
    other = NodeClient(agent.addr, secret=b"another-secret-0123456789")
    t0 = time.monotonic()
    with pytest.raises(EngineError, match=r"refused \(401\).*signature"):
        other.wait_ready(timeout_s=60)  # an agent that refuses is not late: no retry for a minute
    assert time.monotonic() - t0 < 5


def test_a_body_changed_after_signing_is_refused(agent):
    signed = json.dumps({"a": 1}).encode()
    headers = sign_request(SECRET, "POST", "/engine/stop", signed)
    status, answer = agent.raw("POST", "/engine/stop", json.dumps({"a": 2}).encode(), headers)
    assert status == 401 and "signature" in answer["error"]
    status, _ = agent.raw("GET", "/energy", b"", sign_request(SECRET, "GET", "/health", b""))  # another path
    assert status == 401


def test_a_replayed_request_is_refused(agent):
    headers = sign_request(SECRET, "GET", "/energy", b"")
    assert agent.raw("GET", "/energy", b"", headers)[0] == 200
    status, answer = agent.raw("GET", "/energy", b"", headers)
    assert status == 401 and "replayed" in answer["error"]


@pytest.mark.parametrize("offset_s", [-(WINDOW_S + 5), WINDOW_S + 5])
def test_a_stale_or_future_timestamp_is_refused(agent, offset_s):
    headers = sign_request(SECRET, "GET", "/health", b"", now_s=time.time() + offset_s)
    status, answer = agent.raw("GET", "/health", b"", headers)
    assert status == 401 and "clock" in answer["error"]


@pytest.mark.slow
def test_an_answer_not_signed_by_the_agent_is_refused(tmp_path):
    """An impostor on the agent's port (energy figures are a lie vector) is not believed."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Impostor(BaseHTTPRequestHandler):
        def do_GET(self):
            data = json.dumps({"method": "nvml", "readings": [[0.0, 1.0]]}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Impostor)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.raises(EngineError, match="not signed with the shared secret"):
            NodeClient(f"127.0.0.1:{server.server_address[1]}", secret=SECRET).energy()
    finally:
        server.shutdown()
        server.server_close()


def test_an_oversized_body_is_refused_before_it_is_read(agent):
    headers = {**sign_request(SECRET, "POST", "/engine/start", b""), "Content-Length": str(50 * 2**20)}
    with socket.create_connection(("127.0.0.1", agent.port), timeout=10) as s:
        s.sendall(b"POST /engine/start HTTP/1.1\r\nHost: x\r\n"
                  + b"".join(f"{k}: {v}\r\n".encode() for k, v in headers.items()) + b"\r\n")
        answer = b""
        while chunk := s.recv(4096):  # answered and closed without a byte of the 50 MiB sent
            answer += chunk
        answer = answer.decode()
    assert answer.startswith("HTTP/1.0 413") and "larger than" in answer


# --- the secret ---------------------------------------------------------------------------------

def test_the_secret_comes_from_the_environment_or_a_private_file(tmp_path):
    with pytest.raises(ConfigError, match="BENCH_NODE_SECRET"):
        load_secret({})
    with pytest.raises(ConfigError, match="at least 16"):
        load_secret({"BENCH_NODE_SECRET": "short"})
    assert load_secret({"BENCH_NODE_SECRET": " s3cret-s3cret-s3cret \n"}) == b"s3cret-s3cret-s3cret"
    f = tmp_path / "secret"
    f.write_text("from-a-file-0123456789\n")
    f.chmod(0o644)
    with pytest.raises(ConfigError, match="readable by others.*chmod 600"):
        load_secret({"BENCH_NODE_SECRET_FILE": str(f)})
    f.chmod(0o600)
    assert load_secret({"BENCH_NODE_SECRET_FILE": str(f)}) == b"from-a-file-0123456789"
    with pytest.raises(ConfigError, match="one of"):
        load_secret({"BENCH_NODE_SECRET_FILE": str(f), "BENCH_NODE_SECRET": "x" * 20})
    with pytest.raises(ConfigError, match="cannot read"):
        load_secret({"BENCH_NODE_SECRET_FILE": str(tmp_path / "absent")})


def test_the_head_refuses_to_use_nodes_without_a_secret(agent, monkeypatch):
    monkeypatch.delenv("BENCH_NODE_SECRET", raising=False)
    monkeypatch.delenv("BENCH_NODE_SECRET_FILE", raising=False)
    with pytest.raises(EngineError, match=f"node {agent.addr}: no node secret.*BENCH_NODE_SECRET"):
        NodeClient(agent.addr).health()


@pytest.mark.slow
def test_a_sweep_without_a_secret_fails_its_multinode_configuration_in_one_line(agent, monkeypatch, tmp_path):
    from bench.run.runner import execute
    from bench.testing.fake_server import FakeServer, FakeServerConfig
    from tests.test_runner_fast import endpoint, make_env, make_plan

    monkeypatch.delenv("BENCH_NODE_SECRET", raising=False)
    monkeypatch.delenv("BENCH_NODE_SECRET_FILE", raising=False)
    with FakeServer(FakeServerConfig(ttft_s=0.01, itl_s=0.01)) as server:
        spanning = endpoint(server.base_url, data_parallel_size=2, nnodes=2, nodes=[agent.addr])
        result = execute(make_plan([spanning, endpoint(server.base_url)], n_requests=4), tmp_path / "run",
                         make_env(watts=[100.0]))
    first, second = result.points
    assert first.status == "failed" and "engine failed to start" in first.error and "no node secret" in first.error
    assert "\n" not in first.error
    assert second.status == "ok"  # the run goes on
    notes = result.extra["telemetry"][spanning.config_id()]["notes"]
    assert any("no node secret" in n and "energy not reported" in n for n in notes)
    assert agent.log == []  # the head asked the agent nothing


def test_bench_node_serve_refuses_a_bad_allow_arg_name_before_starting(monkeypatch):
    from click.testing import CliRunner

    from bench.cli import cli

    monkeypatch.setenv("BENCH_NODE_SECRET", SECRET.decode())
    result = CliRunner().invoke(cli, ["node", "serve", "--head", "127.0.0.1", "--port", "1", "--allow-arg", "x y"])
    assert result.exit_code == 2 and result.output.startswith("bench: error: 'x y' is not an engine argument name")


def test_bench_node_serve_refuses_to_start_without_a_secret(monkeypatch):
    from click.testing import CliRunner

    from bench.cli import cli

    monkeypatch.delenv("BENCH_NODE_SECRET", raising=False)
    monkeypatch.delenv("BENCH_NODE_SECRET_FILE", raising=False)
    result = CliRunner().invoke(cli, ["node", "serve", "--head", "127.0.0.1", "--port", "1"])
    assert result.exit_code == 2
    assert result.output.startswith("bench: error: no node secret") and len(result.output.splitlines()) == 1


# --- what a start request may carry -------------------------------------------------------------

class _AnyBody(BaseModel):
    """A request body as given, whatever its keys: what a head other than bench's could send."""

    model_config = ConfigDict(extra="allow")


def _start(agent, cfg=None, rdv=RDV, **changes) -> StartAnswer:
    request = start_request(cfg or _cfg(), 1, rdv, "cuda").model_dump(mode="json")
    return agent.client.call("POST", "/engine/start", StartAnswer, _AnyBody(**{**request, **changes}), timeout_s=120.0)


@pytest.mark.parametrize("extra, reason", [
    ({"trust_remote_code": True}, "trust_remote_code is not allowed"),
    ({"worker_cls": "evil.Worker"}, "worker_cls is not allowed"),
    ({"worker_extension_cls": "evil.Ext"}, "worker_extension_cls is not allowed"),
    ({"chat_template": "/etc/shadow"}, "chat_template is not allowed"),
    ({"master_addr": "10.6.6.6"}, "master_addr is not allowed"),
    ({"config": "/tmp/evil.yaml"}, "config is not allowed"),
    ({"trust-remote": True}, "trust_remote is not allowed"),  # argparse would expand the prefix
    ({"seed=1 --trust-remote-code": 1}, "not an engine argument name"),
    ({"seed": "--trust-remote-code"}, "seed: value"),  # an allowed name carrying a flag
])
def test_a_disallowed_engine_argument_is_refused(agent, extra, reason):
    with pytest.raises(EngineError, match=rf"refused \(403\).*{reason}"):
        _start(agent, _cfg(extra_args=extra))
    assert agent.agent.child is None
    assert any("refused POST /engine/start from 127.0.0.1 (403)" in line for line in agent.log)


@pytest.mark.parametrize("cfg_fields, rdv, reason", [
    ({}, Rendezvous(head_addr="10.6.6.6", master_port=29501, dp_rpc_port=13345), "rendezvous 10.6.6.6 is not the head"),
    ({"weights": "attacker/model-with-code"}, RDV, "weights 'attacker/model-with-code'"),
    ({"weights": "/etc"}, RDV, "not under this node's model cache"),
    ({"weights": "--trust-remote-code"}, RDV, "weights"),
    ({"dtype": "--trust-remote-code"}, RDV, "dtype"),
])
def test_a_start_outside_the_catalog_the_cache_or_the_head_is_refused(agent, cfg_fields, rdv, reason):
    with pytest.raises(EngineError, match=rf"refused \(40[03]\).*{reason}"):
        _start(agent, _cfg(**cfg_fields), rdv)
    assert agent.agent.child is None


@pytest.mark.parametrize("change, reason", [
    ({"node_rank": 0}, "node_rank"),
    ({"node_rank": 2}, "node_rank"),
    ({"argv": ["/bin/sh"]}, "argv"),  # unknown keys are refused, not ignored
    ({"config": {"model": "no-such-model", "nnodes": 2, "tensor_parallel_size": 2}}, "no-such-model"),
])
def test_a_malformed_start_request_is_refused(agent, change, reason):
    with pytest.raises(EngineError, match=rf"refused \(400\).*{reason}"):
        _start(agent, **change)
    assert agent.agent.child is None


def test_allowed_arguments_pass_and_a_path_under_the_cache_is_a_model(agent, tmp_path):
    answer = _start(agent, _cfg(extra_args={"gpu_memory_utilization": 0.8, "enforce_eager": True}))
    argv = " ".join(answer.argv)
    assert "--gpu-memory-utilization 0.8 --enforce-eager" in argv
    assert agent.client.health().child.state == "running"
    own = tmp_path / "models" / "my-tiny"
    own.mkdir(parents=True)
    answer = _start(agent, _cfg(weights=str(own)))
    assert answer.argv[answer.argv.index("--model") + 1] == str(own)


def test_allow_arg_widens_the_list_by_name(tmp_path):
    a = Agent(tmp_path, allow_args=["chat-template"])  # as `bench node serve --allow-arg chat-template` gives it
    try:
        answer = _start(a, _cfg(extra_args={"chat_template": "/srv/templates/llama.jinja"}))
        assert "--chat-template /srv/templates/llama.jinja" in " ".join(answer.argv)
        with pytest.raises(EngineError, match="trust_remote_code is not allowed"):
            _start(a, _cfg(extra_args={"trust_remote_code": True}))
    finally:
        a.close()


# --- connections ----------------------------------------------------------------------------

def _closed_within(sock: socket.socket, timeout_s: float) -> bool:
    """True when the peer closes `sock` (EOF or reset) within `timeout_s`."""
    sock.settimeout(timeout_s)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_idle_connections_from_other_addresses_are_closed_and_the_head_is_still_answered(agent):
    strangers = []
    try:
        t0 = time.monotonic()
        for _ in range(60):  # far more than the agent serves at once
            s = socket.socket()
            s.bind(("127.0.0.2", 0))  # another address of this machine: not the head
            s.connect(("127.0.0.1", agent.port))
            strangers.append(s)
        # the burst fits the listen backlog: no connect waits for TCP's 1 s SYN retry (with
        # socketserver's backlog of 5 these 60 took 9 s)
        assert time.monotonic() - t0 < 3.0
        assert all(_closed_within(s, 5.0) for s in strangers)
        assert agent.client.health().ok
    finally:
        for s in strangers:
            s.close()
    assert any("127.0.0.2 is not the head" in line for line in agent.log)
    assert sum("127.0.0.2" in line for line in agent.log) == 1  # one line per address, not a flood


@pytest.mark.slow
def test_idle_connections_from_the_head_time_out_and_their_number_is_bounded(tmp_path):
    a = Agent(tmp_path, timeout_s=0.5, max_connections=3)
    idle = []
    try:
        idle = [socket.create_connection(("127.0.0.1", a.port)) for _ in range(3)]
        deadline = time.monotonic() + 5
        while a.server.open_connections() < 3:  # the agent has taken all three
            assert time.monotonic() < deadline, "the agent did not take the connections"
            time.sleep(0.01)
        with socket.create_connection(("127.0.0.1", a.port), timeout=5) as extra:
            assert extra.recv(200).startswith(b"HTTP/1.0 503")  # over the limit: refused, not queued
        t0 = time.monotonic()
        assert all(_closed_within(s, 5.0) for s in idle)
        assert time.monotonic() - t0 < 3.0  # the 0.5 s read timeout, not the test's bound
        assert a.client.health().ok
    finally:
        for s in idle:
            s.close()
        a.close()


@pytest.mark.slow
def test_a_request_dripped_byte_by_byte_is_cut_at_the_read_deadline(tmp_path):
    a = Agent(tmp_path, timeout_s=0.6)
    try:
        with socket.create_connection(("127.0.0.1", a.port)) as s:
            t0 = time.monotonic()
            cut = False
            for byte in b"GET /health HTTP/1.1\r\n" + b"X-Pad: " + b"a" * 200:
                try:
                    s.sendall(bytes([byte]))
                except OSError:
                    cut = True
                    break
                if _closed_within(s, 0.05):  # each byte comes well inside the per-read timeout
                    cut = True
                    break
            assert cut and time.monotonic() - t0 < 5.0
    finally:
        a.close()


@pytest.mark.vllm
def test_every_default_allowed_argument_is_a_vllm_serve_option():
    from vllm.entrypoints.launchers.cli_args import make_arg_parser
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    from bench.run.node_policy import DEFAULT_ALLOWED_ARGS

    dests = {a.dest for a in make_arg_parser(FlexibleArgumentParser())._actions}
    assert DEFAULT_ALLOWED_ARGS <= dests, DEFAULT_ALLOWED_ARGS - dests
    assert not DEFAULT_ALLOWED_ARGS & {"trust_remote_code", "worker_cls", "worker_extension_cls", "chat_template",
                                       "master_addr", "data_parallel_address", "config", "tokenizer", "revision",
                                       "compilation_config", "speculative_config", "load_format", "download_dir"}


def test_the_agents_child_does_not_inherit_the_secret(monkeypatch, tmp_path):
    from bench.engines.node_auth import take_secret

    monkeypatch.setenv("BENCH_NODE_SECRET", SECRET.decode())
    assert take_secret() == SECRET
    assert "BENCH_NODE_SECRET" not in os.environ  # so the headless vLLM started later never sees it
