"""Can a killed client worker hang bench? SIGKILL a random client worker at a random moment of a
load point, N times, and count the points that did not end within a bound.

Each trial runs one load point (bench.load.driver.run_point_sync) in 2 or 3 client worker
processes against the fake server (bench.testing.fake_server, its own process): a
concurrency load, or a rate load with a concurrency cap, with or without warm-up, short
requests (so the workers are always taking request indices and checking the stop flag, where
a worker killed inside a shared lock would leave it held). A killer thread SIGKILLs one worker
chosen at random: half the time at a random moment in [0, 1.2 x a clean point's life] after the
workers have started (start-up, barriers, warm-up, measured phase, the records' way back),
half the time in [0, a clean point's request span] after the first request finished (while
requests flow). Outcomes:
  died      the point ended with ClientWorkerDied naming that worker, every kept record from
            another worker, within --bound-s
  finished  the point ended before the kill landed (no kill this trial; not counted as a kill)
  hang      the point did not end within --bound-s (its workers are then killed so the next
            trial can run; a hung orchestrator thread is left behind)
  wrong     it ended otherwise (another exception, a wrong message, a record of the killed worker)
The figure that matters is hangs (and wrong) out of kills; the exit code is 1 when any.

    python3 scripts/worker_kill_check.py                  # 200 kills: 259 s on 2 quiet cores, 15 min at load 15
    python3 scripts/worker_kill_check.py --kills 20 --seed 3
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import os
import random
import signal
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from bench.load import workers as W
from bench.load.driver import run_point_sync
from bench.load.types import LoadJob
from bench.load.workload import RandomPrompts
from bench.testing.fake_server import FakeServer, FakeServerConfig

SERVER = FakeServerConfig(ttft_s=0.002, itl_s=0.001)


def _client_workers() -> list[mp.Process]:
    return [p for p in mp.active_children() if p.name.startswith("bench-client-") and p.pid is not None]


def _workers_of_this_point(n: int, timeout_s: float, before: set[int]) -> dict[int, mp.Process] | None:
    """The point's client worker processes (pids not in `before`) once all n have started (None after timeout_s)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        procs = {int(p.name.rsplit("-", 1)[1]): p for p in _client_workers() if p.pid not in before}
        if len(procs) == n:
            return procs
        time.sleep(0.001)  # polling the process table for the workers to appear, not a synchronisation
    return None


def trial(srv: FakeServer, rng: random.Random, bound_s: float, typical: dict) -> tuple[str, dict]:
    """One point, one kill at a random moment; (outcome, details)."""
    n_workers = rng.choice([2, 3])
    if rng.random() < 0.7:
        load = {"kind": "concurrency", "concurrency": rng.randint(n_workers, 24)}
    else:
        load = {"kind": "rate", "rate_rps": rng.choice([200.0, 500.0, 1000.0]), "max_concurrency": 16}
    n_warmup = rng.choice([0, 0, 4, 16])
    n_requests = rng.randint(60, 200)
    victim = rng.randrange(n_workers)
    # half the kills at any moment of the point (start-up, barriers, the records' way back), half
    # while requests are flowing (where a shared lock was taken for every request)
    under_load = rng.random() < 0.5
    delay_s = rng.uniform(0.0, typical["span_s"] if under_load else 1.2 * typical["point_s"])
    details = {"workers": n_workers, "load": load, "n_warmup": n_warmup, "n_requests": n_requests,
               "victim": victim, "under_load": under_load, "delay_s": round(delay_s, 4)}
    out: dict = {}
    done, sending = threading.Event(), threading.Event()

    def run() -> None:
        try:
            out["result"] = run_point_sync(LoadJob(srv.base_url, SERVER.model, RandomPrompts(8, 4, 500, seed=victim),
                                                   load, n_warmup, n_requests, workers=n_workers,
                                                   progress=lambda info: sending.set()))
        except BaseException as e:  # noqa: BLE001  classified below
            out["error"] = e
        finally:
            out["t_end"] = time.perf_counter()
            done.set()

    before = {p.pid for p in _client_workers()}
    runner = threading.Thread(target=run, daemon=True, name="kill-check-point")
    runner.start()
    procs = _workers_of_this_point(n_workers, bound_s, before)
    killed_at = None
    if procs is not None and (not under_load or sending.wait(bound_s)):
        if done.wait(delay_s):  # the random moment; the point may end first
            pass
        elif procs[victim].is_alive():
            os.kill(procs[victim].pid, signal.SIGKILL)
            killed_at = time.perf_counter()
            details["pid"] = procs[victim].pid
    if not done.wait(bound_s):
        for p in _client_workers():  # free the box for the next trial; the hung thread stays
            p.kill()
            p.join(5)
        return "hang", details
    if killed_at is None or ("result" in out and out["t_end"] < killed_at):
        return ("finished" if "result" in out else "wrong"), details | {"error": repr(out.get("error"))}
    details["end_after_kill_s"] = round(out["t_end"] - killed_at, 4)
    err = out.get("error")
    if "result" in out:  # the kill landed after the worker had sent its records: the point is whole
        return "finished", details
    if not isinstance(err, W.ClientWorkerDied):
        return "wrong", details | {"error": repr(err)}
    ok = (f"client worker {victim} (pid {details['pid']}) " in str(err)
          and all(r.worker != victim for r in err.records))
    return ("died" if ok else "wrong"), details | {"error": str(err)}


