"""The Ray backend: one Ray task per shard on an existing cluster, placed by accelerator.

Each task asks for its configuration's GPUs (`num_gpus`) on a node of its hardware type:
`accelerator_type=<name>` (the `accelerator_type:<name>` resource every GPU node advertises)
for one type, `label_selector={"ray.io/accelerator-type": "in(a,b)"}` for any of several
(bench.fleet.accelerators). The task writes the sweep file's bytes to a temporary file on its node
and runs the shard command there as a child process (bench.fleet.shard); Ray sets
CUDA_VISIBLE_DEVICES to the GPUs it granted. Ray retries a task whose node died (a
preempted node): the shard resumes from the store.

Tasks are submitted by a detached actor named after the fleet (namespace "bench-fleet"),
so they outlive `bench fleet launch`; `status`, `logs` and `cancel` ask that actor, on the
cluster the user names (`--ray-address`, $RAY_ADDRESS, or the launch's record on this
machine), never on an address read from the store. The nodes need bench installed and the
store's credentials in their own environment: Ray has no secrets, so only the store URL and
plain settings (BENCH_S3_ENDPOINT_URL, the AWS region) travel with a task, and one that
carries a credential (a password, token or signature) is refused.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from bench.engines.lifeline import guarded
from bench.errors import ConfigError
from bench.fleet.accelerators import CPU, RAY, accelerator
from bench.fleet.backends.base import (
    STORE_ENV,
    carried_credentials,
    library_error,
    remote_env,
    require,
    shard_argv,
)
from bench.fleet.records import FleetRecord, RayRecord
from bench.fleet.state import View, utc_now

if TYPE_CHECKING:
    from ray import ObjectRef

NAMESPACE = "bench-fleet"
SWEEP_MARK = "{sweep}"  # replaced on the node by the path of the sweep's temporary copy
TASK_RETRIES = 3  # node deaths (preemption) only; a shard's own failure is not retried by Ray


@dataclass(frozen=True)
class ShardTask:
    """What a shard's Ray task is given: its task options, the shard command and the sweep's bytes."""

    shard_id: str
    options: dict  # Ray's `.options()` of the task (RayBackend.options)
    env: dict[str, str]  # plain settings for the store (bench.fleet.backends.base.remote_env)
    sweep_bytes: bytes  # the very bytes: the shard checks their sha256
    sweep_name: str
    argv: list[str]  # the shard command, SWEEP_MARK where the sweep's path goes


@dataclass(frozen=True)
class RayTaskResult:
    """What a finished shard task returns: where it ran and how it ended."""

    node_id: str
    resources: dict[str, float]  # what Ray granted it (GPU, accelerator_type:<name>, ...)
    cuda_visible_devices: str | None
    returncode: int
    log_tail: str = field(default="", repr=False)


class RayBackend:
    name = "ray"

    def __init__(self, address: str | None = None):
        self.address = address

    @classmethod
    def from_options(cls, ray_address=None, address=None, **_):
        return cls(ray_address or address)

    def record(self) -> RayRecord:
        """The cluster the launch used (its address, or $RAY_ADDRESS then); None: Ray's `auto`."""
        return RayRecord(address=self.address or os.environ.get("RAY_ADDRESS") or None)

    def options(self, shard) -> dict:
        """The `.options()` of the shard's task: its GPUs on a node of its hardware type."""
        opts = {"num_cpus": 1, "num_gpus": shard.n_gpus, "max_retries": TASK_RETRIES,
                "name": f"bench-shard-{shard.shard_id}"}
        if CPU in shard.hardware:
            if len(shard.hardware) > 1:
                raise ConfigError(f"ray: shard {shard.shard_id}: {CPU} cannot be one of several hardware types")
            return {**opts, "num_gpus": 0}
        names = sorted({accelerator(RAY, hw, "ray") for hw in shard.hardware})
        if len(names) == 1:
            return {**opts, "accelerator_type": names[0]}
        return {**opts, "label_selector": {"ray.io/accelerator-type": f"in({','.join(names)})"}}

    def placements(self, fleet, shards) -> dict[str, str]:
        return {s.shard_id: self._placement(s) for s in shards}

    def _placement(self, shard) -> str:
        opts = self.options(shard)
        where = (f"accelerator_type:{opts['accelerator_type']}" if "accelerator_type" in opts else
                 f"ray.io/accelerator-type {opts['label_selector']['ray.io/accelerator-type']}"
                 if "label_selector" in opts else "any node")
        return f"num_gpus={opts['num_gpus']}, {where}"

    def submit(self, fleet, shards, store_url: str) -> list[str]:
        carried = carried_credentials(store_url)
        if carried:
            what = "the store URL" if carried[0] == STORE_ENV else f"${carried[0]}"
            raise ConfigError(f"ray: {what} carries a credential (a password, token or signature) and Ray has no "
                              "secrets: give the nodes credentials in their own environment and pass plain values")
        plain, _secrets = remote_env(store_url)  # the secrets stay here: the nodes hold their own
        data = Path(fleet.sweep_path).read_bytes()
        specs = [ShardTask(shard_id=s.shard_id, options=self.options(s), env=plain, sweep_bytes=data,
                           sweep_name=Path(fleet.sweep_path).name,
                           argv=shard_argv(fleet.fleet_id, s, SWEEP_MARK, self.name)) for s in shards]
        ray = require("ray", "ray", "fleet-ray")

        with _connected(self.address):
            driver = _driver_class().options(name=_actor_name(fleet.fleet_id), namespace=NAMESPACE,
                                             lifetime="detached", get_if_exists=True).remote()
            started = set(ray.get(driver.submit.remote(specs)))
        return [f"{s.shard_id}: ray task ({self._placement(s)})" if s.shard_id in started
                else f"{s.shard_id}: its ray task is still running" for s in shards]

    def status(self, record: FleetRecord, shard_ids: list[str]) -> dict[str, View]:
        answer = self._ask(record.fleet_id, "status") or {}
        return {sid: view for sid, view in answer.items() if sid in shard_ids}

    def logs(self, record: FleetRecord, shard_id: str, tail: int = 200) -> str | None:
        text = self._ask(record.fleet_id, "logs", shard_id)
        return "\n".join(text.splitlines()[-tail:]) if text else None

    def cancel(self, record: FleetRecord, shard_ids: list[str]) -> list[str]:
        cancelled = set(self._ask(record.fleet_id, "cancel", shard_ids) or [])
        return [f"{sid}: {'cancel sent' if sid in cancelled else 'no ray task running'}" for sid in shard_ids]

    def _ask(self, fleet_id: str, method: str, *args):
        """Call the fleet's driver actor (None when the cluster has none)."""
        ray = require("ray", "ray", "fleet-ray")

        with _connected(self.address):
            try:
                driver = ray.get_actor(_actor_name(fleet_id), namespace=NAMESPACE)
            except ValueError:
                return None
            return ray.get(getattr(driver, method).remote(*args))


