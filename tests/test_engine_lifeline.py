"""Engines die with bench (issue 18, defect 2): a bench killed with SIGKILL leaves no process of
its engine's group behind, and a `--resume` stops an engine recorded in the run folder that
outlived its bench. Fake engine process trees, no vLLM (fast tier); the real engine is in
tests/test_engine_lifeline_vllm.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

# An engine like vLLM's api_server: two children in its process group, which a SIGKILL of the
# leader would orphan. It prints its parent-death signal (prctl PR_GET_PDEATHSIG) and its children.
FAKE_ENGINE = r"""
import ctypes, os, subprocess, sys, time
sig = ctypes.c_int(-1)
ctypes.CDLL(None).prctl(2, ctypes.byref(sig), 0, 0, 0)
kids = [subprocess.Popen([sys.executable, "-c", "import time\nwhile True: time.sleep(1)"]) for _ in range(2)]
print("engine", os.getpid(), "pdeathsig", sig.value, "children", *[k.pid for k in kids], flush=True)
while True:
    time.sleep(1)
"""

# bench, reduced to starting one engine (from its main thread or from a thread that then ends,
# as `bench node serve` does per request) and living on.
FAKE_BENCH = r"""
import sys, threading, time
from pathlib import Path
from bench.engines.process import ChildProcess
child = ChildProcess([sys.executable, "-c", sys.argv[2]], Path(sys.argv[1]))
if sys.argv[3] == "thread":
    t = threading.Thread(target=child.start)
    t.start()
    t.join()
else:
    child.start()
print(child.proc.pid, flush=True)
time.sleep(300)
"""


def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def start_ticks(pid: int) -> int | None:
    """Field 22 of /proc/<pid>/stat (read here, not with the code under test)."""
    fields = _stat(pid)
    return int(fields[19]) if fields else None


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of a process group, from /proc."""
    out = []
    for entry in Path("/proc").iterdir():
        fields = _stat(int(entry.name)) if entry.name.isdigit() else None
        if fields and int(fields[2]) == pgid and fields[0] != "Z":
            out.append(int(entry.name))
    return out


def _wait(condition, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"{what}: not within {timeout_s} s")


def _engine_line(log: Path) -> dict:
    """The fake engine's first log line, once written: pid, pdeathsig, children."""
    def line():
        for text in (log.read_text().splitlines() if log.exists() else []):
            if text.startswith("engine "):
                words = text.split()
                return {"pid": int(words[1]), "pdeathsig": int(words[3]), "children": [int(w) for w in words[5:]]}
        return None

    return _wait(line, 30, f"fake engine start ({log})")


def _start_bench(tmp_path: Path, how: str) -> tuple[subprocess.Popen, dict]:
    log = tmp_path / "engine-fake.log"
    bench = subprocess.Popen([sys.executable, "-c", FAKE_BENCH, str(log), FAKE_ENGINE, how],
                             stdout=subprocess.PIPE, text=True)
    engine = _engine_line(log)
    return bench, engine


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.mark.slow
@pytest.mark.parametrize("how", ["main", "thread"])
def test_a_sigkilled_bench_leaves_no_process_of_its_engine_group(tmp_path, how):
    """From the main thread: parent-death signal and watchdog; from a thread that ended: the
    watchdog alone (the signal would have fired when that thread ended)."""
    bench, engine = _start_bench(tmp_path, how)
    pgid = engine["pid"]
    try:
        assert set(engine["children"]) < set(group_members(pgid))  # a tree of 3+ processes, one group
        assert engine["pdeathsig"] == (signal.SIGTERM if how == "main" else 0)
        bench.kill()  # SIGKILL: no finally, no atexit in bench
        bench.wait(timeout=10)
        _wait(lambda: not group_members(pgid), 30, f"engine group {pgid} gone after bench's SIGKILL")
    finally:
        bench.kill()
        _kill_group(pgid)
    assert "bench exited; stopping engine process group" in (tmp_path / "engine-fake.log").read_text()


@pytest.mark.slow
def test_the_parent_death_signal_alone_ends_the_engine(tmp_path):
    """Without its watchdog (killed first), the engine leader still gets SIGTERM when bench dies."""
    bench, engine = _start_bench(tmp_path, "main")
    pgid = engine["pid"]
    try:
        path = tmp_path / ".engine-fake.proc.json"
        record = json.loads(_wait(lambda: path.exists() and path.read_text(), 30, "engine record written"))
        os.kill(record["watchdog_pid"], signal.SIGKILL)
        bench.kill()
        bench.wait(timeout=10)
        _wait(lambda: (_stat(pgid) or ["Z"])[0] == "Z", 30, "engine leader gone after bench's SIGKILL")
    finally:
        bench.kill()
        _kill_group(pgid)


def test_the_record_names_the_group_and_its_start_time_and_goes_with_stop(tmp_path):
    from bench.engines.process import ChildProcess, record_path

    child = ChildProcess([sys.executable, "-c", FAKE_ENGINE], tmp_path / "engine-x.log")
    child.start()
    try:
        path = record_path(tmp_path / "engine-x.log")
        assert path == tmp_path / ".engine-x.proc.json"
        rec = json.loads(path.read_text())
        assert rec["pid"] == rec["pgid"] == child.proc.pid == os.getpgid(child.proc.pid)
        assert rec["start_ticks"] == start_ticks(child.proc.pid) and rec["bench_pid"] == os.getpid()
        assert os.getpgid(rec["watchdog_pid"]) == rec["pgid"]  # the watchdog lives in the engine's group
    finally:
        child.stop(grace_s=2)
    assert not group_members(rec["pgid"]) and not path.exists()


