"""The interval maths of repeats (bench.measure.intervals) against known values."""

from __future__ import annotations

import math

import pytest

from bench.measure.intervals import (
    NOT_DISTINGUISHABLE,
    SINGLE_RUN,
    T95,
    blend,
    converged,
    ratio_interval,
    summarize,
    t95_table,
    t_quantile,
)


def test_student_t_interval_of_one_to_five():
    iv = summarize([1, 2, 3, 4, 5])
    assert iv.n == 5 and iv.mean == 3 and iv.df == 4
    assert iv.sd == pytest.approx(math.sqrt(2.5))
    assert iv.cv == pytest.approx(math.sqrt(2.5) / 3)
    # t(0.975, 4) = 2.776445 (any t table): half-width 2.776445 x 1.581139 / sqrt(5) = 1.963243
    assert (iv.lo, iv.hi) == (pytest.approx(1.036757, abs=1e-6), pytest.approx(4.963243, abs=1e-6))


def test_the_pinned_table_is_students_t_and_used_between_rows_conservatively():
    for df, t in T95.items():
        assert t_quantile(df) == pytest.approx(t, abs=6e-5)
    assert t95_table(35) == T95[30] > t_quantile(35)  # between rows: the smaller df, a wider interval
    assert t95_table(5000) == pytest.approx(1.96)
    assert t_quantile(2) == pytest.approx(4.302653, abs=1e-6)


def test_one_value_has_no_interval_and_missing_values_are_left_out():
    iv = summarize([7.0, None, math.nan])
    assert iv.n == 1 and iv.single and iv.lo is None and iv.sd is None
    assert iv.text() == f"7 ({SINGLE_RUN})"
    assert summarize([None]) is None


def test_a_ratio_of_two_series_whose_intervals_overlap_is_not_distinguishable():
    a = summarize([100.0, 104.0, 96.0])
    b = summarize([103.0, 99.0, 107.0])
    r = ratio_interval(b, a)
    assert r.value == pytest.approx(103 / 100)
    assert r.lo < 1 < r.hi and r.verdict == NOT_DISTINGUISHABLE
    # delta method on the log: se^2 = (4/sqrt3/100)^2 + (4/sqrt3/103)^2, Welch df = 3.99...
    se = math.sqrt((4 / math.sqrt(3) / 100) ** 2 + (4 / math.sqrt(3) / 103) ** 2)
    va, vb = (4 / math.sqrt(3) / 100) ** 2, (4 / math.sqrt(3) / 103) ** 2
    df = (va + vb) ** 2 / (va**2 / 2 + vb**2 / 2)
    assert r.hi == pytest.approx(1.03 * math.exp(t_quantile(df) * se))


def test_a_clear_difference_is_higher_or_lower_and_a_single_run_gets_no_interval():
    a = summarize([100.0, 101.0, 99.0])
    b = summarize([150.0, 151.0, 149.0])
    assert ratio_interval(b, a).verdict == "higher" and ratio_interval(a, b).verdict == "lower"
    single = ratio_interval(summarize([150.0]), a)
    assert single.verdict == SINGLE_RUN and single.lo is None and "single run" in single.text()
    assert ratio_interval(summarize([0.0, 0.0]), a) is None


def test_blend_of_two_points_weighs_their_errors():
    a, b = summarize([10.0, 12.0, 14.0]), summarize([20.0, 20.0, 20.0])
    assert blend(a, b, 0.0).mean == a.mean and blend(a, b, 0.0).sem == pytest.approx(a.sem)
    mid = blend(a, b, 0.5)
    assert mid.mean == 16 and mid.sem == pytest.approx(0.5 * a.sem)
    assert blend(a, summarize([20.0]), 0.5).single


def test_adaptive_repeats_stop_when_the_interval_is_narrow_enough():
    assert not converged([100.0], 0.05)
    assert converged([100.0, 101.0, 99.0], 0.05)  # half-width 2.48 <= 5
    assert not converged([100.0, 120.0, 80.0], 0.05)
