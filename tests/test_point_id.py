"""One point-id type (bench.plan.pointid.PointId, issue 19 item 3): the plan builds ids with it,
the plan's description and the capacity search read them with it."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench.errors import ConfigError
from bench.plan import ConcurrencyLoad, PointId, RateLoad
from bench.plan.pointid import load_tag

PART = st.text(alphabet="abcXYZ019.-", min_size=1, max_size=12)


@given(PART, PART, PART, st.integers(0, 99), st.integers(0, 5))
def test_an_id_reads_back_as_it_was_built(config, workload, load, repeat, retry):
    pid = PointId(config, workload, load, repeat, retry)
    assert PointId.parse(str(pid)) == pid


def test_the_written_form_is_the_one_on_disk():
    assert str(PointId("tiny-llama-1a2b3c4d", "in128-out64", "c4", 2)) == "tiny-llama-1a2b3c4d_in128-out64_c4_r2"
    assert str(PointId("m-1", "w", "capacity-rps2.5", 0, retry=1)) == "m-1_w_capacity-rps2.5_r0-retry1"


@pytest.mark.parametrize("text", ["", "a_b_c", "a_b_c_d", "a_b_c_r", "a__c_r0", "a_b_c_d_r0", "a_b_c_r0-retry0",
                                  "a_b_c_r0\n", "../x_b_c_r0", 7])
def test_any_other_text_is_a_one_line_config_error(text):
    with pytest.raises(ConfigError, match="bad point id") as e:
        PointId.parse(text)
    assert "\n" not in str(e.value)


def test_a_part_holding_the_separator_is_refused():
    with pytest.raises(ConfigError, match="bad point id workload"):
        PointId("m-1", "in_128", "c4")


def test_a_probe_keeps_config_and_workload_and_tags_its_load():
    base = PointId.parse("m-1_in8-out4_c2_r0")
    assert str(base.probe(ConcurrencyLoad(concurrency=8), 1)) == "m-1_in8-out4_capacity-c8_r1"
    assert str(base.probe(RateLoad(rate_rps=2.5), 0, retry=2)) == "m-1_in8-out4_capacity-rps2.5_r0-retry2"
    assert load_tag(RateLoad(rate_rps=4, arrival="gamma", burstiness=0.5, max_concurrency=16)) == "rps4-gamma0.5-mc16"


def test_every_planned_point_id_parses_to_its_config():
    from bench.plan import plan_from_options

    plan = plan_from_options(model="tiny-llama", concurrency=[1, 4], n_requests=4, repeats=2)
    assert plan.points
    for p in plan.points:
        pid = PointId.parse(p.point_id)
        assert (pid.config, pid.repeat) == (p.engine_config_id, p.repeat)
