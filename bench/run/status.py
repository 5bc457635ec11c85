"""How a run ended (issue 11, defect 6): its status and the exit code of `bench run` / `bench sweep`.

    complete      every point ran and measured (status ok)                    exit 0
    partial       some points ok, some failed or skipped                      exit 4
    failed        no point ok, or the run itself raised an error              exit 1
    interrupted   Ctrl-C / SIGTERM; finished points kept, --resume continues  exit 130

A point is "ok" when it was measured; an ok point may still be invalid (its reasons say
why): validity is about what a number means, status about whether it exists.
See docs/reliability.md.
"""

from __future__ import annotations

EXIT_CODES = {"complete": 0, "partial": 4, "failed": 1, "interrupted": 130, "running": 1}


def final_status(points) -> tuple[str, str | None]:
    """(status, one-line error or None) of a run whose loop ended without an exception."""
    n_ok = sum(1 for p in points if p.status == "ok")
    n_failed = sum(1 for p in points if p.status == "failed")
    n_skipped = sum(1 for p in points if p.status == "skipped")
    if n_ok == len(points) and points:
        return "complete", None
    counts = f"{n_ok} ok, {n_failed} failed, {n_skipped} skipped of {len(points)} points"
    if n_ok == 0:
        return "failed", f"no point was measured ({counts})"
    return "partial", counts


def exit_code(status: str) -> int:
    """The process exit code for a run that ended with `status`."""
    return EXIT_CODES.get(status, 1)
