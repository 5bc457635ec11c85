"""Results: the versioned run folder (run.json + per-request Parquet), written as the run goes.

    from bench.results import RunResult, PointResult, read_summary, write_summary
    from bench.results.point import build_point_result, failed_point   (a point's PointResult)
"""

from bench.results.schema import (  # noqa: F401
    REQUESTS_DIR,
    SCHEMA_VERSION,
    SUMMARY_FILE,
    SUPPORTED_SCHEMA_VERSIONS,
    Harness,
    PointResult,
    RunResult,
    parse_summary,
    read_requests,
    read_summary,
    upgrade_v1,
    write_requests,
    write_summary,
)
