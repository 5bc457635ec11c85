"""Telemetry scoped to one engine configuration's devices, and where finished points go.

The runner opens one session per engine configuration over exactly its devices (issue 8);
the idle power of the other visible devices is measured beside it, never added.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.errors import one_line
from bench.results import PointResult, RunResult, write_summary
from bench.results.schema import PARQUET_READ_OPTIONS, PARQUET_WRITE_OPTIONS

POWER_FILE = "power.parquet"
SERVER_METRICS_FILE = "server_metrics.parquet"


class ResultSink:
    """Where finished points go: appended to the RunResult and written to run.json at once.

    The only writer of run.json; packed workers send their points to it (bench.run.pack)."""

    def __init__(self, run_dir: Path, result: RunResult):
        self.run_dir = Path(run_dir)
        self.result = result
        self.power_frames: list = []
        self.server_metrics_frames: list = []
        self.engine_starts: list = []  # EngineStart of this process (time breakdown, issue 22)

    def point(self, pr: PointResult) -> None:
        self.result.points.append(pr)
        write_summary(self.run_dir, self.result)

    def note(self, key: str, config_id: str, value: Any) -> None:
        """result.extra[key][config_id] = value (idle baselines, telemetry descriptions)."""
        self.result.extra.setdefault(key, {})[config_id] = value

    def power(self, frame) -> None:
        if frame is not None and len(frame):
            self.power_frames.append(frame)

    def server_metrics(self, frame) -> None:
        if frame is not None and len(frame):
            self.server_metrics_frames.append(frame)

    def engine_started(self, start) -> None:
        self.engine_starts.append(start)


def open_scoped(requested: str, env, devices: list[int] | None, nodes: list[str] | None = None):
    """A started telemetry session over exactly `devices` (None: CPU run), or None; with `nodes`
    (the agents of a multi-node configuration) over every follower's devices too."""
    if requested == "none":
        return None
    factory = env.telemetry_factory
    if factory is None:
        from bench.telemetry import open_telemetry as factory
    session = factory(requested, hardware=env.hardware, gpu_indices=devices)
    if nodes:
        from bench.telemetry.remote import with_nodes

        session = with_nodes(session, nodes)
    return session.start()


def power_frame(telemetry, config_id: str):
    frame = telemetry.power_series()
    if frame is not None and len(frame):
        frame.insert(0, "config_id", config_id)
    return frame


def write_power(run_dir: Path, frames: list, result) -> None:
    """Every session's samples in one file (column config_id tells which configuration's).
    A resumed run appends its samples to those of the sessions before it (nothing is lost)."""
    if frames:
        _write_frames(run_dir / POWER_FILE, frames, result, "power_file",
                      keep=(lambda old, new: old) if result.extra.get("resumed_from") else None)


def _write_frames(path: Path, frames: list, result, key: str, keep=None) -> None:
    """`frames` into `path` (Parquet), after `keep(old, new)` of the rows already there (None: replace).
    result.extra[key] names the file; `{key}_replaced` says why an unreadable one was replaced,
    `{key}_error` why it could not be written (a full disk must not hide the points written)."""
    import pandas as pd

    new = pd.concat(frames, ignore_index=True)
    try:
        if keep is not None and path.is_file():
            try:
                old = pd.read_parquet(path, **PARQUET_READ_OPTIONS)
                new = pd.concat([keep(old, new), new], ignore_index=True)
            except (ValueError, KeyError, OSError) as e:
                result.extra[f"{key}_replaced"] = one_line(f"{type(e).__name__}: {e}")
        new.to_parquet(path, index=False, **PARQUET_WRITE_OPTIONS)
        result.extra[key] = path.name
    except OSError as e:
        result.extra[f"{key}_error"] = str(e)


def server_metrics_frame(scraper, config_id: str, point_id: str):
    """One point's /metrics samples (bench.telemetry.server_metrics) as server_metrics.parquet rows."""
    frame = scraper.frame()
    frame.insert(0, "point_id", point_id)
    frame.insert(0, "config_id", config_id)
    return frame


def write_server_metrics(run_dir: Path, frames: list, result) -> None:
    """Every point's /metrics samples in one long table (config_id, point_id, t_s, metric, value).
    A resumed run keeps the samples of the points it does not measure again."""
    if frames:
        _write_frames(run_dir / SERVER_METRICS_FILE, frames, result, "server_metrics_file",
                      keep=lambda old, new: old[~old["point_id"].isin(set(new["point_id"]))])


def idle_baseline(telemetry, requested: str, env, others: list[int]) -> dict:
    """The idle baseline of the engine's devices, as run.json records it; the other visible
    devices' idle power (W) beside it."""
    from dataclasses import asdict

    if not others or not telemetry.meter.measured:
        return asdict(telemetry.idle_baseline(env.idle_baseline_s))
    other = open_scoped(requested, env, others)
    t0 = other.clock()
    try:
        base = telemetry.idle_baseline(env.idle_baseline_s)
        e = other.energy_between(t0, other.clock(), net=False)
    finally:
        other.stop()
    idle_w = e.energy_j / e.window_s if e.energy_j is not None and e.window_s > 0 else None
    return {**asdict(base), "other_devices": others, "other_devices_idle_w": idle_w}
