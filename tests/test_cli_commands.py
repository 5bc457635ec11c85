"""`bench run`, `bench sweep`, `bench capacity` and `bench plan` through click's CliRunner:
arguments -> one validated request, a domain error -> its exit code and one line. Nothing here
starts an engine: the `endpoint` engine drives the fake OpenAI server (bench.testing)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from bench.catalog.device import Detected
from bench.cli import cli
from bench.testing.fake_server import FakeServer, FakeServerConfig

FAST = FakeServerConfig(ttft_s=0.002, itl_s=0.001)


def _invoke(*args: str):
    return CliRunner().invoke(cli, [str(a) for a in args])


def _run_json(out: Path) -> dict:
    (path,) = out.rglob("run.json")
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def server():
    with FakeServer(FAST) as srv:
        yield srv


def _capacity_file(tmp_path: Path, url: str) -> Path:
    path = tmp_path / "cap.yaml"
    path.write_text(yaml.safe_dump({
        "name": "cap", "models": ["tiny-llama"], "engine": "endpoint", "endpoint_url": url,
        "workloads": [{"kind": "random", "input_len": 8, "output_len": 4}],
        "loads": [{"kind": "concurrency", "concurrency": [1]}], "telemetry": "none",
        "capacity": {"slo": "ttft_p95=10s", "load": "concurrency", "repeats": 1, "start": 1, "max_level": 1},
    }))
    return path


def test_capacity_with_a_sweep_file_applies_the_engine_options_as_overrides(server, tmp_path):
    """Defect (base 848b156): with a sweep file, `bench capacity` read only --hardware, --probe
    and --out; --max-num-seqs, --engine-arg, --telemetry were dropped without a word."""
    out = tmp_path / "runs"
    res = _invoke("capacity", _capacity_file(tmp_path, server.base_url), "--hardware", "cpu-host",
                  "--max-num-seqs", "7", "--engine-arg", "tag=x", "--out", out)
    assert res.exit_code == 0, res.output
    config = _run_json(out)["config"]
    (cfg,) = config["engine_configs"].values()
    assert cfg["max_num_seqs"] == 7 and cfg["extra_args"] == {"tag": "x"}


def _eight_h100() -> Detected:
    return Detected("h100-sxm", "NVIDIA H100 80GB HBM3", "nvidia", 8, "550.54", 85.0)


def test_plan_with_hardware_plans_for_the_devices_sweep_would_use(monkeypatch):
    """Defect (base 848b156): `bench plan FILE --hardware ID` planned for 1 device while
    `bench sweep FILE --hardware ID` on the same box plans for every detected one, so the
    preview skipped TP=8 configurations the sweep then ran."""
    import bench.catalog.device as device

    monkeypatch.setattr(device, "detect_device", _eight_h100)
    sweep = Path(__file__).resolve().parents[1] / "sweeps" / "cpu-tiny.yaml"
    res = _invoke("plan", sweep, "--hardware", "h100-sxm", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["n_devices"] == 8
