"""A load point's PointResult, from the groups `bench.measure.point` produced (or from a failure).

    pr = build_point_result(point, cfg, point_run, n_gpus=..., energy=..., ...)
    pr = failed_point(point, "failed", "engine died: ...")
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from bench.measure.point import PointGroups, point_groups
from bench.plan import EngineConfig, PointSpec
from bench.results.schema import PointResult

if TYPE_CHECKING:
    from bench.load.driver import PointRun


def utc_now(timespec: str = "seconds") -> str:
    """Now, ISO 8601 UTC to the second ("2026-01-15T10:00:00Z"), or to `timespec`
    ("milliseconds": "2026-01-15T10:00:00.123Z")."""
    return datetime.now(UTC).isoformat(timespec=timespec).replace("+00:00", "Z")


def point_result(point: PointSpec, groups: PointGroups, started_utc: str | None = None) -> PointResult:
    """Compose one measured point's groups into its PointResult."""
    return PointResult(
        point_id=point.point_id,
        engine_config_id=point.engine_config_id,
        load=point.load,
        workload=point.workload,
        status="ok",
        n_requests=groups.n_requests,
        n_failed=groups.n_failed,
        error=groups.error,
        window=groups.window,
        metrics=groups.metrics,
        server=groups.server,
        client=groups.client,
        energy=groups.energy,
        cost=groups.cost,
        roofline=groups.roofline,
        valid=groups.validity.valid,
        invalid_reasons=groups.validity.reasons,
        started_utc=started_utc,
        finished_utc=utc_now(),
        spec_decode=groups.spec_decode,
    )


def build_point_result(
    point: PointSpec,
    cfg: EngineConfig,
    run: PointRun,
    *,
    started_utc: str | None = None,
    **measure_kwargs: Any,
) -> PointResult:
    """Measure one finished point (`bench.measure.point.point_groups` arguments) into a PointResult."""
    return point_result(point, point_groups(point, cfg, run, **measure_kwargs), started_utc)


def failed_point(point: PointSpec, status: Literal["failed", "skipped"], error: str, started_utc: str | None = None) -> PointResult:
    """A point that did not produce measurements (failed or skipped), with its one-line cause."""
    return PointResult(
        point_id=point.point_id,
        engine_config_id=point.engine_config_id,
        load=point.load,
        workload=point.workload,
        status=status,
        error=error,
        valid=False,
        invalid_reasons=[error],
        started_utc=started_utc,
        finished_utc=utc_now(),
    )
