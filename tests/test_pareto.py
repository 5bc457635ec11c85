"""Pareto fronts, interpolation along them, and matching series at operating points."""

from __future__ import annotations

import math
import random
from itertools import pairwise

import pandas as pd
import pytest

from bench.analysis.pareto import (
    OUTSIDE,
    Operating,
    compare_table,
    interpolate,
    match_series,
    pareto_front,
)


def test_front_drops_dominated_points_and_sorts_by_x():
    xs = [10, 20, 15, 30, 20, 5]
    ys = [100, 80, 70, 40, 60, 90]
    # (15,70) is dominated by (20,80); (20,60) by (20,80); (5,90) by (10,100)
    assert pareto_front(xs, ys) == [0, 1, 3]


def test_front_ignores_nan_and_keeps_one_of_identical_points():
    xs = [1.0, 2.0, float("nan"), 2.0]
    ys = [5.0, 3.0, 9.0, 3.0]
    assert pareto_front(xs, ys) == [0, 1]
    assert pareto_front([], []) == []


def test_front_is_strictly_monotone_on_random_clouds():
    rng = random.Random(7)
    for _ in range(50):
        pts = [(rng.uniform(0, 100), rng.uniform(0, 100)) for _ in range(30)]
        front = pareto_front([p[0] for p in pts], [p[1] for p in pts])
        fx = [pts[i][0] for i in front]
        fy = [pts[i][1] for i in front]
        assert all(a < b for a, b in pairwise(fx))
        assert all(a > b for a, b in pairwise(fy))
        on_front = set(front)
        for i, (x, y) in enumerate(pts):  # every point off the front is dominated by one on it
            if i not in on_front:
                assert any(pts[j][0] >= x and pts[j][1] >= y for j in front)


def test_interpolation_is_piecewise_linear_and_never_extrapolates():
    xs, ys = [10.0, 20.0, 40.0], [100.0, 60.0, 20.0]
    assert interpolate(xs, ys, 10.0) == 100.0
    assert interpolate(xs, ys, 15.0) == pytest.approx(80.0)
    assert interpolate(xs, ys, 30.0) == pytest.approx(40.0)
    assert interpolate(xs, ys, 40.0) == 20.0
    assert interpolate(xs, ys, 9.99) is None
    assert interpolate(xs, ys, 40.01) is None
    assert interpolate([], [], 1.0) is None
    grid = [10 + 0.5 * k for k in range(61)]
    values = [interpolate(xs, ys, x) for x in grid]
    assert all(a >= b for a, b in pairwise(values))  # monotone along the front


def _series(points: list[tuple[float, float, float]], **key) -> pd.DataFrame:
    base = {"model": "m", "hardware": "h100-sxm", "precision": "bf16", "kv_cache_dtype": "auto",
            "engine": "vllm", "n_gpus": 1}
    base.update(key)
    return pd.DataFrame([{**base, "interactivity_tok_s_user": x, "tok_s_per_gpu": y, "ttft_s_p99": t,
                          "output_tok_s_per_gpu": y / 2, "j_per_token": 1000.0 / y, "j_per_output_token": 2000.0 / y,
                          "avg_power_w_per_gpu": 500.0, "tpot_s_p50": 1 / x, "usd_per_mtok_output__r": 1e6 / y}
                         for x, y, t in points])


def test_match_interpolates_on_the_front_only():
    rows = _series([(10, 1000, 3.0), (20, 800, 1.0), (15, 500, 0.5), (40, 200, 0.2)])
    status, values = match_series(rows, Operating(at_interactivity=30), ["tok_s_per_gpu", "j_per_token"])
    assert status == "interpolated"
    assert values["tok_s_per_gpu"] == pytest.approx(500.0)  # halfway between (20,800) and (40,200)
    assert values["j_per_token"] == pytest.approx((1000 / 800 + 1000 / 200) / 2)
    status, values = match_series(rows, Operating(at_interactivity=20), ["tok_s_per_gpu"])
    assert (status, values["tok_s_per_gpu"]) == ("measured", 800.0)
    status, values = match_series(rows, Operating(at_interactivity=45), ["tok_s_per_gpu"])
    assert status.startswith(OUTSIDE) and values == {}


def test_match_with_ttft_limit_and_peak():
    rows = _series([(10, 1000, 3.0), (20, 800, 1.0), (40, 200, 0.2)])
    status, values = match_series(rows, Operating(ttft_slo_s=1.5), ["tok_s_per_gpu"])
    assert (status, values["tok_s_per_gpu"], values["interactivity_tok_s_user"]) == ("measured", 800.0, 20.0)
    status, values = match_series(rows, Operating(), ["tok_s_per_gpu"])
    assert values["tok_s_per_gpu"] == 1000.0
    status, _ = match_series(rows, Operating(ttft_slo_s=0.1), ["tok_s_per_gpu"])
    assert status == "no point meets the TTFT limit"
    # the limit also restricts the front used for interpolation: (10, 1000) is gone
    status, _ = match_series(rows, Operating(at_interactivity=15, ttft_slo_s=1.5), ["tok_s_per_gpu"])
    assert status.startswith(OUTSIDE)


def test_compare_table_ratios_against_the_matching_baseline():
    table = pd.concat([
        _series([(10, 1000, 1), (30, 600, 1)]),
        _series([(10, 2000, 1), (30, 1200, 1)], precision="fp8"),
        _series([(10, 3000, 1), (30, 1800, 1)], hardware="b200"),
        _series([(50, 5000, 1), (90, 100, 1)], hardware="mi300x"),
        _series([(10, 1, 1), (30, 1, 1)], model="other"),
    ], ignore_index=True)
    out = compare_table(table, "m", Operating(at_interactivity=20), baseline="h100-sxm").set_index("series")
    assert list(out.index) == ["b200 bf16 vllm", "h100-sxm bf16 vllm", "h100-sxm fp8 vllm", "mi300x bf16 vllm"]
    assert out.loc["b200 bf16 vllm", "tok_s_per_gpu"] == pytest.approx(2400.0)
    assert out.loc["b200 bf16 vllm", "tok_s_per_gpu_vs_baseline"] == pytest.approx(3.0)
    assert out.loc["b200 bf16 vllm", "baseline_series"] == "h100-sxm bf16 vllm"
    assert out.loc["h100-sxm fp8 vllm", "baseline_series"] == "h100-sxm fp8 vllm"
    assert out.loc["b200 bf16 vllm", "usd_per_mtok_output__r_vs_baseline"] == pytest.approx(
        (1e6 / 3000 + 1e6 / 1800) / (1e6 / 1000 + 1e6 / 600))
    assert out.loc["mi300x bf16 vllm", "status"].startswith(OUTSIDE)
    assert math.isnan(out.loc["mi300x bf16 vllm", "tok_s_per_gpu_vs_baseline"])


def test_compare_table_without_baseline_data_has_no_ratios():
    table = _series([(10, 1000, 1), (30, 600, 1)], hardware="b200")
    out = compare_table(table, "m", Operating(), baseline="h100-sxm")
    assert out["baseline_series"].isna().all()
    assert out["tok_s_per_gpu_vs_baseline"].isna().all()
