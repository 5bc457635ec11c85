"""The runs a shard's earlier attempts left on this machine, so that a relaunch never
measures again what is already measured here.

Each attempt writes `attempt.json` (its hardware and plan digest) in its own folder under
the shard's work folder; its run folders are `<attempt>/runs/<run>` (a new run) and
`<attempt>/restored/<run>` (the store's mirror, continued). `best_local` picks, among the
runs of the same hardware and plan whose process is gone, a finished one first (the newest),
else the one with the most finished points. The store's mirror may be older than a local
run: a store that was down missed the last copies, and a final publish that gave up leaves
the run complete here only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from bench.errors import ResultError
from bench.fleet.records import AttemptMark

ATTEMPT_FILE = "attempt.json"
FINISHED = ("complete", "partial")


@dataclass(frozen=True)
class LocalRun:
    path: Path
    status: str
    points_done: int  # ok or skipped points
    stamp_ns: int  # run.json's modification time

    @property
    def finished(self) -> bool:
        return self.status in FINISHED


def mark_attempt(attempt_dir: Path, hardware: str, plan_digest: str) -> None:
    """Say which hardware and plan this attempt's runs are for."""
    attempt_dir.mkdir(parents=True, exist_ok=True)
    (attempt_dir / ATTEMPT_FILE).write_text(AttemptMark(hardware=hardware, plan=plan_digest).to_json())


def read_result(run_dir: Path | None):
    """The run folder's run.json (bench.results.RunResult), or None when there is none or it does not read."""
    from bench.results import read_summary

    if run_dir is None:
        return None
    try:
        return read_summary(Path(run_dir) / "run.json")
    except (OSError, ResultError):
        return None


def points_done(run) -> int:
    """Points of a RunResult that need no measuring again: ok or skipped."""
    return sum(1 for p in run.points if p.status in ("ok", "skipped"))


def read_run(run_dir: Path | None) -> LocalRun | None:
    """A run folder's state from its run.json; None when it does not read or its process still holds it."""
    from bench.run.lock import is_locked

    if run_dir is None:  # read_result(None) is None
        return None
    run = read_result(run_dir)
    if run is None or is_locked(run_dir):
        return None
    try:
        stamp = (Path(run_dir) / "run.json").stat().st_mtime_ns
    except OSError:
        return None
    return LocalRun(Path(run_dir), run.status, points_done(run), stamp)


def local_runs(shard_dir: Path, hardware: str, plan_digest: str) -> list[LocalRun]:
    """Every readable, unlocked run of this hardware and plan under the shard's work folder."""
    out = []
    for marker in sorted(Path(shard_dir).glob(f"*/{ATTEMPT_FILE}")):
        try:
            mark = AttemptMark.read(json.loads(marker.read_text()))
        except (OSError, ValueError):
            continue
        if mark != AttemptMark(hardware=hardware, plan=plan_digest):
            continue
        for run_dir in sorted([*marker.parent.glob("runs/*"), *marker.parent.glob("restored/*")]):
            found = read_run(run_dir)
            if found is not None:
                out.append(found)
    return out


def best_local(shard_dir: Path, hardware: str, plan_digest: str) -> LocalRun | None:
    """The newest finished run, else the one with the most finished points (newest on a tie)."""
    runs = local_runs(shard_dir, hardware, plan_digest)
    if not runs:
        return None
    return max(runs, key=lambda r: (r.finished, r.stamp_ns if r.finished else r.points_done, r.stamp_ns))