def _calibrate(srv: FakeServer, bound_s: float) -> dict:
    """The spans the kill moments are drawn from, from one clean point: its workers' life (from
    all started to the point's end; the forkserver's own start-up is left out) and the time its
    requests flow."""
    out = {}
    before = {p.pid for p in _client_workers()}
    job = LoadJob(srv.base_url, SERVER.model, RandomPrompts(8, 4, 500), {"kind": "concurrency", "concurrency": 8}, 4,
                  130, workers=2)
    runner = threading.Thread(target=lambda: out.update(pr=run_point_sync(job)), daemon=True)
    runner.start()
    if _workers_of_this_point(2, bound_s, before) is None:
        raise SystemExit("the calibration point's workers did not start")
    t_started = time.perf_counter()
    runner.join(bound_s)
    if "pr" not in out:
        raise SystemExit("the calibration point failed or did not end")
    pr = out["pr"]
    return {"point_s": time.perf_counter() - t_started, "span_s": pr.span_t1_s - min(r.t_send for r in pr.records)}


@contextlib.contextmanager
def _quiet_server():
    """The fake server, its stderr to /dev/null: a killed client makes it log a traceback per broken stream."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            srv = FakeServer(SERVER, mode="process").__enter__()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
    try:
        yield srv
    finally:
        srv.__exit__(None, None, None)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kills", type=int, default=200, help="trials whose kill must land during the point")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bound-s", type=float, default=30.0, help="a point must end within this after the kill")
    ap.add_argument("--max-trials", type=int, default=None, help="give up after this many trials [5 x kills]")
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)
    counts = {"died": 0, "finished": 0, "hang": 0, "wrong": 0}
    worst_end_s = 0.0
    t0 = time.perf_counter()
    with _quiet_server() as srv:
        typical = _calibrate(srv, args.bound_s)
        trials = 0
        while counts["died"] + counts["hang"] + counts["wrong"] < args.kills:
            if trials >= (args.max_trials or 5 * args.kills):
                break
            trials += 1
            outcome, details = trial(srv, rng, args.bound_s, typical)
            counts[outcome] += 1
            worst_end_s = max(worst_end_s, details.get("end_after_kill_s", 0.0))
            if outcome in ("hang", "wrong"):
                print(f"trial {trials}: {outcome.upper()} {details}", flush=True)
    kills = counts["died"] + counts["hang"] + counts["wrong"]
    print(f"kills: {kills}, hangs: {counts['hang']}, wrong outcomes: {counts['wrong']}, "
          f"points that ended before their kill: {counts['finished']}; slowest end after a kill "
          f"{worst_end_s:.2f} s (bound {args.bound_s:g} s); typical point {typical['point_s']:.2f} s "
          f"(requests flowing {typical['span_s']:.2f} s); "
          f"wall {time.perf_counter() - t0:.0f} s", flush=True)
    return 1 if counts["hang"] or counts["wrong"] or kills < args.kills else 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    os._exit(code)  # a hung orchestrator thread (the defect this looks for) must not keep the process
