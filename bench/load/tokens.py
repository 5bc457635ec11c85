"""Synthetic tokens and words, shared by the prompt generators (bench.load.workload), the trace
replay (bench.load.traces) and the synthetic chat sessions (bench.load.sessions). Seeded by
the caller's own `numpy.random.Generator`, never the global RNG."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from bench.errors import ConfigError

# Common English words that are one token in the Llama, Qwen, Mistral and GPT tokenizers
# (with their leading space): a text prompt of k words is about k tokens.
WORDS = ["the", "of", "and", "to", "in", "is", "for", "on", "that", "with", "as", "was", "by", "at", "from", "it", "an", "be", "this", "are", "or", "have", "not", "but", "had", "his", "they", "you", "which", "one", "were", "all", "we", "can", "her", "has", "there", "been", "if", "more", "when", "will", "would", "who", "so", "no", "out", "up", "into", "than", "them", "time", "only", "some", "could", "new", "about", "two", "may", "then", "do", "first", "any", "like", "my", "now", "over", "such", "our", "man", "me", "even", "most", "made", "after", "also", "did", "many", "before", "must", "through", "back", "years", "where", "much", "your", "way", "well", "down", "should", "because", "each", "just", "those", "people", "how", "too", "little", "state", "good", "very", "make", "world", "still", "own", "see", "men", "work", "long", "get", "here"]


def words(rng: np.random.Generator, k: int) -> str:
    """`k` random WORDS joined by spaces (about k tokens)."""
    return " ".join(WORDS[w] for w in rng.integers(0, len(WORDS), size=k))


class TokenSampler:
    """Uniform token ids in [0, vocab_size) minus the special ids."""

    def __init__(self, vocab_size: int, avoid: Iterable[int]):
        if vocab_size < 2:
            raise ConfigError(f"vocab_size must be >= 2, got {vocab_size}")
        self.avoid = sorted({int(i) for i in avoid if 0 <= int(i) < vocab_size})
        self.allowed = np.setdiff1d(np.arange(vocab_size, dtype=np.int64), self.avoid) if self.avoid else None
        self.n_allowed = vocab_size - len(self.avoid)
        if self.n_allowed < 1:
            raise ConfigError("every token id is a special id to avoid")

    def sample(self, rng: np.random.Generator, k: int) -> list[int]:
        idx = rng.integers(0, self.n_allowed, size=k)
        return (self.allowed[idx] if self.allowed is not None else idx).tolist()
