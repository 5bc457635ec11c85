"""The probe, for real on CPU with small sizes; the NVML check against the fake."""

import json
import time
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from bench.cli import cli
from bench.errors import ConfigError
from bench.measure.roofline import point_roofline
from bench.telemetry.fake_nvml import FakeGpu, FakeNvml
from bench.telemetry.probe import (
    load_probe,
    measure_nvml_counter,
    run_probe,
    write_probe,
)


@pytest.fixture(scope="module")
def cpu_probe():
    return run_probe("cpu", min_time_s=0.02, bandwidth_bytes=8 << 20, max_n=256)


@pytest.mark.torch
def test_cpu_probe_measures_and_records_provenance(cpu_probe):
    p = cpu_probe
    assert p["probe_version"] == 1 and p["device"] == "cpu" and p["device_name"]
    assert p["torch_version"] and p["date_utc"].endswith("Z")
    assert 1e-4 < p["bandwidth_tbs"] < 10  # 0.1 GB/s .. 10 TB/s: a real, finite copy rate
    assert p["bandwidth"]["size_bytes"] == 8 << 20
    for dtype in ("bf16", "fp16"):
        assert p["tflops"][dtype] > 0 and p["matmul"][dtype]["n"] <= 256
    assert p["tflops"]["fp8"] is None and p["matmul"]["fp8"]["supported"] is False
    assert p["elapsed_s"] < 30


@pytest.mark.torch
def test_probe_file_round_trip_feeds_the_roofline(cpu_probe, tmp_path):
    path = write_probe(cpu_probe, tmp_path / "probe.json")
    loaded = load_probe(path)
    assert loaded.bandwidth_tbs == cpu_probe["bandwidth_tbs"]
    model = SimpleNamespace(decode_weight_bytes=lambda b, p: 1e6, kv_bytes_per_token=lambda e, c=None: 0.0,
                            flops_per_token=lambda c: 1e6)
    hw = SimpleNamespace(bandwidth_tbs=5.0, tflops={"bf16": 1000.0})
    r = point_roofline(model, hw, 1, 16, 2, 2, 1, 10.0, probe=loaded)
    assert r.bandwidth_source == "probe" and r.bandwidth_tbs == loaded.bandwidth_tbs
    assert r.flops_source == "probe"


def test_load_probe_refuses_other_files(tmp_path):
    (tmp_path / "x.json").write_text(json.dumps({"probe_version": 99}))
    with pytest.raises(ConfigError, match="not a bench probe file"):
        load_probe(tmp_path / "x.json")
    with pytest.raises(ConfigError, match="cannot read probe file"):
        load_probe(tmp_path / "missing.json")


@pytest.mark.parametrize("content, why", [
    ({"probe_version": "1", "bandwidth_tbs": 1.0, "tflops": {}}, "not a bench probe file"),
    ({"probe_version": 1, "bandwidth_tbs": "fast", "tflops": {}}, "not a bench probe file"),
    ({"probe_version": 1, "bandwidth_tbs": 1.0, "tflops": [1.0]}, "not a bench probe file"),
    ({"probe_version": 1, "bandwidth_tbs": 1.0, "tflops": {"bf16": True}}, "not a bench probe file"),
    ({"probe_version": 1, "bandwidth_tbs": 0.0, "tflops": {}}, "lacks a positive bandwidth_tbs"),
    ({"probe_version": 1, "bandwidth_tbs": 1.0}, "lacks a positive"),
    ({"probe_version": 1, "bandwidth_tbs": 1.0, "tflops": {"bf16": -2.0}}, "lacks a positive"),
    ([1, 2], "not a bench probe file"),
])
def test_a_probe_file_is_read_typed_or_refused_in_one_line(tmp_path, content, why):
    (tmp_path / "p.json").write_text(json.dumps(content))
    with pytest.raises(ConfigError, match=why) as info:
        load_probe(tmp_path / "p.json")
    assert "\n" not in str(info.value)
    (tmp_path / "ok.json").write_text(json.dumps({"probe_version": 1, "bandwidth_tbs": 2, "tflops": {"bf16": 3,
                                                                                                     "fp8": None}}))
    ok = load_probe(tmp_path / "ok.json")
    assert (ok.bandwidth_tbs, ok.tflops) == (2.0, {"bf16": 3.0, "fp8": None})


@pytest.mark.slow
def test_nvml_counter_check_against_the_fake():
    nvml = FakeNvml([FakeGpu(profile=[(0.0, 200.0)], counter_period_s=0.05)], clock=time.perf_counter)
    r = measure_nvml_counter(nvml=nvml, load=time.sleep, poll_s=0.4, load_s=0.6)
    assert r["energy_method"] == "nvml_counter"
    assert r["update_period_s"] == pytest.approx(0.05, abs=0.01)
    assert r["avg_power_w"] == pytest.approx(200.0, rel=0.25)
    assert r["counter_vs_sampled"] is not None and abs(r["counter_vs_sampled"]) < 0.25
    assert nvml.initialized == 0


@pytest.mark.torch
def test_probe_command_writes_the_file(tmp_path):
    out = tmp_path / "p.json"
    res = CliRunner().invoke(cli, ["probe", "--device", "cpu", "--out", str(out), "--min-time-s", "0.02",
                                   "--max-n", "256", "--bandwidth-mb", "8"])
    assert res.exit_code == 0, res.output
    assert "bandwidth_tbs" in res.output and "tflops.bf16" in res.output
    assert json.loads(out.read_text())["device"] == "cpu" and load_probe(out).bandwidth_tbs > 0
