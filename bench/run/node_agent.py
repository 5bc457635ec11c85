"""`bench node serve`: the agent on a follower machine of a multi-node configuration.

It starts that node's headless vLLM process when the head asks (POST /engine/start with the
typed EngineConfig and the node's rank, checked by bench.run.node_policy: a model of its own
catalog or cache, the head's rendezvous, engine arguments on its allow-list; the agent builds
the command line itself), reports its health (GET /health: the child's state and log tail),
stops it (POST /engine/stop), exits when the head releases it (POST /exit), and serves a
snapshot of this machine's energy counters (GET /energy: one read of the local meter, NVML /
amdsmi / RAPL / nominal, as the head's sampler would read its own). The head stamps every
snapshot with its own clock (bench.telemetry.remote), so no clock is synchronised for energy.
Only the head's address, and only requests signed with the shared secret, are answered
(bench.run.node_http, bench.engines.node_auth).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from bench.engines.base import device_env, vllm_child_env
from bench.engines.multinode import follower_argv, node_launch_args
from bench.engines.node_wire import (
    ChildState,
    EnergySnapshot,
    MeterInfo,
    NodeHealth,
    Rendezvous,
    StartAnswer,
    StartRequest,
    Stopped,
)
from bench.engines.process import ChildProcess, log_tail
from bench.errors import ConfigError
from bench.run.node_policy import allow_list, check_start

ChildCommand = Callable[[Any, str, int, Rendezvous, str], list[str]]  # (cfg, model_path, rank, rdv, device) -> argv


class NodeAgent:
    """The state behind the HTTP routes: one meter, at most one headless child."""

    def __init__(self, meter, *, cache_dir: Path, log_dir: Path, gpus: list[int] | None = None,
                 vendor: str | None = "nvidia", device: str = "cuda", child_command: ChildCommand = follower_argv,
                 allow_args: Iterable[str] = ()):
        self.meter = meter
        self.cache_dir = Path(cache_dir)
        self.log_dir = Path(log_dir)
        self.gpus = gpus
        self.vendor = vendor
        self.device = device
        self.child_command = child_command
        self.allowed_args = allow_list(allow_args)  # engine arguments a head may pass (node_policy)
        self.child: ChildProcess | None = None
        self.config_id: str | None = None
        self._meter_lock = threading.Lock()
        self._child_lock = threading.Lock()

    def start(self, request: StartRequest, heads: set[str]) -> StartAnswer:
        """Start this node's headless vLLM for a checked start request (`heads`: the head's
        addresses, the only rendezvous accepted); ConfigError / NotAllowed when refused."""
        checked = check_start(request, heads=heads, allowed_args=self.allowed_args, cache_dir=self.cache_dir)
        cfg, rank, rdv = checked.cfg, checked.node_rank, checked.rendezvous
        model_path = self._model_path(cfg, checked.weights)
        argv = self.child_command(cfg, model_path, rank, rdv, checked.device)
        env = vllm_child_env(checked.device, node_launch_args(cfg, rank, rdv, checked.device),
                             device_env(self.gpus, self.vendor))
        with self._child_lock:
            self._stop_child()
            self.config_id = cfg.config_id()
            self.child = ChildProcess(argv, self.log_dir / f"node{rank}-{self.config_id}.log", env)
            self.child.start()
            return StartAnswer(pid=self.child.pid, argv=argv, log=str(self.child.log_path))

    def _model_path(self, cfg, weights: str) -> str:
        if weights != "dummy":
            return weights  # the catalog's repo, or a folder under this node's cache (node_policy)
        from bench.catalog import get_model
        from bench.catalog.prepare import prepare_model

        return str(prepare_model(get_model(cfg.model), self.cache_dir))

    def stop(self) -> Stopped:
        with self._child_lock:
            self._stop_child()
        return Stopped()

    def _stop_child(self) -> None:
        if self.child is not None:
            self.child.stop()

    def child_state(self) -> ChildState:
        child = self.child
        if child is None:
            return ChildState(state="none")
        return ChildState(state="running" if child.alive() else "exited", pid=child.pid,
                          returncode=child.returncode, config_id=self.config_id, log_tail=log_tail(child.log_path, 20))

    def health(self) -> NodeHealth:
        from bench import __version__

        return NodeHealth(ok=True, bench_version=__version__, child=self.child_state(),
                          meter=MeterInfo(method=self.meter.method, devices=list(self.meter.devices)))

    def energy(self) -> EnergySnapshot:
        """One read of every local device: cumulative counter (J) and power (W), None where not read."""
        with self._meter_lock:
            readings = self.meter.read()
        return EnergySnapshot(method=self.meter.method, measured=self.meter.measured, devices=list(self.meter.devices),
                              counter_range_j=list(self.meter.counter_range_j),
                              nominal_power_w=self.meter.nominal_power_w, read_errors=self.meter.read_errors,
                              readings=[(r.energy_j, r.power_w) for r in readings])

    def close(self) -> None:
        self.stop()
        self.meter.close()


def allowed_addresses(head: str) -> set[str]:
    """The head's addresses (a name may resolve to several); the loopback when the head is this machine."""
    import socket

    host = head.rpartition(":")[0] if head.count(":") == 1 else head
    try:
        addrs = {str(info[4][0]) for info in socket.getaddrinfo(host, None)}  # an IP address
    except OSError as e:
        raise ConfigError(f"--head {head}: cannot resolve ({e})") from None
    return addrs
