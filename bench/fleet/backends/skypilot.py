"""The SkyPilot backend: one managed job per shard (`sky.jobs.launch`).

Each shard is a SkyPilot task: `resources.accelerators` is the set of its hardware types'
accelerator names with its GPU count (`{H100: 1, H200: 1}`: any of them, SkyPilot picks
what is available and cheapest; bench.fleet.accelerators), `use_spot`, and `job_recovery`
(strategy EAGER_NEXT_REGION or FAILOVER, restarts on errors). The repository is the
workdir, `scripts/install.sh gpu` the setup, and the run command is the shard
(bench.fleet.shard): a preempted spot shard is restarted by SkyPilot on a new machine and
resumes its run from the store.

Every credential is a `secret`, never an `envs` entry: AWS keys, HF_TOKEN,
BENCH_STORE_OPTIONS (those set here), the store URL or a plain setting when it carries a
password, token or signature (base.carries_credential), and a multi-node shard's
BENCH_NODE_SECRET (the agents' shared secret; every node of the job gets it). The YAML files
bench writes hold `null` for each, and `launch` passes the values from this environment to
SkyPilot in memory, the way `sky jobs launch --secret NAME` does. SkyPilot redacts secrets
in its logs and dashboards.
"""

from __future__ import annotations

import contextlib
import copy
import os
import re
import shlex
from pathlib import Path

from bench.errors import ConfigError
from bench.fleet.accelerators import SKY, accelerator
from bench.fleet.backends.base import (
    NODE_SECRET_ENV,
    STORE_ENV,
    library_error,
    remote_env,
    require,
    shard_argv,
)
from bench.fleet.records import FleetRecord, SkyPilotRecord
from bench.fleet.state import View

RECOVERY = ("EAGER_NEXT_REGION", "FAILOVER")
MOUNT_DIR = "~/bench-fleet"  # where a sweep file outside the repository is mounted
_SWEEP = "\0sweep"  # the sweep's place in the shard command, filled in as a shell word
ACTIVE = {"PENDING", "SUBMITTED", "STARTING", "RUNNING", "RECOVERING", "CANCELLING"}


def repo_root() -> Path:
    """The repository bench runs from: the job's workdir, synced to the machine."""
    import bench

    return Path(bench.__file__).resolve().parent.parent


