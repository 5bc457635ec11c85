"""Trace files (a user file, never downloaded): parsed and validated without a tokenizer, so the
plan reads them before any engine starts (`bench plan` shows their request count and replay
time; a bad file is one line before a run folder exists). bench.load.traces turns the rows
into token-exact prompts.

Formats (`TraceWorkload.format`), one parser each in `PARSERS`; columns and keys not listed
are ignored, so real files with extra columns parse:

- `mooncake`: JSONL, `{"timestamp": ms, "input_length": N, "output_length": N,
  "hash_ids": [ids]}` (Mooncake / FAST'25 traces); `hash_ids` are prefix blocks of
  `block_size` tokens (512 in the released traces).
- `azure`: CSV with `TIMESTAMP` (a datetime such as "2023-11-16 18:15:46.6805900", 7
  fractional digits or a UTC offset accepted), `ContextTokens`, `GeneratedTokens`
  (AzurePublicDataset LLM inference traces 2023 and 2024).
- `burstgpt`: CSV with `Timestamp` (s from the trace start), `Request tokens`,
  `Response tokens` (and `Model`, `Total tokens`, `Log Type`, ignored).
- `jsonl`: bench's own, one object a line: `{"timestamp_s": s, "input_len": N,
  "output_len": N}` plus optional `"hash_ids": [ids]` with Mooncake's block meaning.

Rows must come in time order. An input length < 1 or an output length < 0 is refused; an
output length of 0 (BurstGPT's failed requests) skips the row, counted in `describe()`.
Every error is one line naming the file and the line. With `limit` the file is read only
up to its limit-th request (a slice of a multi-million-row BurstGPT file loads at once).
"""

from __future__ import annotations

import csv
import json
import math
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from bench.errors import ConfigError

MAX_HASH_ID = 2**63 - 1  # hash ids are non-negative 64-bit integers
# |t| on a trace's clock (s): POSIX times are ~1.7e9 s; float64 still resolves 15 us at 1e11 s,
# and a replay's send times are differences of these.
MAX_TIMESTAMP_S = 1e11


def check_file(path: Path, what: str) -> None:
    """ConfigError, one line, unless `path` is a regular file (a FIFO or a device is refused, not
    read: it could block or never end)."""
    try:
        if path.is_file():
            return
        there = path.exists()
    except (OSError, ValueError) as e:  # a name too long, a NUL byte
        raise ConfigError(f"{path}: cannot open {what} ({e})") from None
    raise ConfigError(f"{path}: not a regular file ({what})" if there else f"{path}: no such {what}")


def json_object(line: str, where: str) -> dict:
    """One JSONL line as a dict; a one-line ConfigError naming `where` (file:line) otherwise."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{where}: not valid JSON ({e.msg})") from None
    if not isinstance(obj, dict):
        raise ConfigError(f"{where}: expected a JSON object per line, got {type(obj).__name__}")
    return obj


@dataclass(frozen=True, slots=True)
class TraceRow:
    """One request of a trace: its time on the trace's clock (s), lengths (tokens), prefix
    blocks, and where it is in the file (line, 1-based)."""

    t_s: float
    input_len: int
    output_len: int
    hash_ids: tuple[int, ...]
    line: int


# ---------------------------------------------------------------- field checks


def _int(value: object, where: str, name: str) -> int:
    """An integer from JSON (not a bool, an integral float is fine) or CSV text."""
    if isinstance(value, str):
        text = value.strip()
        try:
            return int(text)
        except ValueError:
            try:
                value = float(text)
            except ValueError:
                raise ConfigError(f"{where}: {name} must be an integer, got {json.dumps(value)[:40]}") from None
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{where}: {name} must be an integer, got {json.dumps(value)[:40]}")
    return value


def _seconds(value: object, where: str, name: str, scale: float = 1.0) -> float:
    """A finite time in s from a number (or CSV text) given in units of `scale` s."""
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise ConfigError(f"{where}: {name} must be a finite number, got {json.dumps(value)[:40]}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{where}: {name} must be a finite number, got {json.dumps(value)[:40]}")
    return float(value) * scale


def _hash_ids(value: object, where: str) -> tuple[int, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or any(isinstance(h, bool) or not isinstance(h, int) for h in value):
        raise ConfigError(f"{where}: hash_ids must be a list of integers, got {json.dumps(value)[:40]}")
    if any(not 0 <= h <= MAX_HASH_ID for h in value):
        raise ConfigError(f"{where}: hash_ids must be in [0, 2**63), got {json.dumps(value)[:40]}")
    return tuple(value)


def _row(where: str, line: int, t_s: float, n_in: int, n_out: int, hash_ids: tuple[int, ...] = ()) -> TraceRow:
    if n_in < 1:
        raise ConfigError(f"{where}: input length must be >= 1 token, got {n_in}")
    if n_out < 0:
        raise ConfigError(f"{where}: output length must be >= 0 tokens, got {n_out}")
    return TraceRow(t_s, n_in, n_out, hash_ids, line)


# ---------------------------------------------------------------- parsers


def _json_lines(path: Path) -> Iterator[tuple[str, int, dict]]:
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            yield where, lineno, json_object(line, where)


def _need(obj: dict, key: str, where: str) -> object:
    if key not in obj:
        raise ConfigError(f"{where}: no '{key}' (keys: {', '.join(obj) or 'none'})")
    return obj[key]


def parse_mooncake(path: Path) -> Iterator[TraceRow]:
    """Mooncake JSONL: `timestamp` (ms), `input_length`, `output_length`, `hash_ids`."""
    for where, lineno, obj in _json_lines(path):
        yield _row(where, lineno, _seconds(_need(obj, "timestamp", where), where, "timestamp", 1e-3),
                   _int(_need(obj, "input_length", where), where, "input_length"),
                   _int(_need(obj, "output_length", where), where, "output_length"),
                   _hash_ids(obj.get("hash_ids"), where))


def parse_jsonl(path: Path) -> Iterator[TraceRow]:
    """bench's JSONL: `timestamp_s` (s), `input_len`, `output_len`, optional `hash_ids`."""
    for where, lineno, obj in _json_lines(path):
        yield _row(where, lineno, _seconds(_need(obj, "timestamp_s", where), where, "timestamp_s"),
                   _int(_need(obj, "input_len", where), where, "input_len"),
                   _int(_need(obj, "output_len", where), where, "output_len"),
                   _hash_ids(obj.get("hash_ids"), where))


