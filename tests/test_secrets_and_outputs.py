"""Secrets are redacted when a run is written, not only when it is uploaded (issue 11,
defect 8); commands write where --out says, by default the store or the run folder,
never into the current folder unasked (defect 10)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from result_factory import make_run

from bench.cli import cli
from bench.errors import ConfigError, StoreError
from bench.plan import EngineConfig, Plan, PointSpec
from bench.run.environment import RunEnvironment
from bench.run.runner import execute
from bench.store import Store, prepare, upload
from bench.testing.fake_device import fake_device

API_KEY = "sk-live-0123456789abcdefABCDEF"
PASSWORD = "hunter2-very-secret"


def _plan(cfg: EngineConfig) -> Plan:
    point = PointSpec(point_id="p_c2", engine_config_id=cfg.config_id(),
                      workload={"kind": "random", "input_len": 8, "output_len": 6},
                      load={"kind": "concurrency", "concurrency": 2}, n_warmup=0, n_requests=4)
    return Plan(engine_configs=[cfg], points=[point], name="secrets", telemetry="none")


def _env() -> RunEnvironment:
    return RunEnvironment(device=fake_device("cpu", name="cpu"))


def test_an_api_key_engine_arg_is_refused_and_never_written(tmp_path):
    """A key given as a value is refused before anything runs (issue 18, defect 8: it was
    redacted on disk but never sent); the key is in no file and not in the message."""
    cfg = EngineConfig(model="tiny-llama", engine="endpoint", endpoint_url="http://127.0.0.1:9",
                       extra_args={"api_key": API_KEY})
    with pytest.raises(ConfigError, match="api_key_env") as err:
        execute(_plan(cfg), tmp_path, _env())
    assert API_KEY not in str(err.value)
    assert not any(API_KEY.encode() in p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())


def test_a_password_in_the_endpoint_url_never_reaches_run_json(tmp_path):
    url = f"http://bench:{PASSWORD}@127.0.0.1:9"  # nothing listens: the run fails, and is written
    cfg = EngineConfig(model="tiny-llama", engine="endpoint", endpoint_url=url)
    try:
        execute(_plan(cfg), tmp_path, _env())
    except Exception:  # noqa: BLE001, S110  the engine cannot start; what matters is the file
        pass
    text = (tmp_path / "run.json").read_text()
    assert PASSWORD not in text
    assert "http://<redacted>@127.0.0.1:9" in text


def test_a_store_url_password_is_never_echoed(monkeypatch):
    monkeypatch.setenv("BENCH_S3_ENDPOINT_URL", "http://127.0.0.1:9")
    with pytest.raises(StoreError) as err:
        Store(f"s3://AKIAEXAMPLE:{PASSWORD}@bucket/prefix").manifests()
    assert PASSWORD not in str(err.value) and "s3://<redacted>@bucket/prefix" in str(err.value)
    res = CliRunner().invoke(cli, ["ls", f"s3://AKIAEXAMPLE:{PASSWORD}@bucket/prefix"])
    assert res.exit_code != 0 and PASSWORD not in res.output


@pytest.mark.slow
def test_costmodel_build_writes_to_the_store_only_unless_out_is_given(tmp_path, monkeypatch):
    url = str(tmp_path / "store")
    upload([make_run(tmp_path / "runs", concurrencies=(1, 4))], url)
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(cli, ["costmodel", "build", "--store", url])
    assert res.exit_code == 0, res.output
    assert not (tmp_path / "costmodel").exists()
    assert (tmp_path / "store" / "costmodel" / "costmodel.parquet").is_file()
    res = CliRunner().invoke(cli, ["costmodel", "build", "--store", url, "--out", str(tmp_path / "mine")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "mine" / "costmodel.csv").is_file()


@pytest.mark.slow
def test_report_goes_into_the_run_folder_and_is_not_uploaded(tmp_path, monkeypatch):
    run = make_run(tmp_path / "runs", concurrencies=(1, 4))
    before = prepare(run).run_id
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(cli, ["report", str(run)])
    assert res.exit_code == 0, res.output
    assert (run / "report" / "report.md").is_file() and not (tmp_path / "reports").exists()
    assert prepare(run).run_id == before  # a derived report does not change the run's content


@pytest.mark.slow
def test_compare_goes_beside_the_results_it_compares(tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    make_run(runs, hardware="h100-sxm", concurrencies=(1, 4))
    make_run(runs, hardware="a100-sxm", speed=0.5, concurrencies=(1, 4))
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(cli, ["compare", str(runs), "--model", "tiny-llama"])
    assert res.exit_code == 0, res.output
    assert (runs / "compare-tiny-llama" / "report.md").is_file() and not (tmp_path / "reports").exists()
