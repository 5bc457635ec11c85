"""Accuracy verdict maths, pure (docs/accuracy.md): the Wilson bound of a task score, the exact
McNemar test of a paired drop against a reference precision, and the agreement of two
configurations' top-k log-probabilities (top-1 agreement, mean KL divergence in nats).

    wilson_lower(correct=38, n=50)                 # one-sided 95% lower bound of the share correct
    paired_drop(ref=[1, 0, 1], cand=[1, 0, 0])     # PairedDrop(b, c, drop, p_one_sided)
    agreement([{"5": -0.1, "7": -2.3}], [{"5": -0.2, "7": -1.9}])   # Agreement(n_positions, top1, mean_kl_nats)

No scipy: the exact binomial tail is a sum of `math.comb` terms, and z is pinned (the tests
compare both with scipy).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

# One-sided 95%: the standard normal quantile 0.95 (scipy.stats.norm.ppf(0.95)).
Z_ONE_SIDED_95 = 1.6448536269514722
# A drop counts only when this unlikely under "no difference" (one-sided exact McNemar).
MCNEMAR_ALPHA = 0.05
# Floor of a probability inside a logarithm (a token the candidate gave no mass at all).
_EPS = 1e-12


def wilson_lower(correct: int, n: int, z: float = Z_ONE_SIDED_95) -> float:
    """The Wilson score interval's lower bound of the share `correct / n` (0..1); z = 1.645 is
    one-sided 95% (the two-sided 90% interval's lower end). n = 0 gives 0."""
    if n <= 0:
        return 0.0
    if not 0 <= correct <= n:
        raise ValueError(f"correct must lie in 0..n, got {correct} of {n}")
    p = correct / n
    z2 = z * z
    centre = p + z2 / (2 * n)
    margin = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return max(0.0, (centre - margin) / (1 + z2 / n))


def binom_tail_ge(k: int, n: int) -> float:
    """P(X >= k) for X ~ Binomial(n, 1/2), exact."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    ways: int = sum(math.comb(n, i) for i in range(k, n + 1))
    return ways / (1 << n)


def mcnemar_exact_p(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value of b discordant pairs one way and c the other
    (the binomial test of min(b, c) in b + c at 1/2; 1.0 when b + c = 0)."""
    n = b + c
    if n == 0:
        return 1.0
    return min(1.0, 2 * binom_tail_ge(max(b, c), n))


@dataclass(frozen=True)
class PairedDrop:
    """A candidate scored against the reference on the same questions.

    b: right under the reference, wrong under the candidate; c: the other way round;
    drop: (b - c) / n, the candidate's loss in share correct; p_one_sided: exact McNemar,
    P(at least b of the b + c discordant pairs go against the candidate | no difference)."""

    n: int
    b: int
    c: int
    drop: float
    p_one_sided: float

    def significant_beyond(self, tolerance: float, alpha: float = MCNEMAR_ALPHA) -> bool:
        """True when the drop is larger than `tolerance` (a share, 0..1) and significant at `alpha`."""
        return self.drop > tolerance and self.p_one_sided < alpha


def paired_drop(ref: Sequence[bool | int | float], cand: Sequence[bool | int | float]) -> PairedDrop:
    """Compare per-question correctness (truthy = right) of the reference and the candidate,
    question by question; both lists in the same question order."""
    if len(ref) != len(cand):
        raise ValueError(f"paired test needs the same questions: {len(ref)} reference, {len(cand)} candidate")
    b = sum(1 for r, x in zip(ref, cand) if r and not x)
    c = sum(1 for r, x in zip(ref, cand) if x and not r)
    n = len(ref)
    return PairedDrop(n=n, b=b, c=c, drop=(b - c) / n if n else 0.0, p_one_sided=binom_tail_ge(b, b + c))


@dataclass(frozen=True)
class Agreement:
    """Two configurations' next-token distributions at the same positions.

    top1: share of positions whose most likely token is the same (0..1); mean_kl_nats: mean
    KL(reference || candidate) over the reference's top-k tokens plus one bucket for the rest
    of the vocabulary (a coarsened KL: a lower bound of the full one)."""

    n_positions: int
    top1: float
    mean_kl_nats: float


def _kl_topk(ref: Mapping[str, float], cand: Mapping[str, float]) -> float:
    """KL(P || Q) in nats over P's top-k tokens plus a rest bucket. A token absent from the
    candidate's top-k gets the candidate's smallest returned log-probability: its true
    probability is at most that, so the term is an under-estimate, never an invention."""
    floor = min(cand.values()) if cand else math.log(_EPS)
    p = {t: math.exp(lp) for t, lp in ref.items()}
    q = {t: math.exp(cand.get(t, floor)) for t in ref}
    p_rest = max(0.0, 1.0 - sum(p.values()))
    q_rest = max(_EPS, 1.0 - sum(q.values()))
    kl = sum(pi * (math.log(max(pi, _EPS)) - math.log(max(q[t], _EPS))) for t, pi in p.items() if pi > 0)
    if p_rest > 0:
        kl += p_rest * (math.log(p_rest) - math.log(q_rest))
    return max(0.0, kl)


def _top1(dist: Mapping[str, float]) -> str:
    return max(dist.items(), key=lambda kv: (kv[1], kv[0]))[0]


def agreement(ref: Sequence[Mapping[str, float]], cand: Sequence[Mapping[str, float]]) -> Agreement:
    """Top-1 agreement and mean KL over aligned positions: `ref[i]` and `cand[i]` map token ids
    to natural-log probabilities at the same position of the same text. Empty positions skipped."""
    if len(ref) != len(cand):
        raise ValueError(f"agreement needs aligned positions: {len(ref)} reference, {len(cand)} candidate")
    pairs = [(r, c) for r, c in zip(ref, cand) if r and c]
    if not pairs:
        return Agreement(n_positions=0, top1=0.0, mean_kl_nats=0.0)
    same = sum(1 for r, c in pairs if _top1(r) == _top1(c))
    kl = sum(_kl_topk(r, c) for r, c in pairs)
    return Agreement(n_positions=len(pairs), top1=same / len(pairs), mean_kl_nats=kl / len(pairs))
