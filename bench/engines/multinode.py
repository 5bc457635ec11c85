"""One model over several machines: vLLM's multiprocessing multi-node launch (vLLM 0.32).

One EngineConfig with `nnodes` > 1 becomes one vLLM process per node (`node_launch_args`,
golden-tested and checked with vLLM's own parser in tests):
- no data parallelism: one TP x PP world split over the nodes; every node gets
  `--nnodes N --node-rank R --master-addr HEAD --master-port P`, the followers `--headless`;
- data parallelism: whole replicas per node; every node gets `--data-parallel-size`,
  `--data-parallel-size-local`, `--data-parallel-address HEAD`, `--data-parallel-rpc-port`,
  the followers `--headless --data-parallel-start-rank R x local`.
The head (this machine) runs the API server the client talks to; each follower's headless
process is started by the `bench node serve` agent on that machine (bench.run.node_agent),
which also serves its energy counter (bench.telemetry.remote). `MultiNodeEngine` is the head
plus its followers behind the one engine interface the runner knows: a follower that dies
makes the engine not alive, so the point fails as a local engine death would.
"""

from __future__ import annotations

import socket
import sys
import urllib.error
import urllib.request
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ValidationError

from bench.engines.base import EngineCounters, EngineDied, engine_args_to_cli, quote_log
from bench.engines.node_auth import (
    NONCE_HEADER,
    SIGNATURE_HEADER,
    answer_is_signed,
    load_secret,
    sign_request,
)
from bench.engines.node_wire import (
    ChildState,
    EnergySnapshot,
    Exiting,
    NodeDevice,
    NodeHealth,
    Refusal,
    Rendezvous,
    StartAnswer,
    StartRequest,
    Stopped,
)
from bench.engines.process import free_port
from bench.engines.vllm_args import vllm_launch_args
from bench.errors import ConfigError, EngineError, one_line

HEADLESS_MODULE = "bench.engines.vllm_headless"  # `vllm serve --headless` without the console script
AGENT_WAIT_S = 300.0  # how long the head waits for a follower's agent to answer before starting
_ANSWERED: set[str] = set()  # agents that have answered this process once
Answer = TypeVar("Answer", bound=BaseModel)


def node_launch_args(cfg: Any, node_rank: int, rdv: Rendezvous, device: str = "cuda") -> dict[str, Any]:
    """vLLM EngineArgs keys of node `node_rank` (0 = the head) for `cfg` over `cfg.nnodes` machines."""
    n = cfg.nnodes
    if not 0 <= node_rank < n:
        raise ValueError(f"node rank {node_rank} outside 0..{n - 1}")
    args = vllm_launch_args(cfg, device)
    follower = {"headless": True} if node_rank else {}
    if cfg.data_parallel_size > 1:
        local = cfg.data_parallel_size // n
        args.update(follower, data_parallel_size_local=local, data_parallel_address=rdv.head_addr,
                    data_parallel_rpc_port=rdv.dp_rpc_port)
        if node_rank:
            args["data_parallel_start_rank"] = node_rank * local
    else:
        args.update(follower, nnodes=n, node_rank=node_rank, master_addr=rdv.head_addr, master_port=rdv.master_port)
    return args


def follower_argv(cfg: Any, model_path: str, node_rank: int, rdv: Rendezvous, device: str = "cuda") -> list[str]:
    """The command line of a follower's headless vLLM process."""
    if node_rank < 1:
        raise ValueError("node rank 0 is the head: it runs the API server (VllmServer)")
    args = node_launch_args(cfg, node_rank, rdv, device)
    return [sys.executable, "-m", HEADLESS_MODULE, "--model", model_path, *engine_args_to_cli(args)]


