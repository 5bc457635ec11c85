"""Prompt generators: what each request asks for. Every generator is seeded and deterministic.

What a workload is (its kind, fields, units and valid ranges) is defined once, by the
point-level specs in `bench.plan.points` (RandomWorkload | SharedPrefixWorkload |
FileWorkload | TraceWorkload | SessionsWorkload | StructuredWorkload | LoraWorkload);
`make_workload(spec, vocab_size, seed)` builds the generator of a spec: `RandomPrompts`,
`SharedPrefixPrompts` and `FilePrompts` here, `TraceReplay` (bench.load.traces),
`ChatSessions` (bench.load.sessions), `StructuredPrompts` (bench.load.structured) and
`LoraMix` (bench.load.mix, a mix of LoRA adapters over another workload's requests). A
generator turns `n` into a list of `Prompt`s: `prompts(n)` returns the same list for the
same seed, every time, from its own `numpy.random.Generator` (never the global RNG).
`describe()` is the dict stored in the result config.

Token-exact prompts are lists of token ids, sent as `prompt: [ids]` to /v1/completions.
vLLM does not tokenize such a prompt and adds no BOS (renderers/base.py passes
`prompt_token_ids` through untouched), so the server's `usage.prompt_tokens` equals the
requested length exactly. The chat endpoint needs text: the text variants are
approximate (the chat template adds tokens); the server's own count is what is used.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from bench.errors import ConfigError
from bench.load.mix import LoraMix
from bench.load.sessions import ChatSessions
from bench.load.structured import StructuredPrompts
from bench.load.tokens import TokenSampler, words
from bench.load.traces import TraceReplay
from bench.load.types import Prompt, Workload
from bench.plan import points
from bench.plan.inputs import read_prompts


def _lengths(rng: np.random.Generator, n: int, fixed: int, span: tuple[int, int] | None) -> np.ndarray:
    if span is None:
        return np.full(n, fixed, dtype=np.int64)
    lo, hi = span
    if not 1 <= lo <= hi:
        raise ConfigError(f"length range {span} must satisfy 1 <= low <= high")
    return rng.integers(lo, hi + 1, size=n)


class RandomPrompts:
    """Random token prompts of exact length (tokens), outputs of exact length with ignore_eos.

    `input_len_range` / `output_len_range` = (low, high) inclusive: lengths drawn uniformly;
    None: every request uses `input_len` / `output_len`. `as_text=True` gives word prompts
    for the chat endpoint (about one token per word).
    """

    def __init__(self, input_len: int, output_len: int, vocab_size: int, seed: int = 0,
                 input_len_range: tuple[int, int] | None = None,
                 output_len_range: tuple[int, int] | None = None,
                 special_ids_to_avoid: Iterable[int] = (), as_text: bool = False):
        if input_len < 1 or output_len < 1:
            raise ConfigError(f"input_len and output_len must be >= 1, got {input_len}, {output_len}")
        self.input_len, self.output_len, self.seed = input_len, output_len, seed
        self.input_len_range, self.output_len_range = input_len_range, output_len_range
        self.vocab_size, self.as_text = vocab_size, as_text
        self.sampler = TokenSampler(vocab_size, special_ids_to_avoid)

    def prompts(self, n: int) -> list[Prompt]:
        rng = np.random.default_rng(self.seed)
        n_in = _lengths(rng, n, self.input_len, self.input_len_range)
        n_out = _lengths(rng, n, self.output_len, self.output_len_range)
        out = []
        for i in range(n):
            if self.as_text:
                out.append(Prompt(int(n_in[i]), int(n_out[i]), text=words(rng, int(n_in[i]))))
            else:
                out.append(Prompt(int(n_in[i]), int(n_out[i]), token_ids=self.sampler.sample(rng, int(n_in[i]))))
        return out

    def describe(self) -> dict:
        return {"kind": "random", "input_len": self.input_len, "output_len": self.output_len,
                "input_len_range": self.input_len_range, "output_len_range": self.output_len_range,
                "vocab_size": self.vocab_size, "seed": self.seed, "as_text": self.as_text,
                "special_ids_avoided": len(self.sampler.avoid)}


class SharedPrefixPrompts:
    """`n_prefixes` random prefixes of `prefix_len` tokens; each request = one of them + a random suffix."""

    def __init__(self, n_prefixes: int, prefix_len: int, suffix_len: int, output_len: int,
                 vocab_size: int, seed: int = 0, special_ids_to_avoid: Iterable[int] = ()):
        if n_prefixes < 1 or prefix_len < 1 or suffix_len < 0 or output_len < 1:
            raise ConfigError("shared prefix workload needs n_prefixes, prefix_len, output_len >= 1, suffix_len >= 0")
        self.n_prefixes, self.prefix_len, self.suffix_len = n_prefixes, prefix_len, suffix_len
        self.output_len, self.vocab_size, self.seed = output_len, vocab_size, seed
        self.sampler = TokenSampler(vocab_size, special_ids_to_avoid)

    def prompts(self, n: int) -> list[Prompt]:
        rng = np.random.default_rng(self.seed)
        prefixes = [self.sampler.sample(rng, self.prefix_len) for _ in range(self.n_prefixes)]
        which = rng.integers(0, self.n_prefixes, size=n)
        n_in = self.prefix_len + self.suffix_len
        return [Prompt(n_in, self.output_len, token_ids=prefixes[w] + self.sampler.sample(rng, self.suffix_len))
                for w in which.tolist()]

    def describe(self) -> dict:
        return {"kind": "shared_prefix", "n_prefixes": self.n_prefixes, "prefix_len": self.prefix_len,
                "suffix_len": self.suffix_len, "output_len": self.output_len, "vocab_size": self.vocab_size,
                "seed": self.seed}


class FilePrompts:
    """Prompts from a JSONL file, shuffled with the seed and cycled when `n` exceeds the file.

    Lines are ShareGPT-style `{"conversations": [{"from": "human", "value": ...}, {"from": "gpt", ...}]}`
    (the first human turn is the prompt) or `{"prompt": "...", "output_len": N}`.
    Output length: the line's `output_len`, else `output_len`, else (with `encode`) the token
    count of the first gpt reply. With `encode` (text -> token ids, the served model's
    tokenizer) prompts are sent as token ids and are token-exact; without it they are text and
    `n_in_expected` is a word count (the server's usage is authoritative).
    """

    def __init__(self, path: str | Path, seed: int = 0, output_len: int | None = None,
                 encode: Callable[[str], list[int]] | None = None):
        self.path, self.seed, self.output_len, self.encode = Path(path), seed, output_len, encode
        self._items: list[tuple[str, int]] | None = None

    def _load(self) -> list[tuple[str, int]]:
        if self._items is None:  # parsed and checked as the plan does (bench.plan.inputs)
            self._items = read_prompts(self.path, self.output_len, self.encode)
        return self._items

    def prompts(self, n: int) -> list[Prompt]:
        items = self._load()
        rng = np.random.default_rng(self.seed)
        order: list[int] = []
        while len(order) < n:
            order.extend(rng.permutation(len(items)).tolist())
        out = []
        for i in order[:n]:
            text, n_out = items[i]
            if self.encode is not None:
                ids = list(self.encode(text))
                out.append(Prompt(len(ids), n_out, token_ids=ids, text=text))
            else:
                out.append(Prompt(len(text.split()), n_out, text=text))
        return out

    def describe(self) -> dict:
        return {"kind": "file", "path": str(self.path), "seed": self.seed, "output_len": self.output_len,
                "token_exact": self.encode is not None, "n_prompts": len(self._load())}


def make_workload(spec: points.WorkloadSpec | dict, vocab_size: int, seed: int) -> Workload:
    """The prompt generator of a point's workload spec (a dict is parsed: ConfigError when
    invalid); `seed` is used where the spec leaves its own seed out."""
    spec = points.parse_workload(spec)
    own_seed = seed if spec.seed is None else spec.seed
    if isinstance(spec, points.RandomWorkload):
        return RandomPrompts(spec.input_len, spec.output_len, vocab_size, seed=own_seed,
                              input_len_range=spec.input_len_range, output_len_range=spec.output_len_range,
                              as_text=spec.as_text)
    if isinstance(spec, points.SharedPrefixWorkload):
        return SharedPrefixPrompts(spec.n_prefixes, spec.prefix_len, spec.suffix_len, spec.output_len,
                                    vocab_size, seed=own_seed)
    if isinstance(spec, points.TraceWorkload):
        return TraceReplay(spec.path, spec.format, vocab_size, seed=own_seed, speedup=spec.speedup,
                           limit=spec.limit, block_size=spec.block_size)
    if isinstance(spec, points.SessionsWorkload):
        return ChatSessions.from_spec(spec, own_seed)
    if isinstance(spec, points.StructuredWorkload):  # issue 21, lora
        return StructuredPrompts(spec, own_seed)
    if isinstance(spec, points.LoraWorkload):  # issue 21, lora: the inner workload keeps its own seed rule
        return LoraMix(make_workload(spec.requests, vocab_size, seed), spec.shares(), own_seed)
    return FilePrompts(spec.path, seed=own_seed, output_len=spec.output_len)
