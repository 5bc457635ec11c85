"""Credentials an endpoint needs work, and none is printed or written (issue 18, defect 8).

An API key comes from an environment variable or a file, never from the command line, and
is sent as `Authorization: Bearer`; `user:pass@` in an endpoint URL becomes Basic auth for
the health check and every request; a request the server refuses is a failed record with
its (redacted) error; the key reaches no file of the run folder.
"""

from __future__ import annotations

import base64

import pytest
from click.testing import CliRunner

from bench.cli import cli
from bench.engines.base import EngineDied
from bench.engines.endpoint import Endpoint
from bench.errors import ConfigError
from bench.load.client import ClientConfig, StreamingClient
from bench.load.driver import run_point_sync
from bench.load.types import LoadJob
from bench.load.workload import RandomPrompts
from bench.plan import EngineConfig, Plan, PointSpec
from bench.run.environment import RunEnvironment
from bench.run.runner import execute
from bench.testing.fake_device import fake_device
from bench.testing.fake_server import FakeServer, FakeServerConfig

KEY = "sk-test-" + "Qx7" * 10
PASSWORD = "hunter2-Very-Secret"
BASIC = "Basic " + base64.b64encode(f"bench:{PASSWORD}".encode()).decode()


def _plan(cfg: EngineConfig, n: int = 4) -> Plan:
    point = PointSpec(point_id="p_c2", engine_config_id=cfg.config_id(),
                      workload={"kind": "random", "input_len": 8, "output_len": 6},
                      load={"kind": "concurrency", "concurrency": 2}, n_warmup=0, n_requests=n)
    return Plan(engine_configs=[cfg], points=[point], name="auth", telemetry="none")


def _env() -> RunEnvironment:
    return RunEnvironment(device=fake_device("cpu", name="cpu"))


def _files_text(run_dir) -> str:
    return "\n".join(p.read_bytes().decode("latin-1") for p in run_dir.rglob("*") if p.is_file())


def _server(authorization: str) -> FakeServer:
    return FakeServer(FakeServerConfig(ttft_s=0.005, itl_s=0.002, require_authorization=authorization))


def test_without_the_key_the_endpoint_is_refused_at_start_in_one_line(tmp_path, monkeypatch):
    """vLLM guards every /v1 route with --api-key, /v1/models included: the health check tells."""
    monkeypatch.delenv("BENCH_API_KEY", raising=False)
    with _server(f"Bearer {KEY}") as srv:
        cfg = EngineConfig(model="tiny-llama", engine="endpoint", endpoint_url=srv.base_url)
        with pytest.raises(EngineDied, match="status 401; it refused the credentials: give its API key"):
            execute(_plan(cfg), tmp_path, _env())


@pytest.mark.slow
@pytest.mark.parametrize("workers", [0, 2])
def test_without_the_key_every_request_is_a_failed_401_record(workers):
    """A server whose health route is open but whose completions are guarded: each request
    is a failed record with its error, none an exception."""
    with _server(f"Bearer {KEY}") as srv:
        pr = run_point_sync(LoadJob(srv.base_url, "fake-model", RandomPrompts(8, 4, 500, seed=1),
                                    {"kind": "concurrency", "concurrency": 2}, 0, 4, workers=workers))
    assert len(pr.records) == 4
    assert all((r.error or "").startswith("HTTP 401") for r in pr.records), [r.error for r in pr.records]


def test_the_key_from_an_environment_variable_is_sent_and_never_written(tmp_path, monkeypatch):
    monkeypatch.setenv("MY_ENDPOINT_KEY", KEY)
    with _server(f"Bearer {KEY}") as srv:
        cfg = EngineConfig(model="tiny-llama", engine="endpoint", endpoint_url=srv.base_url,
                           extra_args={"api_key_env": "MY_ENDPOINT_KEY"})
        result = execute(_plan(cfg), tmp_path, _env())
    point = result.points[0]
    assert point.status == "ok" and point.n_failed == 0, point.error
    assert KEY not in _files_text(tmp_path)
    assert result.config.engine_args["api_key_env"] == "MY_ENDPOINT_KEY"  # where the key is: kept