@contextlib.contextmanager
def _connected(address: str | None):
    """Connected to the cluster for the block (an existing connection is kept as it is)."""
    import logging

    ray = require("ray", "ray", "fleet-ray")
    if ray.is_initialized():
        yield
        return
    where = address or os.environ.get("RAY_ADDRESS") or "auto"
    try:
        ray.init(address=where, namespace=NAMESPACE, log_to_driver=False, logging_level=logging.WARNING)
    except Exception as e:  # noqa: BLE001 - ConnectionError, RuntimeError, ... by Ray version
        raise library_error(f"ray: cannot connect to the cluster at {where}", e) from None
    try:
        yield
    finally:
        ray.shutdown()


def _actor_name(fleet_id: str) -> str:
    return f"bench-fleet-{fleet_id}"


def _driver_class():
    import ray

    return ray.remote(num_cpus=0)(FleetDriver)


@dataclass
class _Submitted:
    ref: ObjectRef[RayTaskResult]  # the task's result, once it has finished
    submitted_utc: str


class FleetDriver:
    """The fleet's detached actor: owns its shards' tasks, so they outlive the launcher."""

    def __init__(self):
        self.tasks: dict[str, _Submitted] = {}

    def _done(self, t: _Submitted) -> bool:
        import ray

        return bool(ray.wait([t.ref], timeout=0)[0])

    def submit(self, specs: list[ShardTask]) -> list[str]:
        import ray

        task = ray.remote(run_shard_task)
        started = []
        for spec in specs:
            current = self.tasks.get(spec.shard_id)
            if current is not None and not self._done(current):
                continue  # still running: never two attempts at once
            ref = task.options(**spec.options).remote(spec)
            self.tasks[spec.shard_id] = _Submitted(ref, utc_now())
            started.append(spec.shard_id)
        return started

    def status(self) -> dict[str, View]:
        import ray

        out = {}
        for sid, t in self.tasks.items():
            if not self._done(t):
                out[sid] = View("running", f"ray task since {t.submitted_utc}")
                continue
            try:
                result: RayTaskResult = ray.get(t.ref)
            except Exception as e:  # noqa: BLE001 - a task that raised (cancelled, node lost past retries)
                out[sid] = View("exited", f"ray task failed: {type(e).__name__}")
                continue
            out[sid] = View("exited", f"exit code {result.returncode} on node {result.node_id[:12]}", result)
        return out

    def logs(self, shard_id: str) -> str | None:
        import ray

        t = self.tasks.get(shard_id)
        if t is None or not self._done(t):
            return None  # a running shard's output is in the store (shard.log)
        try:
            return ray.get(t.ref).log_tail
        except Exception:  # noqa: BLE001
            return None

    def cancel(self, shard_ids: list[str]) -> list[str]:
        import ray

        out = []
        for sid in shard_ids:
            t = self.tasks.get(sid)
            if t is not None and not self._done(t):
                ray.cancel(t.ref)  # KeyboardInterrupt in the task: it stops its shard with SIGTERM
                out.append(sid)
        return out


def run_shard_task(spec: ShardTask) -> RayTaskResult:
    """The body of a shard's Ray task, on its node: the shard command as a child process."""
    import ray

    ctx = ray.get_runtime_context()
    tail: deque[str] = deque(maxlen=200)
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
        sweep = Path(tmp) / spec.sweep_name
        sweep.write_bytes(spec.sweep_bytes)
        argv = [str(sweep) if a == SWEEP_MARK else a for a in spec.argv]
        argv[0] = sys.executable
        # a worker killed by Ray (node memory, a lost owner) takes its shard along: never a
        # second attempt beside a retried task
        proc = subprocess.Popen(guarded(argv), env={**os.environ, **spec.env}, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True)
        if proc.stdout is None:  # stdout=PIPE: always set
            raise RuntimeError("shard task: no stdout pipe from its child")
        try:
            for line in proc.stdout:
                tail.append(line)
            code = proc.wait()
        except KeyboardInterrupt:  # ray.cancel: the shard saves what it finished and says so
            proc.terminate()
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
            raise
    return RayTaskResult(node_id=ctx.get_node_id(), resources=ctx.get_assigned_resources(),
                         cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"), returncode=code,
                         log_tail="".join(tail))