def _csv_rows(path: Path, columns: tuple[str, str, str]) -> Iterator[tuple[str, int, list[str]]]:
    """(where, line, [time, input, output] texts) per data row of a CSV with a header."""
    with path.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            raise ConfigError(f"{path}: empty file (expected a header with {', '.join(columns)})") from None
        missing = [c for c in columns if c not in header]
        if missing:
            raise ConfigError(f"{path}:1: no column {', '.join(map(repr, missing))} (columns: {', '.join(header)[:200]})")
        index = [header.index(c) for c in columns]
        for fields in reader:
            if not fields or all(not x.strip() for x in fields):
                continue
            where = f"{path}:{reader.line_num}"
            if len(fields) != len(header):
                raise ConfigError(f"{where}: {len(fields)} fields, the header has {len(header)}")
            yield where, reader.line_num, [fields[i] for i in index]


def _datetime_s(text: str, where: str) -> float:
    """POSIX seconds of an ISO datetime; no offset means UTC."""
    try:
        dt = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ConfigError(f"{where}: TIMESTAMP is not a datetime, got {json.dumps(text)[:40]}") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def parse_azure(path: Path) -> Iterator[TraceRow]:
    """Azure LLM inference trace CSV: `TIMESTAMP` (datetime), `ContextTokens`, `GeneratedTokens`."""
    for where, line, (t, n_in, n_out) in _csv_rows(path, ("TIMESTAMP", "ContextTokens", "GeneratedTokens")):
        yield _row(where, line, _datetime_s(t, where),
                   _int(n_in, where, "ContextTokens"), _int(n_out, where, "GeneratedTokens"))


def parse_burstgpt(path: Path) -> Iterator[TraceRow]:
    """BurstGPT CSV: `Timestamp` (s), `Request tokens`, `Response tokens`."""
    for where, line, (t, n_in, n_out) in _csv_rows(path, ("Timestamp", "Request tokens", "Response tokens")):
        yield _row(where, line, _seconds(t, where, "Timestamp"),
                   _int(n_in, where, "Request tokens"), _int(n_out, where, "Response tokens"))


PARSERS: dict[str, Callable[[Path], Iterator[TraceRow]]] = {
    "mooncake": parse_mooncake, "azure": parse_azure, "burstgpt": parse_burstgpt, "jsonl": parse_jsonl,
}


@dataclass
class Trace:
    """The replayed rows as compact columns (a BurstGPT file has millions of rows)."""

    t_s: array
    input_len: array
    output_len: array
    line: array
    hash_ids: list[tuple[int, ...]]
    n_skipped_zero_output: int


def read_trace(path: Path, fmt: str, limit: int | None = None, block_size: int = 512) -> Trace:
    """The first `limit` requests of a trace (rows with output length 0 skipped and counted);
    ConfigError, one line with file:line, on a missing file or a bad row."""
    if fmt not in PARSERS:
        raise ConfigError(f"unknown trace format '{fmt}' (known: {', '.join(PARSERS)})")
    check_file(path, "trace file")
    trace = Trace(array("d"), array("q"), array("q"), array("q"), [], 0)
    last_t = -math.inf
    try:
        for row in PARSERS[fmt](path):
            if not -MAX_TIMESTAMP_S <= row.t_s <= MAX_TIMESTAMP_S:
                raise ConfigError(f"{path}:{row.line}: timestamp {row.t_s:.4g} s is out of range "
                                  f"(at most {MAX_TIMESTAMP_S:g} s either side of 0; are its units right?)")
            if row.t_s < last_t:
                raise ConfigError(f"{path}:{row.line}: timestamp goes back in time (rows must be in time order)")
            last_t = row.t_s
            if row.hash_ids and row.input_len <= block_size * (len(row.hash_ids) - 1):
                raise ConfigError(f"{path}:{row.line}: {len(row.hash_ids)} hash_ids of {block_size} tokens need "
                                  f"more than {row.input_len} input tokens (is block_size right?)")
            if row.output_len == 0:
                trace.n_skipped_zero_output += 1
                continue
            trace.t_s.append(row.t_s)
            trace.input_len.append(row.input_len)
            trace.output_len.append(row.output_len)
            trace.line.append(row.line)
            trace.hash_ids.append(row.hash_ids)
            if limit is not None and len(trace.t_s) >= limit:
                break  # the rest of the file is not read
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.start} of a line)") from None
    except csv.Error as e:
        raise ConfigError(f"{path}: bad CSV ({e})") from None
    except OSError as e:
        raise ConfigError(f"cannot read trace file {path}: {e.strerror or e}") from None
    if not trace.t_s:
        skipped = f" ({trace.n_skipped_zero_output} rows with output length 0 skipped)" if trace.n_skipped_zero_output else ""
        raise ConfigError(f"{path}: no requests in trace{skipped}")
    return trace