def head_address(follower_host: str) -> str:
    """This machine's address on the route to `follower_host` (no packet is sent: a UDP connect
    only selects the interface)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect((socket.gethostbyname(follower_host), 9))
        except OSError as e:
            raise EngineError(f"no route to node {follower_host}: {e}") from None
        return s.getsockname()[0]


def new_rendezvous(nodes: list[str], head_addr: str | None = None) -> Rendezvous:
    host = head_addr or head_address(nodes[0].rpartition(":")[0])
    return Rendezvous(head_addr=host, master_port=free_port("0.0.0.0"), dp_rpc_port=free_port("0.0.0.0"))


class NodeRefused(EngineError):
    """The agent refused (an HTTP 4xx/5xx, an unsigned answer) or cannot be asked (no secret on
    the head): waiting longer would not help."""


class NodeClient:
    """The head's side of one `bench node serve` agent: JSON over HTTP, every request signed with
    the shared secret and every answer checked for the agent's signature (bench.engines.node_auth)."""

    def __init__(self, addr: str, timeout_s: float = 5.0, secret: bytes | None = None):
        self.addr = addr
        self.timeout_s = timeout_s
        self._secret = secret  # None: read from the environment at the first call

    def _key(self) -> bytes:
        if self._secret is None:
            try:
                self._secret = load_secret()
            except ConfigError as e:  # the head refuses to use nodes without one
                raise NodeRefused(f"node {self.addr}: {e}") from None
        return self._secret

    def call(self, method: str, path: str, answer: type[Answer], body: BaseModel | None = None,
             timeout_s: float | None = None) -> Answer:
        """The agent's answer, as `answer`; EngineError (one line) when it cannot be reached,
        NodeRefused when it refuses or answers something else."""
        key = self._key()
        data = body.model_dump_json().encode() if body is not None else (b"{}" if method == "POST" else None)
        headers = sign_request(key, method, path, data or b"")
        req = urllib.request.Request(f"http://{self.addr}{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json", **headers})
        try:
            with urllib.request.urlopen(req, timeout=timeout_s or self.timeout_s) as r:
                raw, status, signature = r.read(), r.status, r.headers.get(SIGNATURE_HEADER)
        except urllib.error.HTTPError as e:
            text = e.read().decode("utf-8", "replace")
            try:
                detail = Refusal.model_validate_json(text).error
            except ValidationError:
                detail = text
            detail = one_line(detail)
            raise NodeRefused(f"node {self.addr}: {method} {path} refused ({e.code}): {detail}") from None
        except (urllib.error.URLError, OSError, ValueError) as e:
            reason = getattr(e, "reason", e)
            raise EngineError(f"node {self.addr}: agent unreachable ({reason})") from None
        if not answer_is_signed(key, headers[NONCE_HEADER], status, raw, signature):
            raise NodeRefused(f"node {self.addr}: {method} {path}: the answer is not signed with the shared secret "
                              "(not a bench agent of this head, or another secret)")
        try:
            return answer.model_validate_json(raw)
        except ValidationError as e:
            raise NodeRefused(f"node {self.addr}: {method} {path}: not the answer of this bench's agent "
                              f"({answer.__name__}: {e.errors()[0]['msg']})") from None

    def health(self) -> NodeHealth:
        return self.call("GET", "/health", NodeHealth)

    def wait_ready(self, timeout_s: float) -> NodeHealth:
        """Its /health once it answers (a follower launched beside the head may still be installing);
        the last EngineError after `timeout_s`. An agent that answered before in this process and
        no longer does is gone, not late: no wait; one that refuses (another secret) is not late either."""
        import time

        deadline = time.monotonic() + (0.0 if self.addr in _ANSWERED else timeout_s)
        while True:
            try:
                answer = self.health()
                _ANSWERED.add(self.addr)
                return answer
            except NodeRefused:
                raise
            except EngineError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(1.0)

    def energy(self, timeout_s: float = 2.0) -> EnergySnapshot:
        return self.call("GET", "/energy", EnergySnapshot, timeout_s=timeout_s)

    def start(self, request: StartRequest) -> StartAnswer:
        return self.call("POST", "/engine/start", StartAnswer, request, timeout_s=120.0)

    def stop(self) -> Stopped:
        return self.call("POST", "/engine/stop", Stopped, timeout_s=60.0)

    def release(self) -> Exiting:
        """The head is done with this node: its agent stops its child and exits (`bench node release`)."""
        return self.call("POST", "/exit", Exiting)


def start_request(cfg: Any, node_rank: int, rdv: Rendezvous, device: NodeDevice) -> StartRequest:
    """What the head sends an agent: the typed configuration and this node's place in it (never a
    command line: the agent builds its own, so it runs nothing but vLLM)."""
    from bench import __version__

    return StartRequest(bench_version=__version__, config=cfg.model_dump(mode="json"), node_rank=node_rank,
                        rendezvous=rdv, device=device)


