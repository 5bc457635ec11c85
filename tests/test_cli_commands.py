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


@pytest.mark.slow
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
    from bench.catalog import device

    monkeypatch.setattr(device, "detect_device", _eight_h100)
    sweep = Path(__file__).resolve().parents[1] / "sweeps" / "cpu-tiny.yaml"
    res = _invoke("plan", sweep, "--hardware", "h100-sxm", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["n_devices"] == 8


# ---------------------------------------------------------------- arguments -> request, without a run

SWEEP = Path(__file__).resolve().parents[1] / "sweeps" / "cpu-tiny.yaml"


@pytest.fixture
def captured(monkeypatch, tmp_path):
    """`run_request` replaced by one that keeps the request and returns a run of `status`
    (default complete): the commands are tested from their arguments to their exit code."""
    from bench.results import RunResult
    from bench.run import session
    from bench.run.session import RunOutcome

    got = {"status": "complete"}

    def fake_run_request(request, on_event=None):
        got["request"] = request
        result = RunResult(run_id="r", status=got["status"], created_utc="2026-01-01T00:00:00Z", config={},
                           provenance={}, harness={"version": "test"}, points=[])
        return RunOutcome(tmp_path, result)

    monkeypatch.setattr(session, "run_request", fake_run_request)
    return got


def test_bench_run_builds_one_request_from_its_options(captured):
    res = _invoke("run", "--model", "tiny-qwen3-moe", "--concurrency", "2,8", "--input-len", "16", "--output-len", "8",
                  "--requests", "120", "--client-workers", "2", "--stall-timeout", "30", "--max-num-seqs", "4",
                  "--engine-arg", "enforce_eager", "--hardware", "cpu-host")
    assert res.exit_code == 0, res.output
    request = captured["request"]
    sweep = request.sweep
    assert sweep.models == ["tiny-qwen3-moe"] and sweep.name == "run-tiny-qwen3-moe"
    assert [lv.concurrency for lv in sweep.loads[0].expand()] == [2, 8]
    assert (sweep.workloads[0].input_len, sweep.workloads[0].output_len) == (16, 8)
    assert (sweep.n_requests, sweep.client_workers, sweep.stall_timeout_s) == (120, 2, 30.0)
    assert sweep.engine_args.max_num_seqs == [4] and sweep.engine_args.extra == [{"enforce_eager": True}]
    assert request.machine_hardware_id == "cpu-host" and not request.search and not request.pack


def test_bench_sweep_applies_its_overrides_to_the_file(captured):
    res = _invoke("sweep", SWEEP, "--model", "tiny-llama", "--concurrency", "3", "--set", "seed=7",
                  "--config", "some-id", "--pack", "--out", "elsewhere")
    assert res.exit_code == 0, res.output
    request = captured["request"]
    assert request.sweep.models == ["tiny-llama"] and request.sweep.seed == 7
    assert [lv.concurrency for lv in request.sweep.loads[0].expand()] == [3]
    assert request.config_id == "some-id" and request.pack and str(request.out_dir) == "elsewhere"


def test_bench_capacity_flags_override_the_files_capacity_block(captured):
    path = Path(__file__).resolve().parents[1] / "sweeps" / "cpu-capacity.yaml"
    res = _invoke("capacity", path, "--repeats", "2", "--max", "12")
    assert res.exit_code == 0, res.output
    request = captured["request"]
    assert request.search and request.sweep.capacity.repeats == 2 and request.sweep.capacity.max_level == 12
    assert request.sweep.capacity.slo == yaml.safe_load(path.read_text())["capacity"]["slo"]  # the file's, kept


@pytest.mark.parametrize("status,code", [("complete", 0), ("partial", 4), ("failed", 1)])
def test_a_commands_exit_code_is_its_runs_status(captured, status, code):
    captured["status"] = status
    assert _invoke("run").exit_code == code
    assert _invoke("sweep", SWEEP).exit_code == code


def _one_error_line(res, code: int, text: str) -> None:
    assert res.exit_code == code, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("bench: error: ") and text in lines[0], res.output


@pytest.mark.parametrize("args,text", [
    (["run", "--concurrency", "1,,4"], "bad --concurrency"),
    (["run", "--engine", "endpoint"], "needs --url"),
    (["run", "--engine-arg", "=3"], "bad --engine-arg"),
    (["sweep", "no-such-file.yaml"], "no-such-file.yaml"),
    (["sweep", str(SWEEP), "--set", "nonsense"], "bad --set"),
    (["sweep", str(SWEEP), "--set", "no_such_key=1"], "unknown override"),
    (["capacity", "--slo", "ttft=2s"], "ttft"),
    (["capacity", str(SWEEP)], "needs --slo"),
])
def test_a_bad_request_is_one_line_and_exit_code_2_before_anything_runs(captured, args, text):
    _one_error_line(_invoke(*args), 2, text)
    assert "request" not in captured  # refused while the request was built: nothing ran


def test_pack_on_a_cpu_host_is_refused_before_a_run_folder_exists(monkeypatch, tmp_path):
    from bench.catalog import device
    from bench.testing.fake_device import fake_device

    monkeypatch.setattr(device, "detect_device", lambda: fake_device("cpu"))
    out = tmp_path / "runs"
    _one_error_line(_invoke("sweep", SWEEP, "--pack", "--hardware", "cpu-host", "--out", out), 2, "--pack needs GPUs")
    assert not out.exists()


def test_capacity_defaults_are_defined_once_and_shown_in_help(captured):
    """The file's `capacity:` schema, the search and `bench capacity --help` agree on every
    default (base: the CLI merged file and flags over its own copy of them)."""
    from bench.plan import capacity as cap

    res = _invoke("capacity", "--slo", "ttft_p95=1s", "--engine", "endpoint", "--url", "http://127.0.0.1:9")
    assert res.exit_code == 0, res.output
    settings = captured["request"].sweep.capacity
    from_file = cap.CapacitySearch.from_settings(settings)
    bare = cap.CapacitySearch(cap.parse_slo("ttft_p95=1s"))
    for field in ("kind", "repeats", "start", "max_level", "tolerance", "max_steps"):
        assert getattr(from_file, field) == getattr(bare, field), field
    text = " ".join(_invoke("capacity", "--help").output.split())
    for shown in (f"[{cap.DEFAULT_LOAD}]", f"[{cap.DEFAULT_REPEATS}]", f"[{cap.DEFAULT_TOLERANCE:g}]",
                  f"[{cap.DEFAULT_MAX_STEPS}]", f"rate: {cap.MAX_LEVEL['rate']:g}"):
        assert shown in text, shown
