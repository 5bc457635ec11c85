"""Energy of a configuration that spans machines: the head's meter plus each follower's, read
through its `bench node serve` agent (bench.run.node_agent).

`NodesMeter` is one meter over every device of every node: a read is the head's local read
followed by one GET /energy per agent, all stamped by the head's session at the read's
midpoint on the head's perf_counter clock. A window's energy is then each node's counter at
the head's window start and end, summed, with no clock synchronised anywhere; the samples in
between give the sampled-power cross-check per device as on one machine. An agent that does
not answer gives None readings: a window whose start or end falls on such a read is invalid
("127.0.0.1:8791/gpu0: counter not read at the window end"), and the error is kept in notes.
Every read is a signed request and its answer must carry the agent's signature
(bench.engines.node_auth): a reading from anything without the shared secret is a failed read.
"""

from __future__ import annotations

from bench.engines.multinode import NodeClient
from bench.errors import EngineError, TelemetryError, one_line
from bench.telemetry.base import TelemetrySession
from bench.telemetry.types import EnergyMethod, Meter, Reading

READ_TIMEOUT_S = 1.0  # one agent read; a slower one is a missed read, not a stalled sampler


class RemoteMeter:
    """One follower's meter, as its agent reports it."""

    def __init__(self, client: NodeClient):
        self.client = client
        try:
            first = client.energy()
        except EngineError as e:
            raise TelemetryError(f"energy of {e}") from None
        try:  # the agent names its method; the method says what it reads
            self.method = EnergyMethod(first.method).value
        except (TypeError, ValueError):
            raise TelemetryError(f"energy of node {client.addr}: unknown energy method "
                                 f"{one_line(str(first.method))!r}") from None
        self.has_counter = EnergyMethod(self.method).has_counter
        self.measured = first.measured
        self.devices = [f"{client.addr}/{d}" for d in first.devices]
        self.counter_range_j = list(first.counter_range_j)
        self.nominal_power_w = first.nominal_power_w
        self.read_errors = 0
        self.last_error: str | None = None

    def read(self) -> list[Reading]:
        try:
            answer = self.client.energy(timeout_s=READ_TIMEOUT_S)
            readings = [Reading(e, p) for e, p in answer.readings]
            if len(readings) != len(self.devices):
                raise EngineError(f"node {self.client.addr}: {len(readings)} readings for {len(self.devices)} devices")
            return readings
        except (EngineError, KeyError, TypeError, ValueError) as e:
            self.read_errors += 1
            self.last_error = str(e)
            return [Reading(None, None) for _ in self.devices]

    def close(self) -> None:
        pass

    def describe(self) -> dict:
        return {"node": self.client.addr, "method": self.method, "devices": list(self.devices),
                "read_errors": self.read_errors, "last_error": self.last_error}


class NodesMeter:
    """The head's meter and every follower's as one meter (devices "head/gpu0", "host:port/gpu0")."""

    def __init__(self, local, remotes: list[RemoteMeter]):
        methods = {"head": local.method, **{r.client.addr: r.method for r in remotes}}
        if len(set(methods.values())) > 1:
            listed = ", ".join(f"{k} {v}" for k, v in methods.items())
            raise TelemetryError(f"the nodes measure energy differently ({listed}): one method on every node")
        self.local = local
        self.remotes = remotes
        self.method = local.method
        self.has_counter = local.has_counter  # one method on every node, so one capability
        self.measured = local.measured and all(r.measured for r in remotes)
        self.devices = [f"head/{d}" for d in local.devices] + [d for r in remotes for d in r.devices]
        self.counter_range_j = list(local.counter_range_j) + [c for r in remotes for c in r.counter_range_j]
        nominal = [local.nominal_power_w, *(r.nominal_power_w for r in remotes)]
        self.nominal_power_w = [w for ws in nominal for w in ws] if all(ws is not None for ws in nominal) else None
        self._own_errors = 0  # reads that raised (counted by the session's sampler)

    @property
    def read_errors(self) -> int:
        """Every failed read: the head's meter's, each agent's, and the ones that raised here."""
        return self._own_errors + self.local.read_errors + sum(r.read_errors for r in self.remotes)

    @read_errors.setter
    def read_errors(self, value: int) -> None:  # the sampler's `meter.read_errors += 1`
        self._own_errors += value - self.read_errors

    def read(self) -> list[Reading]:
        out = list(self.local.read())
        for remote in self.remotes:
            out += remote.read()
        return out

    def close(self) -> None:
        self.local.close()

    def describe(self) -> dict:
        return {"method": self.method, "head": self.local.describe(), "nodes": [r.describe() for r in self.remotes]}


def with_nodes(session: TelemetrySession, nodes: list[str]) -> TelemetrySession:
    """An unstarted session over `session`'s meter and every node's (`nodes`: agents, host:port).

    Nodes that measure differently from the head, or an agent that does not answer at the start,
    give a session that measures nothing, with the reason in its notes: energy of a part of the
    configuration is never reported as the whole."""
    from bench.telemetry.base import NoMeter

    notes = list(session.notes)
    meter: Meter
    try:
        meter = NodesMeter(session.meter, [RemoteMeter(NodeClient(addr)) for addr in nodes])
    except TelemetryError as e:
        session.meter.close()
        notes.append(f"{e}; energy not reported")
        meter = NoMeter()
    return TelemetrySession(meter, interval_s=session.interval_s, clock=session.clock, sleep=session.sleep,
                            requested=session.requested, notes=notes, device_indices=None)
