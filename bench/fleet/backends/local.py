"""The local backend: shards as detached processes on this machine.

Each shard is a process of its own session (so `bench fleet launch` returns, and a shard and
everything it starts can be found and stopped together) that first takes exclusive locks in
WORK/locks/ (bench.fleet.backends.lockwait, standard library only) and then becomes the
shard command. The locks make the pool: without `--pack`, slot locks (`--parallel N` slots,
1 by default: shards run one after another, each with the whole box); with `--pack` on a
multi-GPU box, one lock per GPU of the shard's device set (bench.run.pack.pack_waves, as
`bench sweep --pack` places configurations) and CUDA_VISIBLE_DEVICES set to it. The OS drops
a lock when its process dies, however it dies, so a killed shard never blocks the others.

    WORK/<fleet>/<shard>/launch.json   the shard's process: host, boot, pid, start time, ids
    WORK/<fleet>/<shard>/shard.log     its output; WORK/<fleet>/<shard>/<attempt>/ its run folders
    WORK/locks/<name>.lock             slot-<k> or gpu-<i>

WORK is `--work-dir`, else $BENCH_CACHE_DIR/fleet, else ~/.cache/bench/fleet: the user's own
folder, never one read from the store. A launch.json is acted on (shown running, signalled)
only when the process it names is provably the shard it launched (`ours`): this host and
boot, the same pid and start time, a session of its own, running that shard's command.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from bench.errors import ConfigError
from bench.fleet.backends.base import STORE_ENV, shard_argv
from bench.fleet.records import FleetRecord, LaunchRecord, LocalRecord
from bench.fleet.state import View, utc_now
from bench.safepath import UnsafePath, check_run_id

CANCEL_GRACE_S = 30.0
LOCK_WAITER = "bench.fleet.backends.lockwait"  # the stdlib-only module a shard starts in


def default_root() -> Path:
    base = os.environ.get("BENCH_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "bench")
    return Path(base) / "fleet"


class LocalBackend:
    name = "local"

    def __init__(self, work_dir: str | Path | None = None, pack: bool = False, parallel: int | None = None,
                 detect=None):
        self.root = Path(work_dir).resolve() if work_dir else default_root()
        self.pack = pack
        self.parallel = parallel
        self.detect = detect  # injectable device detection (tests)

    @classmethod
    def from_options(cls, work_dir=None, pack=False, parallel=None, **_):
        return cls(work_dir, pack, parallel)

    def record(self) -> LocalRecord:
        """What the store shows of it (the work folder stays on this machine)."""
        return LocalRecord(host=socket.gethostname())

    def placements(self, fleet, shards) -> dict[str, str]:
        return {sid: _where(locks, env) for sid, (locks, env) in self._assign(fleet, shards).items()}

    # -- submit ---------------------------------------------------------------------------
    def submit(self, fleet, shards, store_url: str) -> list[str]:
        assigned = self._assign(fleet, shards)
        lines = []
        for shard in shards:
            locks, devices_env = assigned[shard.shard_id]
            pid = self._spawn(fleet, shard, store_url, locks, devices_env)
            lines.append(f"{shard.shard_id}: pid {pid} ({_where(locks, devices_env)}); log {self._dir(fleet.fleet_id, shard.shard_id) / 'shard.log'}")
        return lines

    def _spawn(self, fleet, shard, store_url: str, locks: list[str], devices_env: dict) -> int:
        folder = self._dir(fleet.fleet_id, shard.shard_id)
        folder.mkdir(parents=True, exist_ok=True)
        (self.root / "locks").mkdir(parents=True, exist_ok=True)
        command = shard_argv(fleet.fleet_id, shard, str(Path(fleet.sweep_path).resolve()), self.name,
                             python=sys.executable) + ["--work-dir", str(folder)]
        argv = [sys.executable, "-m", LOCK_WAITER, str(folder), str(self.root / "locks"), *locks,
                "--", *command]
        import bench

        here = str(Path(bench.__file__).resolve().parent.parent)  # the shard runs this very bench
        env = {**os.environ, STORE_ENV: store_url, **devices_env,
               "PYTHONPATH": os.pathsep.join([here, *filter(None, [os.environ.get("PYTHONPATH")])])}
        (folder / "queued").write_text(utc_now())
        with open(folder / "shard.log", "ab") as log:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                                    start_new_session=True)
        launch = LaunchRecord(pid=proc.pid, start=_start_ticks(proc.pid), host=socket.gethostname(),
                              boot_id=boot_id(), fleet_id=fleet.fleet_id, shard_id=shard.shard_id,
                              launched_utc=utc_now(), locks=locks, devices=devices_env)
        (folder / "launch.json").write_text(launch.to_json())
        return proc.pid

    def _assign(self, fleet, shards) -> dict[str, tuple[list[str], dict]]:
        """shard id -> (locks to hold, device environment) on this box."""
        from bench.catalog.device import detect_device

        detected = (self.detect or detect_device)()
        here = detected.hardware_id
        for shard in shards:
            if here not in shard.hardware:
                raise ConfigError(f"local backend: this box is {here or detected.name}; shard {shard.shard_id} "
                                  f"wants {' or '.join(shard.hardware)}")
        if not self.pack:
            n = self.parallel or 1
            if n > 1 and detected.vendor != "cpu":
                raise ConfigError("--parallel above 1 on a GPU box needs --pack (shards on disjoint GPUs)")
            return {s.shard_id: ([f"slot-{i % n}"], {}) for i, s in enumerate(shards)}
        if detected.vendor == "cpu":
            raise ConfigError("--pack needs GPUs: on a CPU host every shard would share the same cores")
        from bench.run.devices import VISIBLE_ENV, plan_devices, visible_gpu_indices
        from bench.run.pack import pack_waves

        visible = visible_gpu_indices(detected.count, vendor=detected.vendor)
        configs = [fleet.configs[s.config_id] for s in shards]
        devices = plan_devices(configs, visible)
        pending = list(shards)
        out = {}
        for wave in pack_waves(configs, visible, devices):
            for cfg, devs in wave:
                shard = next(s for s in pending if s.config_id == cfg.config_id())
                pending.remove(shard)
                name = VISIBLE_ENV.get(detected.vendor, VISIBLE_ENV["nvidia"])[0]
                out[shard.shard_id] = ([f"gpu-{d}" for d in devs], {name: ",".join(str(d) for d in devs)})
        return out

    # -- status, logs, cancel -------------------------------------------------------------
    def status(self, record: FleetRecord, shard_ids: list[str]) -> dict[str, View]:
        out = {}
        for sid in shard_ids:
            launch = self._launch(record.fleet_id, sid)
            if launch is None:
                continue
            if ours(launch, record.fleet_id, sid, self._dir(record.fleet_id, sid)):
                queued = (self._dir(record.fleet_id, sid) / "queued").exists()
                out[sid] = View("queued" if queued else "running",
                                f"pid {launch.pid}" + (f", waiting for {', '.join(launch.locks)}" if queued else ""))
            else:
                out[sid] = View("exited", f"pid {launch.pid} is gone")
        return out

    def logs(self, record: FleetRecord, shard_id: str, tail: int = 200) -> str | None:
        path = self._dir(record.fleet_id, shard_id) / "shard.log"
        try:
            lines = path.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return None
        return "\n".join(lines[-tail:])

    def cancel(self, record: FleetRecord, shard_ids: list[str]) -> list[str]:
        """SIGTERM each shard (it keeps its finished points and says it was interrupted); what
        is left of its session after CANCEL_GRACE_S is killed. A shard whose launch.json does
        not prove its process (`ours`) is not signalled."""
        lines, sessions = [], []
        for sid in shard_ids:
            launch = self._launch(record.fleet_id, sid)
            if launch is None or not signal_shard(launch, record.fleet_id, sid, signal.SIGTERM,
                                                  self._dir(record.fleet_id, sid)):
                lines.append(f"{sid}: not running here")
                continue
            sessions.append((sid, launch.pid))
        deadline = time.monotonic() + CANCEL_GRACE_S
        while sessions and any(session_pids(pid) for _, pid in sessions) and time.monotonic() < deadline:
            time.sleep(0.5)
        for sid, pid in sessions:
            left = kill_session(pid, signal.SIGKILL)
            lines.append(f"{sid}: stopped" + (f" ({left} processes killed after {CANCEL_GRACE_S:.0f} s)" if left else ""))
        return lines

    def _dir(self, fleet_id: str, shard_id: str) -> Path:
        return self.root / fleet_id / shard_id

    def _launch(self, fleet_id: str, shard_id: str) -> LaunchRecord | None:
        """The shard's launch.json, or None (none, or one that does not read)."""
        try:
            check_run_id(fleet_id)
            check_run_id(shard_id)
            return LaunchRecord.read(json.loads((self._dir(fleet_id, shard_id) / "launch.json").read_text()))
        except (OSError, ValueError, UnsafePath):
            return None


