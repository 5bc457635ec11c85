"""The cost formula on worked examples, the catalog scenarios, and `bench cost`."""


import pytest
from click.testing import CliRunner

from bench.catalog import get_hardware
from bench.catalog.hardware import Prices
from bench.cli import cli
from bench.errors import ConfigError
from bench.measure.cost import (
    cost_breakdown,
    cost_for_point,
    crf,
    make_scenario,
    scenario_from_options,
    scenarios_for,
)
from bench.measure.groups import CostFigures, Energy, Metrics
from bench.results import Harness, PointResult, RunResult, write_summary

METRICS = Metrics(output_tok_s=4000.0, input_tok_s=16000.0, total_tok_s=20000.0)


def test_rental_worked_example():
    s = make_scenario(kind="rental", rental_usd_per_gpu_hour=2.0)
    c = cost_for_point(Metrics(output_tok_s=1000.0, input_tok_s=500.0, total_tok_s=1500.0), None, s, n_gpus=1)
    # 1000 tok/s x 3600 s = 3.6 Mtok per GPU-hour; $2 / 3.6 Mtok
    assert c.usd_per_gpu_hour == 2.0
    assert c.usd_per_mtok_output == pytest.approx(2.0 / 3.6)
    assert c.usd_per_mtok_input == pytest.approx(2.0 / 1.8)
    assert c.usd_per_mtok_total == pytest.approx(2.0 / 5.4)
    assert c.usd_per_mtok_goodput is None
    assert c.inputs["rental_usd_per_gpu_hour"] == 2.0 and c.utilization == 1.0


def test_straight_line_ownership_worked_example():
    s = make_scenario(kind="ownership", gpu_price_usd=30000, server_factor=1.4, years=4, rate=0.0,
                      usd_per_kwh=0.08, pue=1.2, host_factor=1.5, om_usd_per_gpu_hour=0.05)
    energy = Energy(avg_power_w=1400.0, energy_method="nvml_counter", measured=True)
    c = cost_for_point(METRICS, energy, s, n_gpus=2)
    capex = 30000 * 1.4 / 4 / 8760  # 1.19863 $/GPU-h
    power = 0.700 * 1.5 * 1.2 * 0.08  # 700 W per GPU -> 0.1008 $/GPU-h
    assert c.capex_usd_per_gpu_hour == pytest.approx(capex)
    assert c.energy_usd_per_gpu_hour == pytest.approx(0.1008)
    assert c.usd_per_gpu_hour == pytest.approx(capex + power + 0.05)
    assert c.avg_power_w_per_gpu == 700.0
    # 2000 output tok/s per GPU = 7.2 Mtok per GPU-hour
    assert c.usd_per_mtok_output == pytest.approx((capex + power + 0.05) / 7.2)
    assert c.inputs["years"] == 4 and c.inputs["host_factor"] == 1.5


def test_power_is_divided_by_the_devices_the_energy_covers():
    """Issue 8 item 1: 1400 W read on 2 devices is 700 W per GPU even if the point claims 4 GPUs."""
    s = make_scenario(kind="ownership", gpu_price_usd=30000, server_factor=1.4, years=4, rate=0.0)
    energy = Energy(avg_power_w=1400.0, energy_method="nvml_counter", measured=True, n_devices=2)
    c = cost_for_point(METRICS, energy, s, n_gpus=4)
    assert isinstance(c, CostFigures)
    assert c.avg_power_w_per_gpu == 700.0 and c.n_devices_power == 2 and c.n_gpus == 4
    assert c.energy_usd_per_gpu_hour == pytest.approx(0.700 * 1.5 * 1.2 * 0.08)
    # 4000 output tok/s over the 4 GPUs the point used: 1000 per GPU
    assert c.usd_per_mtok_output == pytest.approx(c.usd_per_gpu_hour / 3.6)
    without = cost_for_point(METRICS, energy.model_copy(update={"n_devices": None}), s, n_gpus=4)
    assert without.avg_power_w_per_gpu == 350.0 and without.n_devices_power == 4


def test_crf_with_a_rate_matches_the_hand_computation():
    # 1.1^4 = 1.4641; 0.1 x 1.4641 / 0.4641 = 0.315470
    assert crf(0.10, 4) == pytest.approx(0.1 * 1.4641 / 0.4641)
    assert crf(0.0, 5) == pytest.approx(0.2)
    s = make_scenario(kind="ownership", gpu_price_usd=10000, server_factor=1.0, years=4, rate=0.10)
    parts = cost_breakdown(s, avg_power_w_per_gpu=0.0)
    assert parts["capex_usd_per_gpu_hour"] == pytest.approx(10000 * 0.315470 / 8760, rel=1e-5)
    assert parts["energy_usd_per_gpu_hour"] == 0.0


