"""What the head and a follower's `bench node serve` agent send each other, typed.

    head -> agent   POST /engine/start   StartRequest  -> StartAnswer
                    POST /engine/stop    (empty)       -> Stopped
                    POST /exit           (empty)       -> Exiting
                    GET  /health                       -> NodeHealth (its child: ChildState)
                    GET  /energy                       -> EnergySnapshot
    a refusal       any 4xx / 5xx                      -> Refusal

Both sides parse what they read into these models (unknown keys refused), so neither reads a
dict: the agent (bench.run.node_agent, node_policy, node_http) a request, the head
(bench.engines.multinode.NodeClient, bench.telemetry.remote) an answer. They live here, in
engines/, because the head's engine builds the request and run/ may import from engines/.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_PORT = 65535
Port = Annotated[int, Field(ge=1, le=MAX_PORT, strict=True)]


class WireModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Rendezvous(WireModel):
    """Where the followers meet the head: its address and the ports it listens on."""

    model_config = ConfigDict(frozen=True)

    head_addr: str = Field(max_length=255)  # the head as the followers reach it (torch.distributed master, DP address)
    master_port: Port  # torch.distributed rendezvous (TP x PP over nodes)
    dp_rpc_port: Port  # data-parallel handshake (DP over nodes)


NodeDevice = Literal["cuda", "cpu"]  # what a node's vLLM runs on


class StartRequest(WireModel):
    """POST /engine/start: the typed configuration and this node's place in it (never a
    command line: the agent builds its own, bench.run.node_policy checks every field)."""

    bench_version: str
    config: dict[str, Any]  # an EngineConfig, validated by the agent after the version check
    node_rank: int = Field(ge=1, strict=True)
    rendezvous: Rendezvous
    device: NodeDevice


class StartAnswer(WireModel):
    """The follower's headless vLLM, started: its pid, command line and log file."""

    pid: int
    argv: list[str]
    log: str


class ChildState(WireModel):
    """The agent's headless vLLM, or `error` when the agent could not be asked (head side)."""

    state: Literal["none", "running", "exited", "unreachable"]
    pid: int | None = None
    returncode: int | None = None
    config_id: str | None = None
    log_tail: str = ""
    error: str | None = None


class MeterInfo(WireModel):
    method: str
    devices: list[str]


class NodeHealth(WireModel):
    ok: bool
    bench_version: str
    child: ChildState
    meter: MeterInfo


class EnergySnapshot(WireModel):
    """One read of every device of the follower: cumulative counter (J) and power (W), None
    where not read; what its meter is (method, devices, counter wrap periods in J)."""

    method: str
    measured: bool
    devices: list[str]
    counter_range_j: list[float | None]
    nominal_power_w: list[float] | None = None
    read_errors: int = 0
    readings: list[tuple[float | None, float | None]]


class Stopped(WireModel):
    stopped: Literal[True] = True


class Exiting(WireModel):
    exiting: Literal[True] = True


class Refusal(WireModel):
    error: str  # one line
