"""A run's request Parquet files must agree with its run.json before it is published or used.

A checksum proves a file is the one uploaded, not that the upload was sound: a Parquet with
a flipped byte, or with `n_out` multiplied by 10, hashes as well as a good one. Each
point's requests file must read, and its measured rows must give the counts run.json
states: rows (`n_requests`), failed rows (`n_failed`) and, where run.json has them, the
token totals (`metrics.output_tokens_total`, `metrics.input_tokens_total`). A failed point
that kept its finished requests (no metrics) is checked the same way, counts only.

`check_requests` returns the rows as `RequestRecord`s, from which bench.store.recompute
derives the point's figures again.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from bench.errors import StoreError
from bench.load.records import RequestRecord
from bench.results import PointResult, RunResult
from bench.store.bounded import REQUESTS_LIMITS, read_parquet

_COLUMNS = ("request_id", "phase", "n_out", "n_in", "n_in_expected", "t_send", "t_first", "t_last",
            "ttft_s", "e2e_s", "chunk_tokens", "token_source", "error")


def check_requests(data: bytes, point: PointResult, where: str) -> list[RequestRecord]:
    """The records of `data`, the Parquet of `point`; StoreError (one line) unless it reads
    and agrees with the point."""
    def bad(why: str) -> StoreError:
        return StoreError(f"{where}: point {point.point_id}: {point.requests_file}: {why}")

    try:
        # every column is read, so that every page checksum (where the writer made them) is verified;
        # the footer is checked against limits first (bench.store.bounded)
        table = read_parquet(data, f"{where}: point {point.point_id}: {point.requests_file}", REQUESTS_LIMITS,
                             what="a requests Parquet")
        table.select(list(_COLUMNS))
        rows = table.to_pylist()
    except StoreError:
        raise
    except Exception as e:  # noqa: BLE001  untrusted bytes: any reader failure is a refusal
        raise bad(f"does not read as a requests Parquet ({type(e).__name__})") from None
    try:
        _check_rows(rows, point, bad)
        return [RequestRecord.from_row(row) for row in rows]
    except (TypeError, ValueError, KeyError, OverflowError) as e:  # values of a type no writer makes
        raise bad(f"malformed values ({type(e).__name__})") from None


def _check_rows(rows: list[dict], point: PointResult, bad: Callable[[str], StoreError]) -> None:
    ids = [r["request_id"] for r in rows]
    if not all(_is_count(i) for i in ids) or len(set(ids)) != len(ids):
        raise bad("request ids are not distinct non-negative integers")
    measured = [r for r in rows if r["phase"] == "measured"]
    for r in rows:
        why = _row_problem(r)
        if why:
            raise bad(f"request {r['request_id']}: {why}")
    if len(measured) != point.n_requests:
        raise bad(f"{len(measured)} measured rows, run.json says n_requests {point.n_requests}")
    n_failed = sum(1 for r in measured if r["error"] is not None)
    if n_failed != point.n_failed:
        raise bad(f"{n_failed} failed rows, run.json says n_failed {point.n_failed}")
    out_total = sum(r["n_out"] for r in measured)
    metrics = point.metrics  # None: a failed point's kept requests
    stated = metrics.output_tokens_total if metrics is not None else None
    if stated is not None and stated != out_total:
        raise bad(f"output tokens sum to {out_total}, run.json says {stated}")
    in_total = sum(r["n_in"] if r["n_in"] is not None else r["n_in_expected"]
                   for r in measured if r["t_first"] is not None)
    stated = metrics.input_tokens_total if metrics is not None else None
    if stated is not None and stated != in_total:
        raise bad(f"input tokens sum to {in_total}, run.json says {stated}")


def _row_problem(r: dict) -> str | None:
    """Why one row is not a request record as the client writes it (its stored ttft_s and
    e2e_s are differences of its stamps, so a changed stamp shows); None when it is."""
    if r["phase"] not in ("warmup", "measured"):
        return f"phase {str(r['phase'])[:20]!r}"
    n_out = r["n_out"]
    if not _is_count(n_out):
        return f"n_out {str(n_out)[:20]!r} is not a token count"
    tokens = r["chunk_tokens"] if r["chunk_tokens"] is not None else []
    if not isinstance(tokens, list) or not _all_counts(tokens):
        return "chunk_tokens are not token counts"
    if r["error"] is None and r["token_source"] == "usage" and sum(tokens) != n_out:
        return f"its chunks carry {sum(tokens)} tokens, n_out is {n_out}"
    if not _is_real(r["t_send"]):
        return "t_send is not a time"
    for stamp, diff in (("t_first", "ttft_s"), ("t_last", "e2e_s")):
        if r[stamp] is None and r[diff] is None:
            continue
        if not (_is_real(r[stamp]) and _is_real(r[diff])):
            return f"{diff} and {stamp} disagree"
        if not math.isclose(r[stamp] - r["t_send"], r[diff], rel_tol=1e-9, abs_tol=1e-9):
            return f"{diff} is not {stamp} - t_send"
    return _stamps_problem(r, tokens)


def _stamps_problem(r: dict, tokens: list) -> str | None:
    """Why the other stamps of a row (read when its point is recomputed) are not ones the client writes."""
    chunk_t = r.get("chunk_t") if r.get("chunk_t") is not None else []
    if not isinstance(chunk_t, list) or len(chunk_t) != len(tokens) or not _all_reals(chunk_t):
        return "chunk_t are not one time per chunk"
    for key in ("t_sched", "t_done", "t_first_reasoning", "t_first_answer"):
        if r.get(key) is not None and not _is_real(r[key]):
            return f"{key} is not a time"
    for key in ("n_in", "n_in_expected", "n_out_expected", "n_reasoning", "session", "turn", "worker"):
        value = r.get(key)  # a column with nulls is written as floats by pandas: 12.0 is a count
        if value is not None and not (_is_count(value) or (_is_real(value) and value >= 0 and value == int(value))):
            return f"{key} {str(value)[:20]!r} is not a count"
    return None


def _is_count(v) -> bool:
    return type(v) is int and v >= 0


def _is_real(v) -> bool:
    return type(v) in (int, float) and math.isfinite(v)


# A row's chunk lists hold a value a token (10^5 in a point): `all(_is_count(n) for n in ...)`
# was most of a run's verification; these ask the same with C-level loops (map, set, min).
_INT, _REAL = frozenset({int}), frozenset({int, float})


def _all_counts(values: list) -> bool:
    """`_is_count` of every value."""
    return not values or ({*map(type, values)} <= _INT and min(values) >= 0)


def _all_reals(values: list) -> bool:
    """`_is_real` of every value."""
    return {*map(type, values)} <= _REAL and all(map(math.isfinite, values))


def check_run_requests(run: RunResult, read: Callable[[str], bytes], where: str) -> None:
    """Every point's requests file of `run`, read by `read(rel_path)`, checked by `check_requests`."""
    for point in run.points:
        if point.requests_file:
            check_requests(read(point.requests_file), point, where)