def test_utilization_half_doubles_the_price_per_token():
    full = make_scenario(kind="rental", rental_usd_per_gpu_hour=3.0)
    half = make_scenario(kind="rental", rental_usd_per_gpu_hour=3.0, utilization=0.5)
    m = METRICS.model_copy(update={"goodput_output_tok_s": 1000.0})
    a, b = cost_for_point(m, None, full, 1), cost_for_point(m, None, half, 1)
    assert b.usd_per_mtok_output == pytest.approx(2 * a.usd_per_mtok_output)
    assert b.usd_per_mtok_goodput == pytest.approx(3.0 / (1000 * 0.5 * 3600 / 1e6))
    assert b.utilization == 0.5


def test_ownership_without_power_has_no_total():
    s = make_scenario(kind="ownership", gpu_price_usd=30000)
    c = cost_for_point(METRICS, Energy(energy_method="none", avg_power_w=None), s, 1)
    assert c.usd_per_gpu_hour is None and c.usd_per_mtok_output is None and c.note


def test_scenarios_are_strict():
    with pytest.raises(ConfigError, match="rental_usd_per_gpu_hour"):
        make_scenario(kind="rental")
    with pytest.raises(ConfigError, match="cost scenario: watts"):
        make_scenario(kind="rental", rental_usd_per_gpu_hour=1.0, watts=3)
    with pytest.raises(ConfigError, match="utilization"):
        make_scenario(kind="rental", rental_usd_per_gpu_hour=1.0, utilization=0)


def test_scenarios_from_the_real_catalog():
    from bench.catalog import get_hardware

    named = scenarios_for(get_hardware("h100-sxm"))
    assert set(named) == {"rental-on-demand", "rental-3yr", "own-hyperscaler", "own-neocloud", "own"}
    assert named["own-neocloud"].kind == "rental"  # an all-in figure: nothing is added to it
    own = named["own"]
    assert own.gpu_price_usd == 30000 and own.server_factor == 1.4 and own.years == 4 and own.pue == 1.2
    assert "purchase_usd" in own.source
    cpu = scenarios_for(get_hardware("cpu-host"))  # the whole host is the one device: a VM's on-demand rate
    assert list(cpu) == ["rental-on-demand"] and cpu["rental-on-demand"].rental_usd_per_gpu_hour == 0.0864
    assert "m6a.large" in cpu["rental-on-demand"].source and "read 2026-12-01" in cpu["rental-on-demand"].source


def test_scenarios_from_catalog_prices_and_options():
    prices = Prices.model_validate({"rental_usd_per_gpu_hour": {"value": 2.5, "unit": "usd_per_gpu_hour", "source": "s"},
                                    "purchase_usd": {"value": 20000, "unit": "usd", "source": "p"}})
    hw = get_hardware("h100-sxm").model_copy(update={"id": "x", "prices": prices})
    named = scenarios_for(hw, utilization=0.7)
    assert named["rental-on-demand"].rental_usd_per_gpu_hour == 2.5 and named["own"].server_factor == 1.4
    assert named["own"].utilization == 0.7
    only = scenario_from_options(hw, "own", None)
    assert list(only) == ["own"]
    with pytest.raises(ConfigError, match="unknown cost scenario 'spot'"):
        scenario_from_options(hw, "spot")
    custom = scenario_from_options(None, None, 0.5, gpu_price_usd=1000.0, years=3.0, rate=None)
    assert custom["custom-own"].years == 3.0 and custom["custom-own"].rate == 0.10
    with pytest.raises(ConfigError, match="--gpu-price-usd"):
        scenario_from_options(None, None, None, pue=1.3)


def _write_run(tmp_path, hardware_id="h100-sxm"):
    point = PointResult(point_id="c8", load={"kind": "concurrency", "concurrency": 8},
                        metrics=METRICS.model_copy(update={"goodput_output_tok_s": 3000.0}),
                        energy={"avg_power_w": 1300.0, "energy_method": "nvml_counter", "measured": True})
    run = RunResult(run_id="r1", created_utc="2025-01-01T00:00:00Z", harness=Harness(version="0.1.0"),
                    config={"hardware_id": hardware_id, "n_gpus": 2}, points=[point])
    write_summary(tmp_path / "r1", run)
    return tmp_path / "r1"


def test_cli_recomputes_cost_without_rerunning(tmp_path):
    run_dir = _write_run(tmp_path)
    res = CliRunner().invoke(cli, ["cost", str(run_dir), "--rental-usd-h", "2", "--utilization", "0.5"])
    assert res.exit_code == 0, res.output
    header, _, row = res.output.splitlines()[:3]
    assert "$/Mtok out" in header and "util" in header
    # 2000 out tok/s per GPU at 50%: 3.6 Mtok/h -> $2 / 3.6
    assert f"{2 / 3.6:.4g}" in row and "0.5" in row and "custom-rental" in row
    res = CliRunner().invoke(cli, ["cost", str(run_dir), "--scenario", "own", "--json"])
    assert res.exit_code == 0, res.output
    assert '"gpu_price_usd": 30000.0' in res.output and '"avg_power_w_per_gpu": 650.0' in res.output
    res = CliRunner().invoke(cli, ["cost", str(run_dir), "--scenario", "spot"])
    assert res.exit_code == 2 and "bench: error: unknown cost scenario 'spot'" in res.output
