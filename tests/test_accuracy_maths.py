"""The accuracy verdict's maths against scipy (docs/accuracy.md): Wilson bound, exact McNemar,
top-1 agreement and the coarsened KL."""

from __future__ import annotations

import math

import pytest
from scipy import stats

from bench.measure.accuracy import (
    Z_ONE_SIDED_95,
    agreement,
    binom_tail_ge,
    mcnemar_exact_p,
    paired_drop,
    wilson_lower,
)


def test_z_is_the_one_sided_95_quantile():
    assert Z_ONE_SIDED_95 == pytest.approx(stats.norm.ppf(0.95), abs=1e-12)


@pytest.mark.parametrize("k,n", [(0, 10), (1, 10), (38, 50), (50, 50), (1000, 1319), (3, 1319)])
def test_wilson_lower_matches_scipy(k, n):
    # scipy's two-sided 90% Wilson interval has the one-sided 95% lower end
    lo = stats.binomtest(k, n).proportion_ci(confidence_level=0.90, method="wilson").low
    assert wilson_lower(k, n) == pytest.approx(lo, abs=1e-9)


def test_wilson_lower_known_value_and_edges():
    # 0.78 on all 1,319 GSM8K questions (1029 right): the bound sits about 1.9 points lower
    assert wilson_lower(1029, 1319) == pytest.approx(0.7608, abs=1e-4)
    assert wilson_lower(0, 0) == 0.0
    with pytest.raises(ValueError):
        wilson_lower(11, 10)


@pytest.mark.parametrize("b,c", [(10, 2), (0, 0), (5, 5), (0, 7), (40, 25)])
def test_mcnemar_exact_matches_scipy_binomtest(b, c):
    expected = 1.0 if b + c == 0 else stats.binomtest(b, b + c, 0.5).pvalue
    assert mcnemar_exact_p(b, c) == pytest.approx(expected, rel=1e-9)
    if b + c:
        one = stats.binomtest(b, b + c, 0.5, alternative="greater").pvalue
        assert binom_tail_ge(b, b + c) == pytest.approx(one, rel=1e-9)


def test_mcnemar_known_value():
    assert mcnemar_exact_p(10, 2) == pytest.approx(0.03857421875)


def test_paired_drop_counts_discordant_pairs_and_tolerance():
    ref = [1] * 40 + [0] * 10
    cand = [1] * 28 + [0] * 12 + [0] * 8 + [1] * 2
    d = paired_drop(ref, cand)
    assert (d.n, d.b, d.c) == (50, 12, 2)
    assert d.drop == pytest.approx(0.2)
    assert d.significant_beyond(0.05)
    assert not d.significant_beyond(0.25)  # a drop within the tolerance passes
    same = paired_drop(ref, ref)
    assert same.drop == 0 and not same.significant_beyond(0.0)
    with pytest.raises(ValueError):
        paired_drop([1], [1, 0])


def _kl(p, q):
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q) if pi > 0)


def test_agreement_top1_and_kl_on_a_full_vocabulary():
    # top-k covers the whole vocabulary: the coarsened KL is the exact one
    p = [0.7, 0.2, 0.1]
    q = [0.5, 0.3, 0.2]
    ref = [{str(i): math.log(v) for i, v in enumerate(p)}] * 2
    cand = [{str(i): math.log(v) for i, v in enumerate(q)}, {str(i): math.log(v) for i, v in enumerate(reversed(q))}]
    a = agreement(ref, cand)
    assert a.n_positions == 2
    assert a.top1 == 0.5
    assert a.mean_kl_nats == pytest.approx((_kl(p, q) + _kl(p, list(reversed(q)))) / 2, rel=1e-9)
    assert stats.entropy(p, q) == pytest.approx(_kl(p, q))


def test_agreement_identical_is_zero_and_topk_kl_is_a_lower_bound():
    ref = [{"1": math.log(0.6), "2": math.log(0.3)}]  # 0.1 left in the rest bucket
    assert agreement(ref, ref).mean_kl_nats == pytest.approx(0.0, abs=1e-12)
    assert agreement(ref, ref).top1 == 1.0
    full_p, full_q = [0.6, 0.3, 0.05, 0.05], [0.3, 0.6, 0.08, 0.02]
    cand = [{"1": math.log(0.3), "2": math.log(0.6)}]
    got = agreement(ref, cand).mean_kl_nats
    assert 0 < got <= _kl(full_p, full_q) + 1e-12  # data-processing inequality
    assert agreement([{}], [{}]).n_positions == 0
