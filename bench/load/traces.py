"""Trace replay: requests with the lengths and send times of a trace file (a user file, never
downloaded), token-exact, seeded and deterministic like every workload. The file's formats,
parsing and checks are bench.plan.tracefile's (the plan reads the file before any engine
starts); this module turns its rows into prompts.

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

import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from bench.errors import ConfigError
from bench.load.tokens import TokenSampler
from bench.load.types import Prompt
from bench.plan.tracefile import PARSERS, Trace, read_trace

_MASK64 = 2**64 - 1


def _mix64(x: int) -> int:
    """splitmix64's finalizer: a bijection of [0, 2**64) (xor-shifts and odd multipliers)."""
    x ^= x >> 30
    x = (x * 0xBF58476D1CE4E5B9) & _MASK64
    x ^= x >> 27
    x = (x * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


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
        self.sampler = TokenSampler(vocab_size, special_ids_to_avoid)
        # Tokens that spell a mixed hash id: base-n_allowed digits for 64 bits (one allowed
        # id cannot tell blocks apart: more tokens than a block, refused on use).
        n_allowed = self.sampler.n_allowed
        self.hash_tokens = math.ceil(64 / math.log2(n_allowed)) if n_allowed > 1 else block_size + 1
        self._key = int(np.random.default_rng(_seed_words(seed, 2)).integers(0, 2**63))
        self._trace: Trace | None = None

    def _load(self) -> Trace:
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
