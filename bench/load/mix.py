"""A LoRA mix over another workload's requests: each request's `model` (the adapter it is
served by, or the base model) drawn from the mix's weights with its own seeded RNG."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from bench.load.types import Prompt, Workload
from bench.plan.lora import BASE


class LoraMix:
    """The requests of `inner`, each sent to an adapter of `shares` (name -> share, summing to 1;
    `base` leaves the base model's name in the request)."""

    def __init__(self, inner: Workload, shares: dict[str, float], seed: int = 0):
        self.inner, self.shares, self.seed = inner, dict(shares), seed

    def prompts(self, n: int) -> list[Prompt]:
        prompts = self.inner.prompts(n)
        names = list(self.shares)
        rng = np.random.default_rng([self.seed, 0x10A])  # apart from the inner workload's own stream
        picks = rng.choice(len(names), size=len(prompts), p=np.array([self.shares[k] for k in names]))
        return [p if names[i] == BASE else replace(p, model=names[i]) for p, i in zip(prompts, picks.tolist())]

    def describe(self) -> dict[str, Any]:
        return {"kind": "lora", "mix": self.shares, "seed": self.seed, "requests": self.inner.describe()}