class MultiNodeEngine:
    """The head's engine (the API server) and the followers' headless processes, as one engine."""

    kind: ClassVar[str] = "server"

    def __init__(self, head, cfg: Any, rdv: Rendezvous, device: NodeDevice = "cuda", followers: list[NodeClient] | None = None):
        self.head = head
        self.cfg = cfg
        self.rdv = rdv
        self.device = device
        self.followers = followers if followers is not None else [NodeClient(a) for a in cfg.nodes or []]
        self.started: dict[str, StartAnswer] = {}  # agent -> its answer to /engine/start (pid, argv)
        self.agent_wait_s = AGENT_WAIT_S

    # the head answers everything the client and the counters need
    @property
    def base_url(self) -> str:
        return self.head.base_url

    @property
    def served_model(self) -> str:
        return self.head.served_model

    @property
    def pid(self) -> int | None:
        return getattr(self.head, "pid", None)

    def version(self) -> str:
        return self.head.version()

    def server_counters(self) -> EngineCounters | None:
        return self.head.server_counters()

    def reset_prefix_cache(self) -> str:
        return self.head.reset_prefix_cache()

    def start(self) -> None:
        """Followers first (each waits for the head's rendezvous), then the head, which is healthy
        once every follower has joined."""
        try:
            for node in self.followers:
                node.wait_ready(self.agent_wait_s)
            for rank, node in enumerate(self.followers, start=1):
                self.started[node.addr] = node.start(start_request(self.cfg, rank, self.rdv, self.device))
            self.head.start()
        except NodeRefused:  # an agent said no (secret, allow-list): nothing died
            self.stop()
            raise
        except EngineError as e:
            dead = self._dead_followers()
            self.stop()
            if dead:
                raise EngineDied(f"{e}; {dead}") from None
            raise

    def follower_states(self) -> dict[str, ChildState]:
        """agent -> its /health child state, or "unreachable" with the error."""
        out = {}
        for node in self.followers:
            try:
                out[node.addr] = node.health().child
            except EngineError as e:
                out[node.addr] = ChildState(state="unreachable", error=str(e))
        return out

    def _dead_followers(self) -> str:
        parts = []
        for addr, child in self.follower_states().items():
            if child.state != "running":
                what = child.error or f"headless vLLM {child.state} (exit code {child.returncode})"
                parts.append(f"node {addr}: {what}" + quote_log(child.log_tail[-600:]))
        return "; ".join(parts)

    def alive(self) -> bool:
        return self.head.alive() and not self._dead_followers()

    def healthy(self) -> bool:
        return self.head.healthy() and not self._dead_followers()

    def log_tail(self, n: int = 20) -> str:
        dead = self._dead_followers()
        return "; ".join(p for p in (self.head.log_tail(n), dead) if p)

    def stop(self) -> None:
        self.head.stop()
        for node in self.followers:
            try:
                node.stop()
            except EngineError:
                pass  # an unreachable agent's process is that machine's to end

    def describe(self) -> dict:
        """Recorded with the run: the nodes, the rendezvous and each follower's command line."""
        return {"nnodes": self.cfg.nnodes, "head": self.rdv.head_addr, "rendezvous": self.rdv.model_dump(),
                "followers": {addr: {"pid": s.pid, "argv": s.argv} for addr, s in self.started.items()}}


def over_nodes(head, cfg: Any, device: NodeDevice = "cuda", head_addr: str | None = None) -> MultiNodeEngine:
    """`head` (the engine `cfg` starts on this machine, not yet started) with its followers: a
    vLLM head gets node rank 0's arguments; an endpoint head is a server someone else launched."""
    from bench.engines.vllm_server import VllmServer

    if not cfg.nodes:
        raise EngineError(f"{cfg.parallel_label()}: needs {cfg.nnodes - 1} follower agent(s) "
                          "(`nodes: [host:port]` in the sweep; `bench node serve` on each follower)")
    try:
        secret = load_secret()
    except ConfigError as e:  # refused before any agent is asked
        raise EngineError(f"{cfg.parallel_label()}: {e}") from None
    rdv = new_rendezvous(cfg.nodes, head_addr)
    if isinstance(head, VllmServer):
        head.engine_args = node_launch_args(cfg, 0, rdv, device)
    return MultiNodeEngine(head, cfg, rdv, device, followers=[NodeClient(a, secret=secret) for a in cfg.nodes])
