"""`bench node serve`: the agent on a follower machine of a multi-node configuration.

It starts that node's headless vLLM process when the head asks (POST /engine/start with the
typed EngineConfig and the node's rank: the agent builds the command line itself, so a request
can start vLLM and nothing else), reports its health (GET /health: the child's state and log
tail), stops it (POST /engine/stop), exits when the head releases it (POST /exit), and serves a snapshot of this machine's energy counters
(GET /energy: one read of the local meter, NVML / amdsmi / RAPL / nominal, as the head's
sampler would read its own). The head stamps every snapshot with its own clock
(bench.telemetry.remote), so no clock is synchronised. Only the head's address is answered.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from bench.engines.base import device_env, vllm_child_env
from bench.engines.multinode import Rendezvous, follower_argv, node_launch_args
from bench.engines.process import ChildProcess, log_tail
from bench.errors import BenchError, ConfigError

ChildCommand = Callable[[Any, str, int, Rendezvous, str], list[str]]  # (cfg, model_path, rank, rdv, device) -> argv


class NodeAgent:
    """The state behind the HTTP routes: one meter, at most one headless child."""

    def __init__(self, meter, *, cache_dir: Path, log_dir: Path, gpus: list[int] | None = None,
                 vendor: str | None = "nvidia", device: str = "cuda", child_command: ChildCommand = follower_argv):
        self.meter = meter
        self.cache_dir = Path(cache_dir)
        self.log_dir = Path(log_dir)
        self.gpus = gpus
        self.vendor = vendor
        self.device = device
        self.child_command = child_command
        self.child: ChildProcess | None = None
        self.config_id: str | None = None
        self._meter_lock = threading.Lock()
        self._child_lock = threading.Lock()

    def start(self, request: dict) -> dict:
        from bench import __version__
        from bench.plan import EngineConfig

        if request.get("bench_version") != __version__:
            raise ConfigError(f"head runs bench {request.get('bench_version')}, this node {__version__}: "
                              "install the same version on every node")
        try:
            cfg = EngineConfig.model_validate(request["config"])
            rank, rdv = int(request["node_rank"]), Rendezvous(**request["rendezvous"])
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"bad start request: {str(e).splitlines()[0]}") from None
        device = request.get("device") or self.device
        model_path = self._model_path(cfg)
        argv = self.child_command(cfg, model_path, rank, rdv, device)
        env = vllm_child_env(device, node_launch_args(cfg, rank, rdv, device), device_env(self.gpus, self.vendor))
        with self._child_lock:
            self._stop_child()
            self.config_id = cfg.config_id()
            self.child = ChildProcess(argv, self.log_dir / f"node{rank}-{self.config_id}.log", env)
            self.child.start()
            return {"pid": self.child.proc.pid, "argv": argv, "log": str(self.child.log_path)}

    def _model_path(self, cfg) -> str:
        if cfg.weights != "dummy":
            return cfg.weights  # a repo id or a path that exists on this machine too
        from bench.catalog import get_model
        from bench.catalog.prepare import prepare_model

        return str(prepare_model(get_model(cfg.model), self.cache_dir))

    def stop(self) -> dict:
        with self._child_lock:
            self._stop_child()
        return {"stopped": True}

    def _stop_child(self) -> None:
        if self.child is not None:
            self.child.stop()

    def child_state(self) -> dict:
        child = self.child
        if child is None:
            return {"state": "none"}
        state = "running" if child.alive() else "exited"
        return {"state": state, "pid": child.proc.pid, "returncode": child.returncode, "config_id": self.config_id,
                "log_tail": log_tail(child.log_path, 20)}

    def health(self) -> dict:
        from bench import __version__

        return {"ok": True, "bench_version": __version__, "child": self.child_state(),
                "meter": {"method": self.meter.method, "devices": list(self.meter.devices)}}

    def energy(self) -> dict:
        """One read of every local device: cumulative counter (J) and power (W), None where not read."""
        with self._meter_lock:
            readings = self.meter.read()
        return {"method": self.meter.method, "measured": self.meter.measured, "devices": list(self.meter.devices),
                "counter_range_j": list(self.meter.counter_range_j), "nominal_power_w": self.meter.nominal_power_w,
                "read_errors": self.meter.read_errors, "readings": [[r.energy_j, r.power_w] for r in readings]}

    def close(self) -> None:
        self.stop()
        self.meter.close()


ROUTES = {("GET", "/health"): "health", ("GET", "/energy"): "energy",
          ("POST", "/engine/start"): "start", ("POST", "/engine/stop"): "stop", ("POST", "/exit"): "exit"}


def make_server(agent: NodeAgent, host: str, port: int, allowed: set[str]) -> ThreadingHTTPServer:
    """The agent's HTTP server on (host, port), answering only clients whose address is in `allowed`."""

    class Handler(BaseHTTPRequestHandler):
        def _route(self, method: str) -> None:
            if self.client_address[0] not in allowed:
                return self._send(403, {"error": f"{self.client_address[0]} is not the head ({', '.join(sorted(allowed))})"})
            name = ROUTES.get((method, self.path.split("?")[0]))
            if name is None:
                return self._send(404, {"error": f"no route {method} {self.path}"})
            try:
                body = {}
                if method == "POST":
                    length = int(self.headers.get("Content-Length") or 0)
                    body = json.loads(self.rfile.read(length) or b"{}") if length else {}
                if name == "exit":  # the head is done with this node (`bench node release`): stop serving
                    agent.stop()
                    threading.Thread(target=self.server.shutdown, daemon=True).start()
                    answer = {"exiting": True}
                else:
                    answer = getattr(agent, name)(body) if name == "start" else getattr(agent, name)()
            except (BenchError, ValueError) as e:
                return self._send(400, {"error": str(e).splitlines()[0][:500]})
            except Exception as e:  # noqa: BLE001 -- one bad request never stops the agent
                return self._send(500, {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"})
            self._send(200, answer)

        def do_GET(self):
            self._route("GET")

        def do_POST(self):
            self._route("POST")

        def _send(self, code: int, payload: dict) -> None:
            data = json.dumps(payload).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, fmt, *args):  # the head polls /energy every 100 ms: no access log
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server


def allowed_addresses(head: str) -> set[str]:
    """The head's addresses (a name may resolve to several); the loopback when the head is this machine."""
    import socket

    host = head.rpartition(":")[0] if head.count(":") == 1 else head
    try:
        addrs = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError as e:
        raise ConfigError(f"--head {head}: cannot resolve ({e})") from None
    return addrs
