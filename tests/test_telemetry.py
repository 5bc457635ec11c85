"""Telemetry session math and the NVML meter, driven through the fake pynvml."""

import dataclasses
import time

import pandas as pd
import pynvml
import pytest

from bench.errors import TelemetryError
from bench.telemetry import open_telemetry, per_token
from bench.telemetry.base import TelemetrySession
from bench.telemetry.energy import interp, trapezoid_j
from bench.telemetry.fake_nvml import FakeClock, FakeGpu, FakeNvml, NVMLError
from bench.telemetry.types import Reading, WindowEnergy


def _session(gpus, **kw):
    clock = FakeClock()
    nvml = FakeNvml(gpus, clock=clock)
    tel = open_telemetry("nvml", nvml=nvml, clock=clock, sleep=clock.sleep, **kw)
    return tel, nvml, clock


def _run(tel, clock, until_s, step_s=0.1, at=None):
    """Sample every step_s up to until_s; `at` maps a time to an action run just before."""
    at = dict(at or {})
    while clock() <= until_s + 1e-9:
        for t, action in list(at.items()):
            if clock() >= t - 1e-9:
                action()
                del at[t]
        tel.sample_once()
        clock.advance(step_s)


def test_counter_energy_matches_the_scripted_profile():
    tel, _, clock = _session([FakeGpu(profile=[(0.0, 100.0), (5.0, 300.0)])])
    _run(tel, clock, 10.0)
    e = tel.energy_between(2.0, 8.0)
    assert e.energy_method == "nvml_counter" and e.measured is True
    assert e.energy_j == pytest.approx(100 * 3 + 300 * 3, abs=0.01)
    assert e.avg_power_w == pytest.approx(200.0, abs=0.01)
    assert e.window_s == pytest.approx(6.0)
    assert e.sampled_energy_j == pytest.approx(1200.0, rel=0.02)
    assert e.energy_valid is True, e.energy_invalid_reasons
    assert e.energy_net_j is None and e.idle_power_w is None


def test_counter_is_interpolated_inside_sample_gaps():
    tel, _, clock = _session([FakeGpu(profile=[(0.0, 250.0)])])
    _run(tel, clock, 3.0, step_s=0.5)
    e = tel.energy_between(0.25, 2.05)  # both ends fall between samples
    assert e.energy_j == pytest.approx(250 * 1.8, abs=0.01)


def test_per_gpu_energy_is_kept_and_summed():
    tel, _, clock = _session([FakeGpu(profile=[(0.0, 100.0)]), FakeGpu(profile=[(0.0, 400.0)])])
    _run(tel, clock, 4.0)
    e = tel.energy_between(1.0, 3.0)
    assert list(e.per_gpu_energy_j) == [pytest.approx(200.0, abs=0.01), pytest.approx(800.0, abs=0.01)]
    assert e.energy_j == pytest.approx(1000.0, abs=0.02)
    assert e.n_devices == 2


def test_pre_volta_falls_back_to_sampled_power():
    tel, nvml, clock = _session([FakeGpu(arch=pynvml.NVML_DEVICE_ARCH_PASCAL, profile=[(0.0, 150.0), (2.0, 50.0)])])
    assert tel.method == "nvml_power_sampled"
    _run(tel, clock, 4.0)
    e = tel.energy_between(1.0, 3.0)
    assert e.energy_method == "nvml_power_sampled"
    assert e.energy_j == pytest.approx(150 + 50, rel=0.06)  # the trapezoid blurs the step
    assert e.energy_j == e.sampled_energy_j
    with pytest.raises(NVMLError) as err:
        nvml.nvmlDeviceGetTotalEnergyConsumption(nvml.nvmlDeviceGetHandleByIndex(0))
    assert err.value.value == pynvml.NVML_ERROR_NOT_SUPPORTED


def test_counter_reset_inside_the_window_marks_it_invalid_and_is_bridged():
    gpu = FakeGpu(profile=[(0.0, 200.0)], counter_offset_mj=5_000_000)
    tel, nvml, clock = _session([gpu])
    _run(tel, clock, 6.0, at={3.05: lambda: nvml.reset_counter(0)})
    e = tel.energy_between(1.0, 5.0)
    assert e.energy_valid is False
    assert any("backwards" in r for r in e.energy_invalid_reasons)
    assert e.energy_j == pytest.approx(800.0, rel=0.01)  # the gap is bridged by sampled power
    before = tel.energy_between(0.5, 2.5)
    assert before.energy_valid is True, before.energy_invalid_reasons


