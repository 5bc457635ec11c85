"""Arrival processes: mean rate and dispersion, seeding, and the typed load parser (one definition,
shared with the plan)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench.errors import ConfigError
from bench.load.arrivals import arrival_gaps_s, arrival_offsets_s
from bench.plan.points import ConcurrencyLoad, OfflineLoad, RateLoad, parse_load


@pytest.mark.parametrize("arrival,burstiness", [("poisson", 1.0), ("gamma", 0.25), ("gamma", 1.0), ("gamma", 4.0)])
def test_mean_rate_and_coefficient_of_variation(arrival, burstiness):
    gaps = arrival_gaps_s(100_000, rate_rps=20.0, arrival=arrival, burstiness=burstiness, seed=11)[1:]
    assert gaps.mean() == pytest.approx(1 / 20.0, rel=0.02)
    cv = gaps.std() / gaps.mean()
    assert cv == pytest.approx(1 / math.sqrt(burstiness), rel=0.03)


def test_seeded_and_offsets():
    a = arrival_offsets_s(50, 5.0, seed=3)
    assert np.array_equal(a, arrival_offsets_s(50, 5.0, seed=3))
    assert not np.array_equal(a, arrival_offsets_s(50, 5.0, seed=4))
    assert a[0] == 0.0 and np.all(np.diff(a) >= 0)
    assert np.array_equal(arrival_offsets_s(4, math.inf), np.zeros(4))
    assert len(arrival_gaps_s(0, 1.0)) == 0


def test_parse_load():
    assert parse_load({"kind": "concurrency", "concurrency": 4}) == ConcurrencyLoad(concurrency=4)
    assert parse_load({"kind": "rate", "rate_rps": 2}) == RateLoad(rate_rps=2.0)
    assert parse_load({"kind": "rate", "rate_rps": 2, "arrival": "gamma", "burstiness": 0.5,
                       "max_concurrency": 8}) == RateLoad(rate_rps=2.0, arrival="gamma", burstiness=0.5, max_concurrency=8)
    assert parse_load({"kind": "offline", "batch": 3}) == OfflineLoad(batch=3)
    typed = ConcurrencyLoad(concurrency=2)
    assert parse_load(typed) is typed
    bad = [
        ({"kind": "batch"}, "bad load"),
        ({"kind": "concurrency", "concurrency": 0}, "bad load concurrency: Input should be greater than or equal to 1"),
        ({"kind": "concurrency", "concurrency": True}, "bad load concurrency: Input should be a valid integer"),
        ({"kind": "concurrency", "concurrency": 2, "rate_rps": 1}, "rate_rps: Extra inputs"),
        ({"kind": "rate", "rate_rps": 0}, "rate_rps: Input should be greater than 0"),
        ({"kind": "rate", "rate_rps": 1, "arrival": "uniform"}, "arrival"),
        ({"kind": "rate", "rate_rps": 1, "arrival": "poisson", "burstiness": 2}, "poisson arrivals"),
        ({"kind": "rate", "rate_rps": 1, "max_concurrency": 0}, "max_concurrency"),
        ("c8", "bad load"),
    ]
    for load, msg in bad:
        with pytest.raises(ConfigError, match=msg):
            parse_load(load)


def test_point_load_dumps_the_dicts_results_were_built_from():
    # run.json and point ids were made from these dicts before the loads were typed
    assert ConcurrencyLoad(concurrency=4).model_dump(mode="json") == {"kind": "concurrency", "concurrency": 4}
    assert RateLoad(rate_rps=2).model_dump(mode="json") == {
        "kind": "rate", "rate_rps": 2.0, "arrival": "poisson", "burstiness": 1.0}
    capped = RateLoad(rate_rps=math.inf, arrival="gamma", burstiness=0.5, max_concurrency=8)
    assert capped.model_dump(mode="json")["max_concurrency"] == 8
    assert OfflineLoad(batch=2).model_dump(mode="json") == {"kind": "offline", "batch": 2}


def test_the_arrival_names_are_one_list_that_the_sweep_the_load_and_the_generator_accept():
    """Issue 19: the names lived in plan/points.py, plan/sweepfile.py and load/arrivals.py."""
    from typing import get_args

    from bench.load.arrivals import ARRIVALS, arrival_gaps_s
    from bench.plan import RateLevels, RateLoad

    for model in (RateLoad, RateLevels):
        assert get_args(model.model_fields["arrival"].annotation) == ARRIVALS == ("poisson", "gamma")
    for name in ARRIVALS:
        assert len(arrival_gaps_s(3, 2.0, name, 1.0, seed=1)) == 3