def _where(locks: list[str], devices_env: dict) -> str:
    devices = next(iter(devices_env.values()), None)
    return f"this box, GPUs {devices}" if devices else f"this box, {locks[0]}"


def _stat(pid: int) -> list[str] | None:
    """/proc/<pid>/stat fields after the command name (state first), or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[-1].split()


def _start_ticks(pid: int) -> int | None:
    fields = _stat(pid)
    return int(fields[19]) if fields else None


def boot_id() -> str | None:
    """This boot of this host (a pid and its start time name one process only within a boot)."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def ours(launch: LaunchRecord, fleet_id: str, shard_id: str, folder: Path) -> bool:
    """The process a launch.json names is the shard it launched, still running: this host and
    boot, the pid with its start time, the leader of a session of its own (start_new_session),
    and a command line that is this shard's (its lock waiter or `bench fleet shard`, with
    `--fleet FLEET` and `--work-dir FOLDER`). Anything less, and nothing is shown or signalled."""
    pid, start = launch.pid, launch.start
    if start is None:
        return False
    if (launch.host, launch.boot_id) != (socket.gethostname(), boot_id()):
        return False
    if (launch.fleet_id, launch.shard_id) != (fleet_id, shard_id):
        return False
    fields = _stat(pid)
    if not fields or fields[0] in ("Z", "X") or int(fields[19]) != start or int(fields[3]) != pid:
        return False
    argv = _cmdline(pid)
    pairs = set(itertools.pairwise(argv))
    return ("--fleet", fleet_id) in pairs and ("--work-dir", str(folder)) in pairs


def signal_shard(launch: LaunchRecord, fleet_id: str, shard_id: str, sig: int, folder: Path) -> bool:
    """Send `sig` to the shard's process when `ours` holds; False when nothing was sent. The
    check is made through a pidfd (Linux 5.3+), so a pid reused between check and signal is
    never hit."""
    pid = launch.pid  # > 1 (LaunchRecord)
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return False
    except (AttributeError, OSError):  # no pidfd here: the check, then the pid
        if not ours(launch, fleet_id, shard_id, folder):
            return False
        os.kill(pid, sig)
        return True
    try:
        if not ours(launch, fleet_id, shard_id, folder):
            return False
        signal.pidfd_send_signal(fd, sig)
        return True
    except ProcessLookupError:
        return False
    finally:
        os.close(fd)


def session_pids(session: int) -> list[int]:
    """Live processes of a session (the shard's process is its leader)."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields and fields[0] not in ("Z", "X") and int(fields[3]) == session:
                out.append(int(entry.name))
    return out


def kill_session(session: int, sig: int = signal.SIGKILL) -> int:
    """Signal every live process of a session; returns how many were signalled."""
    pids = session_pids(session)
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
    return len(pids)