def test_averaged_power_disagrees_with_the_counter_on_a_short_step():
    # Ampere+ power readings are ~1 s averages: around a load step they lag the counter.
    tel, _, clock = _session([FakeGpu(profile=[(0.0, 100.0), (5.0, 700.0)], power_avg_s=1.0)])
    _run(tel, clock, 8.0)
    e = tel.energy_between(4.8, 5.6)
    assert e.energy_j == pytest.approx(100 * 0.2 + 700 * 0.6, abs=0.01)
    assert e.energy_valid is False
    assert any("differ" in r for r in e.energy_invalid_reasons)
    steady = tel.energy_between(6.5, 7.9)
    assert steady.energy_valid is True, steady.energy_invalid_reasons


def test_too_few_samples_and_uncovered_windows_are_invalid():
    tel, _, clock = _session([FakeGpu()])
    clock.advance(1.0)
    _run(tel, clock, 3.0, step_s=0.5)
    short = tel.energy_between(1.6, 1.9)
    assert any("too few samples" in r for r in short.energy_invalid_reasons)
    early = tel.energy_between(0.2, 2.0)  # sampling began at t=1
    assert any("do not cover" in r for r in early.energy_invalid_reasons)
    assert early.energy_j is None


def test_idle_baseline_gives_net_energy():
    tel, _, clock = _session([FakeGpu(profile=[(0.0, 80.0), (3.0, 380.0)])])
    idle = tel.idle_baseline(2.0)
    assert idle.idle_power_w == pytest.approx(80.0, abs=0.01)
    _run(tel, clock, 7.0)
    e = tel.energy_between(4.0, 6.0)
    assert e.idle_power_w == pytest.approx(80.0, abs=0.01)
    assert e.energy_net_j == pytest.approx(380 * 2 - 80 * 2, abs=0.05)
    tok = per_token(e, output_tokens=1000, total_tokens=4000)
    assert tok["j_per_output_token"] == pytest.approx(e.energy_j / 1000)
    assert tok["j_per_token_net"] == pytest.approx(e.energy_net_j / 4000)
    assert tok["output_tok_per_j"] == pytest.approx(1000 / e.energy_j)


def test_per_token_without_energy_or_tokens_is_none():
    none = WindowEnergy.of("none", False, 1.0, None, None, ["no energy meter"], 0)
    tok = per_token(none, output_tokens=10, total_tokens=0)
    assert set(tok.values()) == {None}


def test_read_errors_leave_gaps_that_invalidate_the_window():
    gpu = FakeGpu(profile=[(0.0, 100.0)])
    tel, _, clock = _session([gpu])
    lost = {"nvmlDeviceGetTotalEnergyConsumption": pynvml.NVML_ERROR_GPU_IS_LOST,
            "nvmlDeviceGetPowerUsage": pynvml.NVML_ERROR_GPU_IS_LOST}
    _run(tel, clock, 4.0, at={2.0: lambda: gpu.errors.update(lost)})
    assert tel.meter.read_errors > 0
    assert tel.energy_between(0.5, 1.5).energy_valid is True
    e = tel.energy_between(1.0, 3.0)
    assert e.energy_valid is False and e.energy_j is None


def test_a_window_asked_after_the_fact_is_a_frozen_measurement():
    tel, _, clock = _session([FakeGpu(profile=[(0.0, 120.0)])])
    _run(tel, clock, 4.0)
    e = tel.energy_between(1.0, 3.0)  # any past window: the load's window is known only once it ended
    assert isinstance(e, WindowEnergy) and e.window_s == pytest.approx(2.0)
    assert e.energy_j == pytest.approx(240.0, abs=0.01) and e.avg_power_w == pytest.approx(120.0, abs=0.01)
    with pytest.raises(dataclasses.FrozenInstanceError):
        e.energy_j = 0.0


def test_the_meter_declares_whether_its_counter_is_the_figure():
    """energy.py asks the meter (has_counter), it does not match method names: a meter that
    reads a counter it cannot trust (has_counter False) is measured by its polled power."""
    clock = FakeClock()

    class PowerOnly:  # a counter that counts nothing useful; the board power is 50 W
        method, measured, has_counter = "nvml_counter", True, False
        devices, counter_range_j, nominal_power_w, read_errors = ["gpu0"], [None], None, 0

        def read(self):
            return [Reading(energy_j=1e9 * clock(), power_w=50.0)]

        def close(self):
            pass

        def describe(self):
            return {}

    tel = TelemetrySession(PowerOnly(), interval_s=0.1, clock=clock, sleep=clock.sleep)
    _run(tel, clock, 3.0)
    e = tel.energy_between(1.0, 2.0)
    assert e.energy_j == pytest.approx(50.0, abs=0.01) and e.energy_valid, e.energy_invalid_reasons


