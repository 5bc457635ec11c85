"""How a run ended (issue 11 defect 6, issue 18 defect 9): its status and the exit code of
`bench run` / `bench sweep`. The one place these rules live; docs/reliability.md has the table.

    complete      every point measured (status ok, at least one request succeeded)   exit 0
    partial       some points ok, some failed or skipped                              exit 4
    failed        no point ok, or the run itself raised an error                      exit 1
    interrupted   Ctrl-C / SIGTERM; finished points kept, --resume continues          exit 130

Errors outside a run's loop exit with their domain code (bench.errors): bad configuration 2,
engine error 3, disk full 5.

A point is "ok" when it was measured. A point whose every measured request failed measured
nothing: it is `failed` ("no request succeeded ..."), so a run of such points is `failed`,
never `complete` with exit 0. An ok point may still be invalid (its reasons say why):
validity is about what a number means, status about whether it exists.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench.results.schema import RunStatus

EXIT_CODES = {"complete": 0, "partial": 4, "failed": 1, "interrupted": 130, "running": 1}


class Terminated(KeyboardInterrupt):
    """SIGTERM during a run. A KeyboardInterrupt, so every path that keeps a Ctrl-C's points
    keeps these too; its own type, so no message calls it a Ctrl-C."""


def raise_terminated(signum, frame):
    """The SIGTERM handler while a run executes."""
    raise Terminated


def interruption(exc: BaseException) -> str:
    """What interrupted a run, for its error line and the CLI's: SIGTERM or Ctrl-C."""
    return "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted by the user (Ctrl-C)"


def no_success(point) -> bool:
    """A point that ran (status ok) but none of whose measured requests succeeded (a point
    without request counts, as a summary from elsewhere may be, is taken at its status)."""
    n = getattr(point, "n_requests", None)
    return point.status == "ok" and n is not None and n - (getattr(point, "n_failed", 0) or 0) <= 0


def measured(point) -> bool:
    """The load ran to its end: the point is ok, or failed only because none of its requests
    succeeded (`settle_point`: it has metrics). A point that failed without metrics (its engine
    or a client worker died, it could not start) measured nothing; a capacity search retries it
    instead of counting it as an SLO miss."""
    return point.status == "ok" or (point.status == "failed" and getattr(point, "metrics", None) is not None)


def settle_point(point):
    """`point`, marked `failed` when it measured nothing (`no_success`); its requests, counts
    and the first request error stay as they are."""
    if no_success(point):
        why = f"no request succeeded ({point.n_failed} of {point.n_requests} failed)"
        point.error = f"{why}: {point.error}" if point.error else why
        point.status, point.valid = "failed", False
        point.invalid_reasons = [why, *(point.invalid_reasons or [])]
    return point


CONVERGED = "converged"  # the reason's first word for a repeat adaptive repeats left out (bench.run.repeats)


def final_status(points) -> tuple[RunStatus, str | None]:
    """(status, one-line error or None) of a run whose loop ended without an exception."""
    n_ok = sum(1 for p in points if p.status == "ok" and not no_success(p))
    n_skipped = sum(1 for p in points if p.status == "skipped")
    n_failed = len(points) - n_ok - n_skipped
    # a repeat left out because its point's interval converged (adaptive repeats) is done as asked
    n_converged = sum(1 for p in points
                      if p.status == "skipped" and (getattr(p, "error", None) or "").startswith(CONVERGED))
    if n_ok + n_converged == len(points) and n_ok:
        return "complete", None
    counts = f"{n_ok} ok, {n_failed} failed, {n_skipped} skipped of {len(points)} points"
    if n_ok == 0:
        return "failed", f"no point was measured ({counts})"
    return "partial", counts


def exit_code(status: str) -> int:
    """The process exit code for a run that ended with `status`."""
    return EXIT_CODES.get(status, 1)
