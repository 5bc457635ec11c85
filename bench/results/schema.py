"""The versioned result format: one folder per run, written as the run goes.

    RUN_DIR/
      run.json                  summary (this schema), rewritten atomically after every point
      requests/<point_id>.parquet   per-request records of one load point (RequestRecord rows)
      power.parquet             power time series, when telemetry recorded one
      server_metrics.parquet    the engine's /metrics sampled during every point (bench.telemetry.server_metrics)
      engine.log                the engine's own log

`status` is "running" until the run ends; only a run that ended normally is "complete".
A reader never mistakes a half-written run for a finished one.

Schema versions (docs/results.md): 2 holds the typed groups of `bench.measure.groups`
(its JSON Schema, generated from these models, is docs/run.schema.json); 1 held the same
figures as free dicts and is upgraded to 2 on read, keys v2 does not name kept in `extra`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from bench.atomicio import atomic_write_text
from bench.errors import ResultError, one_line, write_error
from bench.load.records import RequestRecord
from bench.measure.accuracy_verdict import AccuracyResult
from bench.measure.groups import (
    ClientLoad,
    CostFigures,
    Energy,
    Metrics,
    Roofline,
    ServerCounters,
    Window,
)
from bench.measure.specdecode import SpecDecode  # speculative decoding (issue 21)
from bench.measure.traffic import AdapterFigures, StructuredFigures  # issue 21, lora
from bench.plan.points import LoadSpec, WorkloadSpec
from bench.results.config import RunConfig
from bench.results.provenance import Provenance
from bench.results.timing import PointTiming, RunTiming
from bench.safepath import UnsafePath, check_rel_path, inside

SCHEMA_VERSION: Final = 2
# Every Parquet bench writes carries a CRC32 per page, so a flipped bit in a data page is
# found by any reader that verifies them (READ_OPTIONS); the footer is covered by the
# store's whole-file sha256 (docs/store.md).
PARQUET_WRITE_OPTIONS = {"write_page_checksum": True}
PARQUET_READ_OPTIONS = {"page_checksum_verification": True}
SUPPORTED_SCHEMA_VERSIONS = (1, 2)
SUMMARY_FILE = "run.json"
REQUESTS_DIR = "requests"

RunStatus = Literal["running", "complete", "partial", "interrupted", "failed"]  # bench.run.status
PointStatus = Literal["ok", "failed", "skipped"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Harness(_Strict):
    name: str = "bench"
    version: str
    git_sha: str | None = None
    git_dirty: bool | None = None


class PointResult(_Strict):
    """One load point: its plan entry, and the typed groups measuring it (None when not measured)."""

    point_id: str = Field(description="Plan point id; also names requests/<point_id>.parquet.")
    engine_config_id: str = Field(default="default", description="The engine configuration it ran on.")
    load: LoadSpec = Field(description="The load, as the plan defined it (bench.plan.points).")
    workload: WorkloadSpec | None = Field(default=None, description="The workload (prompt source, lengths), as planned.")
    status: PointStatus = Field(default="ok", description="ok, failed or skipped.")
    error: str | None = Field(default=None, description="One line: why it failed or was skipped, or a failed request's error.")
    n_requests: int = Field(default=0, description="Measured requests.")
    n_failed: int = Field(default=0, description="Measured requests that failed.")
    window: Window | None = Field(default=None, description="Measurement window and span.")
    metrics: Metrics | None = Field(default=None, description="Client-side metrics.")
    server: ServerCounters | None = Field(default=None, description="Server token counters vs the client's.")
    client: ClientLoad | None = Field(default=None, description="The load client: worker processes, their CPU, "
                                      "event-loop lag and socket backlog over the measured phase.")
    energy: Energy | None = Field(default=None, description="Energy of the engine's devices over the window.")
    cost: dict[str, CostFigures] = Field(default_factory=dict, description="Cost figures by scenario name.")
    roofline: Roofline | None = Field(default=None, description="Bounds from the card and measured / bound.")
    valid: bool = Field(default=True, description="Validity group: true iff invalid_reasons is empty.")
    invalid_reasons: list[str] = Field(default_factory=list, description="Validity group: why the point is invalid.")
    requests_file: str | None = Field(default=None, description="Per-request Parquet, relative to the run folder.")
    packed_with: list[str] | None = Field(default=None, description="Engine configurations that ran at the same time "
                                          "on other devices of the box (bench sweep --pack); None: it ran alone.")
    # --prestart (docs/timing.md): a note, never a reason to invalidate; absent in older files
    engine_starting_beside: str | None = Field(default=None, exclude_if=lambda v: v is None, description=(
        "The engine configuration whose engine was starting on other devices of the box during this point's "
        "measurement window (--prestart): the host was shared with that start. None: none."))
    started_utc: str | None = Field(default=None, description="ISO 8601 UTC.")
    finished_utc: str | None = Field(default=None, description="ISO 8601 UTC.")
    # time breakdown (issue 22, bench.results.timing): absent in older files
    timing: PointTiming | None = Field(default=None, description="Reset, warm-up, window, drain and wall (s); "
                                       "the adaptive stop's reason.")
    # speculative decoding (issue 21)
    spec_decode: SpecDecode | None = Field(default=None, description="Draft acceptance from the server's "
                                           "spec_decode counters; None: no speculative decoding.")
    # issue 21, lora: a LoRA mix's per-adapter figures and structured output's parse share
    adapters: list[AdapterFigures] | None = Field(default=None, exclude_if=lambda v: v is None, description=(
        "Per LoRA adapter (and base, the base model) of a lora workload: requests, tokens, latency, over the window."))
    structured: StructuredFigures | None = Field(default=None, exclude_if=lambda v: v is None, description=(
        "Structured output: answers checked against their JSON schema, and the share that follow it."))

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
    """run.json: one run of the harness, self-describing (docs/measurement.md, docs/results.md)."""

    schema_version: Literal[2] = Field(default=SCHEMA_VERSION, description="Version of this format.")
    run_id: str = Field(description="Names the run folder.")
    status: RunStatus = Field(default="running", description="running until the run ends; then complete (every point "
                              "ok), partial (some failed or skipped), failed or interrupted.")
    error: str | None = Field(default=None, description="One line, when the run failed.")
    created_utc: str = Field(description="ISO 8601 UTC.")
    finished_utc: str | None = Field(default=None, description="ISO 8601 UTC.")
    harness: Harness = Field(description="The harness that wrote it: version and git sha.")
    config: RunConfig = Field(description="The full resolved configuration (plan, engine configs).")
    provenance: Provenance = Field(default_factory=Provenance, description="Environment: versions, devices, host.")
    points: list[PointResult] = Field(default_factory=list, description="Load points in the order they ran.")
    extra: dict[str, Any] = Field(default_factory=dict, description="Idle baseline, probe used, notes.")

    @property
    def synthetic(self) -> bool:
        """True for a run a test fixture made (`extra.synthetic`): its figures were never measured."""
        return bool(self.extra.get("synthetic"))

    # accuracy gate (docs/accuracy.md); absent from older files
    accuracy: dict[str, list[AccuracyResult]] = Field(
        default_factory=dict, description="Per engine configuration id: its accuracy verdicts (task, agreement).")
    # time breakdown (issue 22, bench.results.timing): absent in older files
    timing: RunTiming | None = Field(default=None, description="Wall time, window time, duty cycle, engine starts "
                                     "and the run's dollars.")


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
    import pandas as pd  # here, not at the top: a process that reads run.json only never pays for pandas

    frame = pd.DataFrame([r.to_row() for r in records])
    try:
        frame.to_parquet(tmp, index=False, **PARQUET_WRITE_OPTIONS)
        os.replace(tmp, path)
    except OSError as e:  # a full disk: no torn or hidden file left; what was written before stays
        tmp.unlink(missing_ok=True)
        raise write_error(e, f"cannot write {path}: {e.strerror or e}; points already written are kept") from None
    return rel


def parse_summary(data: dict, source: str = "<memory>") -> RunResult:
    """Validate a summary dict; unknown schema versions are refused by name."""
    if not isinstance(data, dict):
        raise ResultError(f"{source}: not a bench result (expected a JSON object)")
    version = data.get("schema_version")
    if isinstance(version, bool) or version not in SUPPORTED_SCHEMA_VERSIONS:
        raise ResultError(
            f"{source}: unknown schema_version {version!r}; this bench {_version()} reads "
            f"{', '.join(map(str, SUPPORTED_SCHEMA_VERSIONS))}"
        )
    if version == 1:
        try:
            data = upgrade_v1(data)
        except (TypeError, ValueError, AttributeError) as e:
            raise ResultError(one_line(f"{source}: malformed version 1 result ({type(e).__name__}: {e})")) from None
    try:
        return RunResult.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        raise ResultError(f"{source}: invalid result at '{where}': {first['msg']}") from None


def upgrade_v1(data: dict) -> dict:
    """A version 1 summary dict as version 2: empty groups become None, a flat cost becomes
    {scenario: figures}; group keys v2 does not name are kept in each group's `extra`."""
    out = dict(data, schema_version=2)
    out["extra"] = dict(data.get("extra") or {}, upgraded_from_schema_version=1)
    points = []
    for p in data.get("points") or []:
        if not isinstance(p, dict):
            points.append(p)
            continue
        p = dict(p)
        for key in ("window", "metrics", "server", "energy", "roofline", "workload"):
            if p.get(key) == {}:
                p[key] = None
        cost = p.get("cost") or {}
        if isinstance(cost, dict) and cost and not all(isinstance(v, dict) for v in cost.values()):
            cost = {str(cost.get("scenario") or "stored"): cost}
        p["cost"] = cost
        points.append(p)
    out["points"] = points
    return out


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
    import pandas as pd

    frame = pd.read_parquet(inside(Path(run_dir), point.requests_file), **PARQUET_READ_OPTIONS)
    return [RequestRecord.from_row(row) for row in frame.to_dict("records")]


def _version() -> str:
    from bench import __version__

    return __version__
