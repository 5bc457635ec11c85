"""The same energy boundary on every generation (issue 20 item 6): the NVML meter asks for the
GPU power scope first and falls back to the module scope (Grace: CPU + GPU) with a warning,
every window records the scope, and compare never puts a module-scope figure beside a
GPU-scope one without saying so. Against the fake NVML with both scopes."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.analysis.pareto import Operating
from bench.analysis.report import compare_report
from bench.store.costmodel import build_table, runs_from_dirs
from bench.telemetry import open_telemetry
from bench.telemetry.fake_nvml import FakeClock, FakeGpu, FakeNvml

HOST = Path(__file__).resolve().parent.parent / "results" / "cpu-host"
RUNS = [HOST / "20261124T002254Z_run-tiny-llama", HOST / "20261124T002410Z_run-tiny-llama"]


def _window(gpu: FakeGpu):
    clock = FakeClock()
    tel = open_telemetry("nvml", nvml=FakeNvml([gpu], clock=clock), clock=clock, sleep=clock.sleep)
    while clock() <= 4.0:
        tel.sample_once()
        clock.advance(0.1)
    return tel, tel.energy_between(1.0, 3.0)


def test_a_discrete_board_and_a_current_grace_driver_give_gpu_scope():
    for scopes in (("gpu",), ("gpu", "module")):
        tel, e = _window(FakeGpu(profile=[(0.0, 300.0)], power_scopes=scopes, module_extra_w=200.0))
        assert tel.meter.power_scope == "gpu" and tel.meter.warning is None
        assert e.power_scope == "gpu" and e.avg_power_w == pytest.approx(300.0, abs=0.5)


def test_a_grace_module_without_gpu_scope_falls_back_to_module_with_a_warning():
    tel, e = _window(FakeGpu(name="NVIDIA GH200 480GB", profile=[(0.0, 300.0)], power_scopes=("module",),
                             module_extra_w=200.0))
    assert tel.meter.power_scope == "module" and e.power_scope == "module"
    assert "whole module (CPU + GPU)" in tel.meter.warning and "\n" not in tel.meter.warning
    assert e.avg_power_w == pytest.approx(500.0, abs=0.5)  # what such a board reports: module power
    assert tel.meter.describe()["power_scope"] == "module"


def test_an_old_driver_without_the_field_api_records_no_scope():
    tel, e = _window(FakeGpu(power_scopes=()))
    assert tel.meter.power_scope is None and e.power_scope is None


@pytest.mark.slow
def test_compare_says_so_when_a_module_figure_stands_beside_a_gpu_one(tmp_path):
    runs = runs_from_dirs(RUNS)
    table = build_table(runs)
    table["power_scope"] = ["gpu" if p == "auto" else "module" for p in table["precision"]]
    rep = compare_report(table, runs, "tiny-llama", tmp_path, Operating(), baseline=None)
    assert dict(zip(rep.table["series"], rep.table["power_scope"])) == {
        "cpu-host auto vllm": "gpu", "cpu-host fp32 vllm": "module"}
    (warning,) = rep.warnings
    assert "cpu-host fp32 vllm measured module power" in warning and "not like for like" in warning
    assert warning in rep.path.read_text() and "module power" in rep.html.read_text()


@pytest.mark.slow
def test_compare_stays_quiet_when_every_series_has_the_same_boundary(tmp_path):
    runs = runs_from_dirs(RUNS)
    table = build_table(runs)
    table["power_scope"] = "gpu"
    assert compare_report(table, runs, "tiny-llama", tmp_path, Operating(), baseline=None).warnings == []