def test_requested_nvml_that_cannot_start_fails_loudly():
    nvml = FakeNvml([FakeGpu()], init_error=pynvml.NVML_ERROR_DRIVER_NOT_LOADED)
    with pytest.raises(TelemetryError, match="nvml: cannot initialise NVML"):
        open_telemetry("nvml", nvml=nvml)
    with pytest.raises(TelemetryError, match="index 3 out of range"):
        open_telemetry("nvml", nvml=FakeNvml([FakeGpu()]), gpu_indices=[3])


def test_gpu_indices_select_devices_and_stop_shuts_nvml_down():
    clock = FakeClock()
    nvml = FakeNvml([FakeGpu(profile=[(0, 10.0)]), FakeGpu(profile=[(0, 20.0)])], clock=clock)
    tel = open_telemetry("nvml", nvml=nvml, gpu_indices=[1], clock=clock)
    assert tel.meter.devices == ["gpu1"]
    assert tel.describe()["meter"]["driver_version"] == "550.54.15"
    _run(tel, clock, 2.0)
    assert tel.energy_between(0.5, 1.5).energy_j == pytest.approx(20.0, abs=0.01)
    tel.stop()
    assert nvml.initialized == 0 and nvml.calls[-1] == "nvmlShutdown"


def _reads(nvml) -> int:
    return nvml.calls.count("nvmlDeviceGetPowerUsage")


def test_background_thread_samples_on_the_real_clock(tmp_path):
    nvml = FakeNvml([FakeGpu(profile=[(0.0, 300.0)])], clock=time.perf_counter)
    tel = open_telemetry("nvml", nvml=nvml, interval_s=0.01)
    tel.start()
    t0 = time.perf_counter()
    # the window ends once the background thread has read the meter 6 more times, however
    # long a loaded box makes that take (bounded): a fixed sleep could see fewer samples
    first, deadline = _reads(nvml), time.monotonic() + 10.0
    while _reads(nvml) < first + 6:
        assert time.monotonic() < deadline, f"the sampling thread read {_reads(nvml) - first} times in 10 s"
        time.sleep(0.01)  # the poll period of a bounded wait on the thread's reads
    t1 = time.perf_counter()
    e = tel.energy_between(t0, t1)
    tel.stop()
    assert e.energy_j == pytest.approx(300.0 * (t1 - t0), rel=0.01)
    assert e.n_samples >= 5
    frame = tel.power_series()
    assert list(frame.columns) == ["t_s", "device", "power_w", "energy_j"]
    assert (frame["power_w"] == 300.0).all() and frame["t_s"].is_monotonic_increasing
    frame.to_parquet(tmp_path / "power.parquet")
    assert len(pd.read_parquet(tmp_path / "power.parquet")) == len(frame)


def test_interp_and_trapezoid():
    assert interp([0.0, 1.0, 3.0], [0.0, 10.0, 30.0], 2.0) == pytest.approx(20.0)
    assert interp([0.0, 1.0], [0.0, 10.0], 1.5) is None
    assert trapezoid_j([0.0, 1.0, 2.0], [0.0, 100.0, 100.0], 0.5, 2.0) == pytest.approx(12.5 + 25.0 + 100.0)
    assert trapezoid_j([1.0, 2.0], [5.0, 5.0], 0.0, 2.0) is None


def test_fake_nvml_keeps_pynvml_semantics():
    nvml = FakeNvml([FakeGpu(name="NVIDIA L4", memory_total_bytes=24_000_000_000, memory_used_bytes=1_000)],
                    bytes_strings=True)
    with pytest.raises(pynvml.NVMLError_Uninitialized):
        nvml.nvmlDeviceGetCount()
    nvml.nvmlInit()
    handle = nvml.nvmlDeviceGetHandleByIndex(0)
    mem = nvml.nvmlDeviceGetMemoryInfo(handle)
    assert isinstance(mem, pynvml.c_nvmlMemory_t)
    assert (mem.total, mem.free, mem.used) == (24_000_000_000, 24_000_000_000 - 1_000, 1_000)
    assert nvml.nvmlDeviceGetName(handle) == b"NVIDIA L4" and nvml.nvmlSystemGetDriverVersion() == b"550.54.15"
    with pytest.raises(pynvml.NVMLError_InvalidArgument):
        nvml.nvmlDeviceGetHandleByIndex(1)
    nvml.nvmlShutdown()
    with pytest.raises(pynvml.NVMLError_Uninitialized):
        nvml.nvmlDeviceGetMemoryInfo(handle)
