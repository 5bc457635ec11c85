"""Store content never steers `bench fleet status/logs/cancel`: a fleet.json in the store is
data to display. A Ray address it names is never connected to; a work folder or a
launch.json it names never chooses a process to signal; and a launch.json in the user's own
work folder signals nothing unless the process it names is provably the shard it launched
(this host and boot, pid and start time, a session of its own running the shard command)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import bench
from bench.fleet.backends.local import _start_ticks
from bench.store import Store

FLEET = "planted-0123abcd"
SHARD = "tiny-llama-0123abcd_cpu-host"
CLI_TIMEOUT_S = 90  # a command that tries to connect may wait on its peer: never longer than this


class ConnectRecorder:
    """A TCP port on loopback that counts the connections made to it (and closes each)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.connects = 0
        self._stop = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self):
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connects += 1
            conn.close()

    def close(self):
        self._stop = True
        self.sock.close()
        self._thread.join(timeout=5)


def plant_fleet(store_url: str, backend: dict) -> None:
    """A fleet.json written into the store by someone else: one shard, the backend it names."""
    record = {"fleet_id": FLEET, "name": "planted", "sweep_file": "x.yaml", "sweep_sha256": "0" * 64,
              "hardware": ["cpu-host"], "skipped": [], "backend": backend,
              "shards": [{"shard_id": SHARD, "config_id": "tiny-llama-0123abcd", "hardware": ["cpu-host"],
                          "n_gpus": 1, "model": "tiny-llama", "precision": "bf16", "parallel": "TP 1",
                          "engine": "endpoint", "n_points": 1, "nnodes": 1}]}
    Store(store_url).put_bytes(f"fleet/{FLEET}/fleet.json", json.dumps(record).encode())


def bench_cli(*args, env: dict) -> subprocess.CompletedProcess:
    """`python -m bench ARGS` in a process of its own (Ray's client state never enters this one)."""
    return bench_clis(list(args), env=env)[0]


# each command through bench.cli.main, its stdout/stderr captured apart, its exit code kept
RUN_EACH = """import contextlib, io, json, sys
from bench.cli import main
done = []
for args in json.loads(sys.argv[1]):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(args)
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    done.append([code, out.getvalue(), err.getvalue()])
print(json.dumps(done))
"""


def bench_clis(*commands: list[str], env: dict) -> list[subprocess.CompletedProcess]:
    """Each command as `bench ARGS` would run it, one after another in one process of their own
    (Ray's client state never enters this one; bench is imported once, not once a command)."""
    here = str(Path(bench.__file__).resolve().parent.parent)
    full = {**env, "PYTHONPATH": os.pathsep.join(filter(None, [here, env.get("PYTHONPATH")]))}
    argv = [sys.executable, "-c", RUN_EACH, json.dumps([list(c) for c in commands])]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, env=full, timeout=CLI_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as e:
        return [subprocess.CompletedProcess(e.cmd, -9, str(e.stdout or ""), f"timed out after {CLI_TIMEOUT_S} s")]
    if proc.returncode != 0 or not proc.stdout.strip():
        return [subprocess.CompletedProcess(argv, proc.returncode or -1, proc.stdout, proc.stderr)]
    return [subprocess.CompletedProcess(c, code, out, err)
            for c, (code, out, err) in zip(commands, json.loads(proc.stdout.splitlines()[-1]), strict=True)]


@pytest.fixture
def clean_env(tmp_path):
    """This environment without a Ray address, with an empty cache (the user's own work folder)."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "BENCH_STORE")}
    env["BENCH_CACHE_DIR"] = str(tmp_path / "cache")
    return env


@pytest.mark.slow
@pytest.mark.timeout(4 * CLI_TIMEOUT_S)
def test_a_ray_address_in_the_store_is_never_connected_to(tmp_path, clean_env):
    store_url = str(tmp_path / "store")
    listener = ConnectRecorder()
    try:
        plant_fleet(store_url, {"name": "ray", "address": f"ray://127.0.0.1:{listener.port}"})
        results = bench_clis(["fleet", "status", "--store", store_url, "--ask-backend"],
                             ["fleet", "logs", SHARD, "--store", store_url],
                             ["fleet", "cancel", "--store", store_url], env=clean_env)
    finally:
        listener.close()
    assert listener.connects == 0, [r.stderr[-500:] for r in results]
    assert len(results) == 3, results[0].stderr[-2000:]
    for r in results:
        assert r.returncode == 0, r.stderr[-2000:]
    status, logs, cancel = (r.stdout for r in results)
    assert "1 missing" in status and "launched with ray" in status  # shown, not asked
    assert f"no output of {SHARD} yet" in logs
    assert f"{SHARD}: not running here" in cancel


def sleeper() -> subprocess.Popen:
    """An unrelated process of this user: a session of its own, as a shard's is."""
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"], start_new_session=True)


def write_launch(folder: Path, launch: dict) -> None:
    path = folder / FLEET / SHARD / "launch.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(launch))


