"""Trace replay: requests with the lengths and send times of a trace file (a user file, never
downloaded), token-exact, seeded and deterministic like every workload.

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

Prompts. A request's send time is `(t - t_first) / speedup` s (`Prompt.t_sched_s`, the first
replayed request at 0.0). Its token ids are the blocks of its `hash_ids` in order, then
request-unique tokens up to `input_len`. The block of a hash id is fixed by (seed, hash id):
whichever requests carry that id carry exactly those tokens, and a request whose last block
is partial (`input_len - block_size * (len(hash_ids) - 1)` tokens) carries a prefix of it.
Different hash ids never give the same block, by construction rather than by chance: the
first `hash_tokens` tokens of a block spell a seeded bijective 64-bit mix of its hash id in
base `n_allowed` (the usable vocabulary), so distinct ids give distinct heads whose tokens
still look random (no common leading tokens for a token-granular prefix cache to match);
the rest of the block is random.
"""

from __future__ import annotations

import csv
import json
import math
from array import array
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from bench.errors import ConfigError
from bench.load.workload import Prompt, _TokenSampler, json_object

MAX_HASH_ID = 2**63 - 1  # hash ids are non-negative 64-bit integers
_MASK64 = 2**64 - 1


def _mix64(x: int) -> int:
    """splitmix64's finalizer: a bijection of [0, 2**64) (xor-shifts and odd multipliers)."""
    x ^= x >> 30
    x = (x * 0xBF58476D1CE4E5B9) & _MASK64
    x ^= x >> 27
    x = (x * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


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
class _Trace:
    """The replayed rows as compact columns (a BurstGPT file has millions of rows)."""

    t_s: array
    input_len: array
    output_len: array
    line: array
    hash_ids: list[tuple[int, ...]]
    n_skipped_zero_output: int


def read_trace(path: Path, fmt: str, limit: int | None = None, block_size: int = 512) -> _Trace:
    """The first `limit` requests of a trace (rows with output length 0 skipped and counted);
    ConfigError, one line with file:line, on a missing file or a bad row."""
    if fmt not in PARSERS:
        raise ConfigError(f"unknown trace format '{fmt}' (known: {', '.join(PARSERS)})")
    if not path.is_file():
        raise ConfigError(f"{path}: no such trace file")
    trace = _Trace(array("d"), array("q"), array("q"), array("q"), [], 0)
    last_t = -math.inf
    try:
        for row in PARSERS[fmt](path):
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
    if not trace.t_s:
        skipped = f" ({trace.n_skipped_zero_output} rows with output length 0 skipped)" if trace.n_skipped_zero_output else ""
        raise ConfigError(f"{path}: no requests in trace{skipped}")
    return trace


# ---------------------------------------------------------------- the generator


def _seed_words(seed: int, *more: int) -> list[int]:
    return [seed & (2**64 - 1), *more]  # SeedSequence takes non-negative words; a negative seed still works


class TraceReplay:
    """Prompts replaying a trace: the first min(n, limit, rows) requests in trace order, each
    token-exact (`input_len` ids, `output_len` out) with its scaled send time `t_sched_s`.

    `path` is read lazily, once (relative to the current directory). Same seed, same ids.
    """

    def __init__(self, path: str | Path, fmt: str, vocab_size: int, seed: int = 0, speedup: float = 1.0,
                 limit: int | None = None, block_size: int = 512, special_ids_to_avoid: Iterable[int] = ()):
        if fmt not in PARSERS:
            raise ConfigError(f"unknown trace format '{fmt}' (known: {', '.join(PARSERS)})")
        if not speedup > 0 or not math.isfinite(speedup):
            raise ConfigError(f"trace speedup must be a finite number > 0, got {speedup}")
        if block_size < 1 or (limit is not None and limit < 1):
            raise ConfigError(f"trace block_size and limit must be >= 1, got {block_size}, {limit}")
        self.path, self.format, self.vocab_size, self.seed = Path(path), fmt, vocab_size, seed
        self.speedup, self.limit, self.block_size = float(speedup), limit, block_size
        self.sampler = _TokenSampler(vocab_size, special_ids_to_avoid)
        # Tokens that spell a mixed hash id: base-n_allowed digits for 64 bits (one allowed
        # id cannot tell blocks apart: more tokens than a block, refused on use).
        n_allowed = self.sampler.n_allowed
        self.hash_tokens = math.ceil(64 / math.log2(n_allowed)) if n_allowed > 1 else block_size + 1
        self._key = int(np.random.default_rng(_seed_words(seed, 2)).integers(0, 2**63))
        self._trace: _Trace | None = None

    def _load(self) -> _Trace:
        if self._trace is None:
            trace = read_trace(self.path, self.format, self.limit, self.block_size)
            if any(trace.hash_ids) and self.hash_tokens > self.block_size:
                raise ConfigError(f"{self.path}: block_size {self.block_size} is shorter than the "
                                  f"{self.hash_tokens} tokens that tell hash ids apart at vocab_size {self.vocab_size}")
            self._trace = trace
        return self._trace

    def _block(self, hash_id: int) -> np.ndarray:
        """The `block_size` token ids of a hash id: the digits of its mix, then random ids."""
        n, digits, rest = self.sampler.n_allowed, [], _mix64((hash_id + self._key) & _MASK64)
        for _ in range(self.hash_tokens):
            rest, d = divmod(rest, n)
            digits.append(d)
        head = np.array(digits, dtype=np.int64)
        if self.sampler.allowed is not None:
            head = self.sampler.allowed[head]
        rng = np.random.default_rng(_seed_words(self.seed, 0, hash_id))
        tail = self.sampler.sample(rng, self.block_size - self.hash_tokens)
        return np.concatenate([head, np.array(tail, dtype=np.int64)])

    def prompts(self, n: int) -> list[Prompt]:
        trace = self._load()
        blocks: dict[int, np.ndarray] = {}
        t0 = trace.t_s[0]
        out = []
        for i in range(min(max(n, 0), len(trace.t_s))):
            n_in, hash_ids = trace.input_len[i], trace.hash_ids[i]
            parts = []
            for h in hash_ids:
                if h not in blocks:
                    blocks[h] = self._block(h)
                parts.append(blocks[h])
            ids = np.concatenate(parts)[:n_in].tolist() if parts else []
            if len(ids) < n_in:  # past the hash blocks: tokens of this request alone
                rng = np.random.default_rng(_seed_words(self.seed, 1, trace.line[i]))
                ids += self.sampler.sample(rng, n_in - len(ids))
            out.append(Prompt(n_in, trace.output_len[i], token_ids=ids,
                              t_sched_s=(trace.t_s[i] - t0) / self.speedup))
        return out

    def describe(self) -> dict:
        trace = self._load()
        distinct = {h for ids in trace.hash_ids for h in ids}
        return {"kind": "trace", "format": self.format, "path": str(self.path), "speedup": self.speedup,
                "limit": self.limit, "block_size": self.block_size, "vocab_size": self.vocab_size,
                "seed": self.seed, "n_requests": len(trace.t_s),
                "n_skipped_zero_output": trace.n_skipped_zero_output,
                "span_s": (trace.t_s[-1] - trace.t_s[0]) / self.speedup,
                "input_len_max": max(trace.input_len), "output_len_max": max(trace.output_len),
                "input_tokens": sum(trace.input_len), "output_tokens": sum(trace.output_len),
                "n_hash_ids": len(distinct), "hash_tokens": self.hash_tokens if distinct else 0,
                "special_ids_avoided": len(self.sampler.avoid)}