def _plant_stale_engine(run_dir: Path, name: str = "engine-old", ticks_delta: int = 0) -> tuple[int, list[int]]:
    """An engine tree in its own process group, as a bench killed before its watchdog could act
    leaves it, recorded (by hand, the documented format) in `run_dir`."""
    log = run_dir / f"{name}.log"
    with open(log, "ab") as out:
        leader = subprocess.Popen([sys.executable, "-c", FAKE_ENGINE], stdout=out, stderr=out, process_group=0)
    engine = _engine_line(log)
    import socket

    record = {"host": socket.gethostname(), "boot_id": Path("/proc/sys/kernel/random/boot_id").read_text().strip(),
              "pid": leader.pid, "pgid": leader.pid, "start_ticks": start_ticks(leader.pid) + ticks_delta}
    (run_dir / f".{name}.proc.json").write_text(json.dumps(record))
    return leader.pid, engine["children"]


@pytest.mark.slow
def test_resume_stops_a_stale_engine_recorded_in_the_run_folder_and_says_so(tmp_path):
    from test_runner_fast import FAST, endpoint, make_env, make_plan

    from bench.run.events import EngineStarting, Notice, PointDone
    from bench.run.runner import execute
    from bench.testing.fake_server import FakeServer

    with FakeServer(FAST) as srv:
        plan = make_plan([endpoint(srv.base_url)], n_points=2)
        seen = []

        def stop_after_first(event):
            if isinstance(event, PointDone):
                raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            execute(plan, tmp_path, make_env(), on_event=stop_after_first)
        pgid, _ = _plant_stale_engine(tmp_path)
        try:
            assert len(group_members(pgid)) == 3
            result = execute(plan, tmp_path, make_env(), resume=True,
                             on_event=seen.append)
            left = group_members(pgid)
        finally:
            _kill_group(pgid)
    assert result.status == "complete"
    assert left == []
    notices = [e.text for e in seen if isinstance(e, Notice)]
    said = f"stopped a stale engine left by an earlier process of this run (process group {pgid}, 3 process(es))"
    assert notices == [said]
    kinds = [type(e) for e in seen]
    assert kinds.index(Notice) < kinds.index(EngineStarting)
    assert result.extra["stale_engines_stopped"] == notices
    assert not (tmp_path / ".engine-old.proc.json").exists()


def test_a_recorded_pid_now_naming_another_process_is_left_alone(tmp_path):
    """Same number, other start time: the pid was reused; that process is not ours to stop."""
    from bench.engines.process import stop_stale

    pgid, _ = _plant_stale_engine(tmp_path, ticks_delta=-1)
    try:
        assert stop_stale(tmp_path) == []
        assert len(group_members(pgid)) == 3 and not (tmp_path / ".engine-old.proc.json").exists()
    finally:
        _kill_group(pgid)


# -- the guard: one signal to a command when its (multi-threaded) parent dies --------------

# Counts the SIGTERMs it gets in a file; ends 0.5 s after the first (a window for a second).
COUNTING_CHILD = r"""
import signal, sys, time
got = []
signal.signal(signal.SIGTERM, lambda s, f: (got.append(s), open(sys.argv[1], "a").write("TERM\n")))
print("ready", flush=True)
deadline = time.monotonic() + 120
while not got and time.monotonic() < deadline:
    time.sleep(0.05)
time.sleep(0.5)
sys.exit(3)
"""

# A parent with several threads alive (as a fleet shard has), starting the guarded child.
THREADED_PARENT = r"""
import subprocess, sys, threading, time
from bench.engines.lifeline import guarded
for _ in range(4):
    threading.Thread(target=time.sleep, args=(300,), daemon=True).start()
guard = subprocess.Popen(guarded([sys.executable, "-c", sys.argv[1], sys.argv[2]]), stdout=subprocess.PIPE, text=True)
assert guard.stdout.readline().strip() == "ready"
print(guard.pid, flush=True)
time.sleep(300)
"""


@pytest.mark.slow
def test_a_guarded_command_gets_one_sigterm_when_its_threaded_parent_is_killed(tmp_path):
    """The kernel signals a parent-death once per exiting thread of the parent; the guard
    (bench.engines.lifeline.guarded) turns them into exactly one SIGTERM for its command."""
    seen = tmp_path / "signals.txt"
    parent = subprocess.Popen([sys.executable, "-c", THREADED_PARENT, COUNTING_CHILD, str(seen)],
                              stdout=subprocess.PIPE, text=True)
    try:
        guard = int(parent.stdout.readline())
        parent.kill()  # SIGKILL: every thread of the parent exits at once
        parent.wait(timeout=10)
        _wait(lambda: (_stat(guard) or ["Z"])[0] == "Z", 30, "the guard gone after its command ended")
    finally:
        parent.kill()
    assert seen.read_text() == "TERM\n"


def test_a_guard_exits_as_its_command_did():
    """Defect (base: bench.fleet.parentdeath): a command killed by SIGKILL (the OOM killer) made
    the guard fail setting SIGKILL's handler and exit 1, so a shard said "exited with code 1"."""
    from bench.engines.lifeline import guarded

    assert subprocess.run(guarded([sys.executable, "-c", "import sys; sys.exit(7)"]), timeout=60, check=False).returncode == 7
    killed = [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"]
    assert subprocess.run(guarded(killed), timeout=60, check=False).returncode == -signal.SIGKILL