@pytest.mark.slow
def test_bench_api_key_is_read_by_default_and_a_key_file_works(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_API_KEY", KEY)
    with _server(f"Bearer {KEY}") as srv:
        cfg = EngineConfig(model="tiny-llama", engine="endpoint", endpoint_url=srv.base_url)
        assert execute(_plan(cfg), tmp_path / "env", _env()).points[0].n_failed == 0
        monkeypatch.delenv("BENCH_API_KEY")
        key_file = tmp_path / "key.txt"
        key_file.write_text(KEY + "\n")
        cfg = EngineConfig(model="tiny-llama", engine="endpoint", endpoint_url=srv.base_url,
                           extra_args={"api_key_file": str(key_file)})
        assert execute(_plan(cfg), tmp_path / "file", _env()).points[0].n_failed == 0
    assert KEY not in _files_text(tmp_path / "env") + _files_text(tmp_path / "file")


def test_user_and_password_in_the_url_become_basic_auth(tmp_path):
    with _server(BASIC) as srv:
        url = srv.base_url.replace("http://", f"http://bench:{PASSWORD}@")
        cfg = EngineConfig(model="tiny-llama", engine="endpoint", endpoint_url=url)
        result = execute(_plan(cfg), tmp_path, _env())
    assert result.points[0].status == "ok" and result.points[0].n_failed == 0, result.points[0].error
    assert PASSWORD not in _files_text(tmp_path)


def test_a_percent_encoded_password_is_decoded():
    ep = Endpoint("http://bench:p%40ss%3Aw0rd@127.0.0.1:8000/v1", "m", log_path="x.log")
    assert ep.base_url == "http://127.0.0.1:8000"
    assert ep.request_headers == {"Authorization": "Basic " + base64.b64encode(b"bench:p@ss:w0rd").decode()}


def test_an_endpoint_that_does_not_answer_never_prints_its_password(tmp_path):
    url = f"http://bench:{PASSWORD}@127.0.0.1:9"
    cfg = EngineConfig(model="tiny-llama", engine="endpoint", endpoint_url=url)
    with pytest.raises(Exception) as err:
        execute(_plan(cfg), tmp_path, _env())
    assert PASSWORD not in str(err.value) and "127.0.0.1:9" in str(err.value)
    assert PASSWORD not in _files_text(tmp_path)


def test_an_api_key_on_the_command_line_is_refused_with_how_to(tmp_path):
    res = CliRunner().invoke(cli, ["run", "--engine", "endpoint", "--url", "http://127.0.0.1:9",
                                   "--engine-arg", f"api_key={KEY}", "--out", str(tmp_path / "runs")])
    assert res.exit_code == 2, res.output
    line = res.output.strip().splitlines()[-1]
    assert line.startswith("bench: error:") and "api_key_env" in line and "api_key_file" in line
    assert KEY not in res.output
    assert not (tmp_path / "runs").exists()  # refused before any run folder


def test_an_api_key_in_a_sweep_config_is_refused_before_the_engine(tmp_path):
    cfg = EngineConfig(model="tiny-llama", engine="endpoint", endpoint_url="http://127.0.0.1:9",
                       extra_args={"api_key": KEY})
    with pytest.raises(ConfigError, match="api_key_env") as err:
        Endpoint.launch_args(cfg, "cpu")
    assert KEY not in str(err.value)


def test_a_missing_key_variable_or_file_is_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    with pytest.raises(ConfigError, match=r"\$NO_SUCH_KEY_VAR is not set"):
        Endpoint.auth_headers({"api_key_env": "NO_SUCH_KEY_VAR"}, "http://h:1")
    with pytest.raises(ConfigError, match="cannot read"):
        Endpoint.auth_headers({"api_key_file": str(tmp_path / "nope")}, "http://h:1")
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigError, match="empty"):
        Endpoint.auth_headers({"api_key_file": str(tmp_path / "empty")}, "http://h:1")
    monkeypatch.setenv("TWO_LINES", "abc\r\nX-Evil: 1")
    with pytest.raises(ConfigError, match="line break"):
        Endpoint.auth_headers({"api_key_env": "TWO_LINES"}, "http://h:1")
    monkeypatch.setenv("K", KEY)
    with pytest.raises(ConfigError, match="not both"):
        Endpoint.auth_headers({"api_key_env": "K"}, "http://u:p@h:1")


