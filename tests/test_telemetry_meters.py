"""RAPL (temp sysfs tree), amdsmi (fake module), nominal, and the auto order."""

from types import SimpleNamespace

import pynvml
import pytest

from bench.errors import ConfigError, TelemetryError
from bench.telemetry import open_telemetry
from bench.telemetry.amdsmi import energy_j, power_w
from bench.telemetry.fake_nvml import FakeClock, FakeGpu, FakeNvml


def _zone(root, name, energy_uj, range_uj=None, label=None):
    zone = root / name
    zone.mkdir(parents=True)
    (zone / "energy_uj").write_text(f"{energy_uj}\n")
    if range_uj is not None:
        (zone / "max_energy_range_uj").write_text(f"{range_uj}\n")
    if label:
        (zone / "name").write_text(label + "\n")
    return zone


def test_rapl_reads_packages_only_and_corrects_wraps(tmp_path):
    range_uj = 262_143_328_850
    pkg = _zone(tmp_path, "intel-rapl:0", range_uj - 3_000_000, range_uj, "package-0")
    _zone(tmp_path, "intel-rapl:0:0", 1, range_uj, "core")  # a subzone: already inside package-0
    clock = FakeClock()
    tel = open_telemetry("rapl", rapl_root=str(tmp_path), clock=clock)
    assert tel.meter.devices == ["package-0"] and tel.method == "rapl"
    value = range_uj - 3_000_000
    for _ in range(10):  # 20 W for 0.1 s = 2 J = 2e6 uJ per step, wrapping after step 2
        tel.sample_once()
        clock.advance(0.1)
        value = (value + 2_000_000) % range_uj
        (pkg / "energy_uj").write_text(f"{value}\n")
    e = tel.energy_between(0.0, 0.9)
    assert e.energy_j == pytest.approx(18.0)
    assert e.energy_valid is True, e.energy_invalid_reasons
    frame = tel.power_series()
    assert frame["power_w"].dropna().round(6).eq(20.0).all()