@pytest.mark.slow
@pytest.mark.timeout(3 * CLI_TIMEOUT_S)
def test_a_work_folder_in_the_store_never_chooses_a_process(tmp_path, clean_env):
    """fleet.json names a work folder holding a launch.json with `start: null` that names an
    unrelated process: cancel and status read the user's own work folder only."""
    store_url, planted = str(tmp_path / "store"), tmp_path / "planted"
    victim = sleeper()
    try:
        write_launch(planted, {"pid": victim.pid, "start": None})
        plant_fleet(store_url, {"name": "local", "work_dir": str(planted), "host": socket.gethostname()})
        status, cancel = bench_clis(["fleet", "status", "--store", store_url],
                                    ["fleet", "cancel", SHARD, "--store", store_url], env=clean_env)
        alive = victim.poll() is None
    finally:
        victim.kill()
        victim.wait(timeout=10)
    assert alive, f"cancel signalled an unrelated process: {cancel.stdout} {cancel.stderr[-500:]}"
    assert cancel.returncode == 0 and f"{SHARD}: not running here" in cancel.stdout, cancel.stderr[-2000:]
    assert status.returncode == 0 and "1 missing" in status.stdout and f"pid {victim.pid}" not in status.stdout


@pytest.mark.slow
@pytest.mark.parametrize("start", ["null", "its own"])
@pytest.mark.timeout(3 * CLI_TIMEOUT_S)
def test_a_launch_record_that_names_another_process_signals_nothing(tmp_path, clean_env, start):
    """Even in the user's own work folder, a launch.json is acted on only when its process is
    the shard it launched: without a start time (`null`), or naming a live process of this
    user with its true start time that runs something else, cancel leaves it alone."""
    store_url = str(tmp_path / "store")
    work = Path(clean_env["BENCH_CACHE_DIR"]) / "fleet"  # the default work folder
    victim = sleeper()
    try:
        ticks = _start_ticks(victim.pid) if start == "its own" else None
        write_launch(work, {"pid": victim.pid, "start": ticks, "host": socket.gethostname(), "fleet_id": FLEET,
                            "shard_id": SHARD, "launched_utc": "2026-01-01T00:00:00Z", "locks": ["slot-0"]})
        plant_fleet(store_url, {"name": "local", "work_dir": str(work), "host": socket.gethostname()})
        cancel = bench_cli("fleet", "cancel", "--store", store_url, env=clean_env)
        alive = victim.poll() is None
    finally:
        victim.kill()
        victim.wait(timeout=10)
    assert alive, f"cancel signalled an unrelated process: {cancel.stdout} {cancel.stderr[-500:]}"
    assert cancel.returncode == 0 and f"{SHARD}: not running here" in cancel.stdout, cancel.stderr[-2000:]


def test_kill_is_refused_for_a_process_that_is_not_the_shard(tmp_path):
    """The library check itself: `ours` needs every proof, `signal_shard` sends nothing without it."""
    from bench.fleet.backends.local import boot_id, ours, signal_shard
    from bench.fleet.records import LaunchRecord

    folder = tmp_path / FLEET / SHARD
    victim = sleeper()
    try:
        base = LaunchRecord(pid=victim.pid, start=_start_ticks(victim.pid), host=socket.gethostname(),
                            boot_id=boot_id(), fleet_id=FLEET, shard_id=SHARD)
        assert not ours(base, FLEET, SHARD, folder)  # its command line is not the shard's
        assert not ours(base.model_copy(update={"start": None}), FLEET, SHARD, folder)
        assert not signal_shard(base, FLEET, SHARD, signal.SIGTERM, folder)
        assert victim.poll() is None
    finally:
        victim.kill()
        victim.wait(timeout=10)


def test_the_backend_asked_is_named_here_or_remembered_here(tmp_path):
    """user_backend: --backend first; else the record `launch` wrote on this machine (with its
    options); else local. The record is read from the user's work folder only."""
    from bench.fleet import control
    from bench.fleet.backends.local import LocalBackend
    from bench.fleet.backends.ray import RayBackend

    work = tmp_path / "work"
    assert isinstance(control.user_backend(FLEET, work_dir=str(work)), LocalBackend)
    control.remember(FLEET, RayBackend("10.0.0.1:6379"), str(work))
    remembered = control.user_backend(FLEET, work_dir=str(work))
    assert isinstance(remembered, RayBackend) and remembered.address == "10.0.0.1:6379"
    assert control.user_backend(FLEET, "ray", str(work), "10.0.0.2:6379").address == "10.0.0.2:6379"
    local = control.user_backend(FLEET, "local", str(work))
    assert isinstance(local, LocalBackend) and local.root == work.resolve()
    assert isinstance(control.user_backend("another-fleet", work_dir=str(work)), LocalBackend)
    record = work / FLEET / "backend.json"
    record.write_text(json.dumps({"fleet_id": "someone-else", "backend": {"name": "ray", "address": "x:1"}}))
    assert isinstance(control.user_backend(FLEET, work_dir=str(work)), LocalBackend)  # not this fleet's
    record.write_text(json.dumps({"fleet_id": FLEET, "backend": {"name": "nope"}}))
    assert isinstance(control.user_backend(FLEET, work_dir=str(work)), LocalBackend)