@pytest.mark.parametrize("workers", [0, 2])
def test_the_client_sends_the_header_from_every_worker(workers):
    wl = RandomPrompts(8, 4, 500, seed=1)
    cfg = ClientConfig(headers=(("Authorization", f"Bearer {KEY}"),))
    assert KEY not in repr(cfg) and KEY not in str(cfg.describe())
    with _server(f"Bearer {KEY}") as srv:
        pr = run_point_sync(LoadJob(srv.base_url, "fake-model", wl, {"kind": "concurrency", "concurrency": 2}, 0, 4,
                                    client=cfg, workers=workers))
    assert all(r.ok for r in pr.records), [r.error for r in pr.records]
    assert pr.client.options["auth"] == "Authorization"


@pytest.mark.slow
def test_a_refused_request_error_never_carries_the_key():
    """A server that echoes the credential it was given in its 401 body (OpenAI masks
    part of it; this fake echoes all of it)."""
    wrong = "sk-wrong-" + "Zz9" * 8
    with _server(f"Bearer {KEY}") as srv:
        pr = run_point_sync(LoadJob(srv.base_url, "fake-model", RandomPrompts(8, 4, 500, seed=1),
                                    {"kind": "concurrency", "concurrency": 1}, 0, 2,
                                    client=ClientConfig(headers=(("Authorization", f"Bearer {wrong}"),)), workers=0))
    assert all(r.error.startswith("HTTP 401") for r in pr.records)
    assert not any(wrong in r.error for r in pr.records), pr.records[0].error


def test_a_header_with_a_line_break_is_refused():
    with pytest.raises(ValueError, match="line break"):
        StreamingClient("http://127.0.0.1:9", "m", ClientConfig(headers=(("Authorization", "a\r\nX: y"),)))


@pytest.fixture(scope="module")
def vllm_with_key(tmp_path_factory):
    """A real vLLM server (CPU, tiny Llama, dummy weights) that requires KEY (VLLM_API_KEY:
    not on its command line)."""
    from bench.catalog import get_model
    from bench.catalog.prepare import prepare_model
    from bench.engines.vllm_server import VllmServer

    path = prepare_model(get_model("tiny-llama"), tmp_path_factory.mktemp("models"))
    server = VllmServer(str(path), "tiny-llama", tmp_path_factory.mktemp("vllm") / "engine.log",
                        engine_args={"load_format": "dummy", "dtype": "bfloat16", "max_model_len": 512,
                                     "enforce_eager": True},
                        device="cpu", startup_timeout_s=600, env={"VLLM_API_KEY": KEY})
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.vllm
def test_a_real_vllm_with_api_key(vllm_with_key, tmp_path, monkeypatch):
    """vLLM --api-key: without the key the start fails with the 401 and what to do; each
    request without it is a failed HTTP 401 record; with $BENCH_API_KEY the point is ok."""
    cfg = EngineConfig(model="tiny-llama", engine="endpoint", endpoint_url=vllm_with_key.base_url)
    monkeypatch.delenv("BENCH_API_KEY", raising=False)
    with pytest.raises(EngineDied, match="status 401; it refused the credentials"):
        execute(_plan(cfg), tmp_path / "nokey", _env())
    pr = run_point_sync(LoadJob(vllm_with_key.base_url, "tiny-llama", RandomPrompts(8, 4, 500, seed=1),
                                {"kind": "concurrency", "concurrency": 2}, 0, 2, workers=0))
    assert all((r.error or "").startswith("HTTP 401") for r in pr.records), [r.error for r in pr.records]
    monkeypatch.setenv("BENCH_API_KEY", KEY)
    result = execute(_plan(cfg), tmp_path / "key", _env())
    assert result.points[0].status == "ok" and result.points[0].n_failed == 0, result.points[0].error
    assert KEY not in _files_text(tmp_path / "key")