class SkyPilotBackend:
    name = "skypilot"

    def __init__(self, spot: bool = True, recovery: str = "EAGER_NEXT_REGION", max_restarts: int = 1):
        if recovery not in RECOVERY:
            raise ConfigError(f"unknown job recovery '{recovery}' (known: {', '.join(RECOVERY)})")
        self.spot, self.recovery, self.max_restarts = spot, recovery, max_restarts

    @classmethod
    def from_options(cls, spot=True, recovery="EAGER_NEXT_REGION", max_restarts=1, **_):
        return cls(spot, recovery, max_restarts)

    def record(self) -> SkyPilotRecord:
        return SkyPilotRecord(spot=self.spot, recovery=self.recovery, max_restarts=self.max_restarts)

    @staticmethod
    def job_name(fleet_id: str, shard_id: str) -> str:
        return f"bench-{fleet_id}-{shard_id}"

    def accelerators(self, shard) -> dict[str, int]:
        from bench.catalog import get_hardware

        for hw in shard.hardware:
            if get_hardware(hw).vendor != "nvidia":
                raise ConfigError(f"skypilot: {hw}: scripts/install.sh installs the CUDA build of vLLM only")
        return {accelerator(SKY, hw, "skypilot"): shard.n_gpus for hw in shard.hardware}

    def task_spec(self, fleet, shard, store_url: str) -> dict:
        """The SkyPilot task of one shard, as a YAML mapping (no secret value in it)."""
        root = repo_root()
        sweep = Path(fleet.sweep_path).resolve()
        mounts = {}
        if sweep.is_relative_to(root):
            sweep_arg = sweep.relative_to(root).as_posix()
        else:
            if not re.fullmatch(r"[A-Za-z0-9._-]+", sweep.name):
                raise ConfigError(f"skypilot: rename {sweep.name}: a mounted sweep file needs a plain name")
            sweep_arg = f"{MOUNT_DIR}/{fleet.fleet_id}/{sweep.name}"
            mounts[sweep_arg] = str(sweep)
        plain, secrets = remote_env(store_url)
        if shard.nnodes > 1:
            secrets.append(NODE_SECRET_ENV)  # the head and its followers' agents share it
        # a mounted path starts with ~ (expanded by the job's shell; its characters are checked above)
        sweep_word = sweep_arg if mounts else shlex.quote(sweep_arg)
        run = " ".join(sweep_word if a == _SWEEP else shlex.quote(a)
                       for a in shard_argv(fleet.fleet_id, shard, _SWEEP, self.name))
        if shard.nnodes > 1:
            run = multinode_run(run)
        spec = {
            "name": self.job_name(fleet.fleet_id, shard.shard_id),
            "workdir": str(root),
            **({"num_nodes": shard.nnodes} if shard.nnodes > 1 else {}),
            "resources": {
                "accelerators": self.accelerators(shard),
                "use_spot": self.spot,
                "job_recovery": {"strategy": self.recovery, "max_restarts_on_errors": self.max_restarts},
            },
            "envs": {**plain, "BENCH_SKY_VENV": "0"},  # the shard needs no SkyPilot of its own
            "secrets": {name: None for name in secrets},
            "setup": "scripts/install.sh gpu",
            "run": run,
        }
        if not secrets:
            del spec["secrets"]
        if mounts:
            spec["file_mounts"] = mounts
        return spec

    def placements(self, fleet, shards) -> dict[str, str]:
        return {s.shard_id: self._placement(s) for s in shards}

    def _placement(self, shard) -> str:
        accs = ", ".join(f"{k}:{v}" for k, v in self.accelerators(shard).items())
        nodes = f"{shard.nnodes} nodes x " if shard.nnodes > 1 else ""
        return f"{nodes}{{{accs}}} {'spot' if self.spot else 'on-demand'}, {self.recovery}"

    def write(self, fleet, shards, store_url: str, out_dir: Path) -> list[Path]:
        """One task YAML per shard in OUT_DIR (`sky jobs launch FILE --secret NAME ...` launches one)."""
        import yaml

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        paths = []
        for shard in shards:
            path = out_dir / f"{shard.shard_id}.yaml"
            path.write_text(yaml.safe_dump(self.task_spec(fleet, shard, store_url), sort_keys=False))
            paths.append(path)
        return paths

    def submit(self, fleet, shards, store_url: str) -> list[str]:
        sky = require("sky", "skypilot", "fleet-sky")
        lines = []
        for shard in shards:
            spec = self.task_spec(fleet, shard, store_url)
            values = secret_values(spec, store_url)
            with _sky_errors():
                task = sky.Task.from_yaml_config(copy.deepcopy(spec), secrets_overrides=list(values.items()))
                job_ids, _handle = sky.stream_and_get(sky.jobs.launch(task, name=spec["name"]))
            lines.append(f"{shard.shard_id}: managed job {job_ids} ({self._placement(shard)})")
        return lines

    def status(self, record: FleetRecord, shard_ids: list[str]) -> dict[str, View]:
        sky = require("sky", "skypilot", "fleet-sky")
        with _sky_errors():
            records = sky.get(sky.jobs.queue(refresh=False, skip_finished=False))
        if isinstance(records, tuple):  # queue v2 answers (records, total, ...)
            records = records[0]
        latest: dict[str, tuple[int, str]] = {}
        for r in records:
            name, job_id, st = (_field(r, k) for k in ("job_name", "job_id", "status"))
            st = str(getattr(st, "value", st))
            if name and (name not in latest or (job_id or 0) > latest[name][0]):
                latest[name] = (job_id or 0, st)
        out = {}
        for sid in shard_ids:
            found = latest.get(self.job_name(record.fleet_id, sid))
            if found:
                out[sid] = View("running" if found[1] in ACTIVE else "exited", f"managed job {found[0]} {found[1]}")
        return out

    def logs(self, record: FleetRecord, shard_id: str, tail: int = 200) -> str | None:
        import io

        sky = require("sky", "skypilot", "fleet-sky")
        buf = io.StringIO()
        with _sky_errors():
            sky.jobs.tail_logs(name=self.job_name(record.fleet_id, shard_id), follow=False, tail=tail,
                               output_stream=buf)
        return buf.getvalue() or None

    def cancel(self, record: FleetRecord, shard_ids: list[str]) -> list[str]:
        sky = require("sky", "skypilot", "fleet-sky")
        lines = []
        for sid in shard_ids:
            with _sky_errors():
                sky.get(sky.jobs.cancel(name=self.job_name(record.fleet_id, sid)))
            lines.append(f"{sid}: cancel sent to SkyPilot")
        return lines


AGENT_PORT = 8790  # the followers' `bench node serve` port inside a multi-node job


def multinode_run(shard_command: str) -> str:
    """The run script of a shard over SkyPilot's `num_nodes` machines: node rank 0 (the head)
    runs the shard with the other nodes' agents in $BENCH_NODES and releases them when it ends;
    every other node serves its headless vLLM and energy counters to the head until released.
    SKYPILOT_NODE_RANK and SKYPILOT_NODE_IPS (one address per line, the head first) are set by
    SkyPilot on every node."""
    return "\n".join([
        f"PORT={AGENT_PORT}",
        'HEAD=$(echo "$SKYPILOT_NODE_IPS" | head -n1)',
        'if [ "$SKYPILOT_NODE_RANK" = 0 ]; then',
        '  BENCH_NODES=$(echo "$SKYPILOT_NODE_IPS" | tail -n +2 | sed "s/$/:$PORT/" | paste -sd, -)',
        "  export BENCH_NODES",
        f"  {shard_command}",
        "  code=$?",
        '  python3 -m bench node release $(echo "$BENCH_NODES" | tr , " ")',
        '  exit "$code"',
        "else",
        '  exec python3 -m bench node serve --head "$HEAD" --port "$PORT"',
        "fi",
        "",
    ])


def secret_values(spec: dict, store_url: str) -> dict[str, str]:
    """The values of a task's secrets, from this environment (the store URL from the command
    line); a node secret not set here is made for this launch (one job, one secret)."""
    import secrets

    values = {}
    for name in spec.get("secrets") or {}:
        value = store_url if name == STORE_ENV else os.environ.get(name)
        if name == NODE_SECRET_ENV and not value:
            value = secrets.token_urlsafe(32)
        if not value:
            raise ConfigError(f"skypilot: secret {name} is not set in this environment")
        values[name] = value
    return values


@contextlib.contextmanager
def _sky_errors():
    """SkyPilot's errors (API server down, no cloud credentials, ...) as one line."""
    try:
        yield
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001 - sky.exceptions.* and requests errors
        raise library_error("skypilot", e) from None


def _field(record, key: str):
    return record.get(key) if isinstance(record, dict) else getattr(record, key, None)