def test_rapl_missing_is_a_one_line_error(tmp_path):
    with pytest.raises(TelemetryError, match="rapl: .* does not exist"):
        open_telemetry("rapl", rapl_root=str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(TelemetryError, match="no intel-rapl package zones"):
        open_telemetry("rapl", rapl_root=str(tmp_path / "empty"))


def test_this_host_has_no_readable_rapl():
    # Recorded for the report: the CI machine has no powercap tree; if one appears, it must open.
    try:
        tel = open_telemetry("rapl")
    except TelemetryError as e:
        assert str(e).startswith("rapl: ")
    else:
        assert tel.method == "rapl" and tel.meter.devices


def _fake_amdsmi(clock, watts=500.0, accumulator_key="energy_accumulator"):
    """Accumulator in ticks of 15.259 uJ advancing at `watts` on the injected clock."""

    def energy_count(handle):
        return {accumulator_key: int(watts * clock() * 1e6 / 15.259), "counter_resolution": 15.259, "timestamp": 0}

    return SimpleNamespace(
        amdsmi_init=lambda: None,
        amdsmi_shut_down=lambda: None,
        amdsmi_get_processor_handles=lambda: ["h0"],
        amdsmi_get_energy_count=energy_count,
        amdsmi_get_power_info=lambda h: {"socket_power": "N/A", "current_socket_power": watts, "average_socket_power": "N/A"},
    )


def test_amdsmi_conversions():
    assert energy_j({"energy_accumulator": 1_000_000, "counter_resolution": 15.259}) == pytest.approx(15.259)
    assert energy_j({"power": 2_000_000, "counter_resolution": 15.259}) == pytest.approx(30.518)  # older key
    assert power_w({"socket_power": "N/A", "current_socket_power": 612}) == 612.0
    assert power_w({"average_socket_power": "N/A"}) is None


def test_amdsmi_meter_uses_the_accumulator():
    clock = FakeClock()
    tel = open_telemetry("amdsmi", amdsmi=_fake_amdsmi(clock), clock=clock)
    assert tel.method == "amdsmi_counter"
    for _ in range(40):
        tel.sample_once()
        clock.advance(0.1)
    e = tel.energy_between(1.0, 3.0)
    assert e.energy_j == pytest.approx(1000.0, abs=0.01)
    assert e.sampled_energy_j == pytest.approx(1000.0)
    assert e.energy_valid is True, e.energy_invalid_reasons


def test_nominal_is_board_power_times_time_and_not_measured():
    hw = SimpleNamespace(id="h100-sxm", power_w=700.0)
    tel = open_telemetry("nominal", hardware=hw, gpu_indices=[0, 1])
    e = tel.energy_between(10.0, 12.5)
    assert e.energy_method == "nominal" and e.measured is False
    assert e.energy_j == pytest.approx(700 * 2 * 2.5)
    assert e.avg_power_w == pytest.approx(1400.0)
    assert list(e.per_gpu_energy_j) == [pytest.approx(1750.0)] * 2
    with pytest.raises(TelemetryError, match="no board power"):
        open_telemetry("nominal", hardware=SimpleNamespace(id="x", power_w=None))


def test_auto_prefers_nvml_then_degrades_with_notes(tmp_path):
    hw = SimpleNamespace(id="h100-sxm", power_w=700.0)
    good = open_telemetry("auto", hardware=hw, nvml=FakeNvml([FakeGpu()]), rapl_root=str(tmp_path))
    assert good.method == "nvml_counter" and good.notes == []
    broken = FakeNvml([FakeGpu()], init_error=pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)
    no_amd = SimpleNamespace(amdsmi_init=lambda: (_ for _ in ()).throw(RuntimeError("no driver")))
    tel = open_telemetry("auto", hardware=hw, gpu_indices=[0], nvml=broken, amdsmi=no_amd)
    assert tel.method == "nominal"
    assert [n.split(":")[0] for n in tel.notes] == ["nvml", "amdsmi", "rapl"]
    assert "RAPL measures the CPU package" in tel.notes[2]
    nothing = open_telemetry("auto", hardware=None, nvml=broken, amdsmi=no_amd, rapl_root=str(tmp_path / "x"))
    assert nothing.method == "none"
    e = nothing.energy_between(0.0, 1.0)
    assert e.energy_j is None and e.measured is False and e.energy_valid is False


def test_none_and_unknown_names():
    assert open_telemetry("none").method == "none"
    with pytest.raises(ConfigError, match="unknown energy meter 'joulemeter'"):
        open_telemetry("joulemeter")


def _fake_amdsmi_host(clock, watts):
    """Several AMD boards: board i draws watts[i] W (accumulator in 15.259 uJ ticks)."""
    handles = [f"h{i}" for i in range(len(watts))]

    def energy_count(handle):
        w = watts[handles.index(handle)]
        return {"energy_accumulator": int(w * clock() * 1e6 / 15.259), "counter_resolution": 15.259}

    return SimpleNamespace(
        amdsmi_init=lambda: None, amdsmi_shut_down=lambda: None,
        amdsmi_get_processor_handles=lambda: list(handles), amdsmi_get_energy_count=energy_count,
        amdsmi_get_power_info=lambda h: {"current_socket_power": watts[handles.index(h)]},
    )


def test_every_meter_measures_exactly_the_given_devices_and_records_them():
    """Issue 8: energy covers the engine's devices, never every visible one (nvml, amdsmi, nominal)."""
    from bench.telemetry.fake_nvml import FakeGpu, FakeNvml

    watts = [100.0, 200.0, 300.0, 400.0]
    clock = FakeClock()
    nvml = FakeNvml([FakeGpu(profile=[(0, w)]) for w in watts], clock=clock)
    sessions = {
        "nvml": open_telemetry("nvml", nvml=nvml, gpu_indices=[1, 3], clock=clock),
        "amdsmi": open_telemetry("amdsmi", amdsmi=_fake_amdsmi_host(clock, watts), gpu_indices=[1, 3], clock=clock),
    }
    for _ in range(40):
        for tel in sessions.values():
            tel.sample_once()
        clock.advance(0.1)
    for name, tel in sessions.items():
        e = tel.energy_between(1.0, 3.0)
        assert e.devices == (1, 3) and e.n_devices == 2, name
        assert e.energy_j == pytest.approx((200.0 + 400.0) * 2.0, rel=1e-3), name
    hw = SimpleNamespace(id="h100-sxm", power_w=700.0)
    e = open_telemetry("nominal", hardware=hw, gpu_indices=[5]).energy_between(0.0, 2.0)
    assert e.devices == (5,) and e.n_devices == 1 and e.energy_j == pytest.approx(1400.0)
