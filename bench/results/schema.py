"""The versioned result format: one folder per run, written as the run goes.

    RUN_DIR/
      run.json                  summary (this schema), rewritten atomically after every point
      requests/<point_id>.parquet   per-request records of one load point (RequestRecord rows)
      power.parquet             power time series, when telemetry recorded one
      engine.log                the engine's own log

`status` is "running" until the run ends; only a run that ended normally is "complete".
A reader never mistakes a half-written run for a finished one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from bench.atomicio import atomic_write_text
from bench.errors import ResultError
from bench.load.records import RequestRecord
from bench.safepath import UnsafePath, check_rel_path, inside

SCHEMA_VERSION = 1
SUPPORTED_SCHEMA_VERSIONS = (1,)
SUMMARY_FILE = "run.json"
REQUESTS_DIR = "requests"

RunStatus = Literal["running", "complete", "interrupted", "failed"]
PointStatus = Literal["ok", "failed", "skipped"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Harness(_Strict):
    name: str = "bench"
    version: str
    git_sha: str | None = None
    git_dirty: bool | None = None


class PointResult(_Strict):
    """One load point. Metric groups are flat dicts whose keys carry their units."""

    point_id: str
    engine_config_id: str = "default"
    load: dict[str, Any]  # {"kind": "concurrency", "concurrency": 8} | {"kind": "rate", ...}
    workload: dict[str, Any] = Field(default_factory=dict)
    status: PointStatus = "ok"
    error: str | None = None  # one line, when status is failed or skipped
    n_requests: int = 0
    n_failed: int = 0
    window: dict[str, Any] = Field(default_factory=dict)  # t0_s, t1_s, window_s, span_s
    metrics: dict[str, Any] = Field(default_factory=dict)
    server: dict[str, Any] = Field(default_factory=dict)  # server-side counter deltas
    energy: dict[str, Any] = Field(default_factory=dict)
    cost: dict[str, Any] = Field(default_factory=dict)
    roofline: dict[str, Any] = Field(default_factory=dict)
    valid: bool = True
    invalid_reasons: list[str] = Field(default_factory=list)
    requests_file: str | None = None
    started_utc: str | None = None
    finished_utc: str | None = None

    @field_validator("requests_file")
    @classmethod
    def _plain_relative(cls, value: str | None) -> str | None:
        """A run.json may come from a shared store: its file names must stay in the run."""
        if value is not None:
            try:
                check_rel_path(value)
            except UnsafePath as e:
                raise ValueError(str(e)) from None
        return value


class RunResult(_Strict):
    schema_version: int = SCHEMA_VERSION
    run_id: str
    status: RunStatus = "running"
    error: str | None = None
    created_utc: str
    finished_utc: str | None = None
    harness: Harness
    config: dict[str, Any]
    provenance: dict[str, Any] = Field(default_factory=dict)
    points: list[PointResult] = Field(default_factory=list)
    extra: dict[str, Any] = Field(default_factory=dict)  # idle baseline, probe used, notes


def write_summary(run_dir: Path, result: RunResult) -> Path:
    path = Path(run_dir) / SUMMARY_FILE
    atomic_write_text(path, result.model_dump_json(indent=2) + "\n")
    return path


def write_requests(run_dir: Path, point_id: str, records: list[RequestRecord]) -> str:
    """Write one point's request records as Parquet; returns the path relative to run_dir."""
    rel = f"{REQUESTS_DIR}/{point_id}.parquet"
    path = Path(run_dir) / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    frame = pd.DataFrame([r.to_row() for r in records])
    frame.to_parquet(tmp, index=False)
    os.replace(tmp, path)
    return rel


def parse_summary(data: dict, source: str = "<memory>") -> RunResult:
    """Validate a summary dict; unknown schema versions are refused by name."""
    if not isinstance(data, dict):
        raise ResultError(f"{source}: not a bench result (expected a JSON object)")
    version = data.get("schema_version")
    if version not in SUPPORTED_SCHEMA_VERSIONS:
        raise ResultError(
            f"{source}: unknown schema_version {version!r}; this bench {_version()} reads "
            f"{', '.join(map(str, SUPPORTED_SCHEMA_VERSIONS))}"
        )
    try:
        return RunResult.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        raise ResultError(f"{source}: invalid result at '{where}': {first['msg']}") from None


def read_summary(run_dir: Path) -> RunResult:
    """Read and validate RUN_DIR/run.json (or a path to the json itself)."""
    path = Path(run_dir)
    if path.is_dir():
        path = path / SUMMARY_FILE
    if not path.exists():
        raise ResultError(f"{path}: no such result file")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ResultError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    return parse_summary(data, str(path))


def read_requests(run_dir: Path, point: PointResult) -> list[RequestRecord]:
    if not point.requests_file:
        return []
    frame = pd.read_parquet(inside(Path(run_dir), point.requests_file))
    return [RequestRecord.from_row(row) for row in frame.to_dict("records")]


def _version() -> str:
    from bench import __version__

    return __version__
