"""Statuses and exit codes that tell the truth (issue 18, defect 9), and the CLI nits: a run
with no successful request is `failed` (exit 1), a full disk has its own code (5), `bench
report` on a full disk leaves no half report, SIGTERM is not called Ctrl-C, `--pack` on a CPU
host is refused before anything exists, `--concurrency 1,,4` is refused, `--engine endpoint`
without `--url` says so in one line. No vLLM: the endpoint engine against the fake server."""

from __future__ import annotations

import errno
import json
import os
import signal
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_runner_fast import FAST, endpoint, make_env, make_plan

from bench.cli import cli
from bench.testing.fake_server import FakeServer, FakeServerConfig

REPO = Path(__file__).resolve().parent.parent


def _bench(*args: str):
    return CliRunner().invoke(cli, list(args))


def _one_line_error(result, code: int, *, after_progress: bool = False) -> str:
    """The error line of a command that failed with `code`; alone in the output unless the
    command had begun a run (`after_progress`: its progress lines come first)."""
    assert result.exit_code == code, result.output
    lines = result.output.splitlines()
    assert len(lines) == 1 or after_progress, result.output
    assert lines[-1].startswith("bench: error: "), result.output
    return lines[-1].removeprefix("bench: error: ")


def _endpoint_run(url: str, out: Path, *more: str):
    return _bench("run", "--engine", "endpoint", "--url", url, "--concurrency", "1", "--requests", "4",
                  "--warmup", "0", "--telemetry", "none", "--out", str(out), *more)


def test_a_run_where_every_request_failed_is_failed_and_exits_1(tmp_path):
    with FakeServer(FakeServerConfig(fail_http_every=1)) as srv:
        result = _endpoint_run(srv.base_url, tmp_path)
    assert result.exit_code == 1, result.output  # was complete, exit 0
    (run_dir,) = tmp_path.iterdir()
    run = json.loads((run_dir / "run.json").read_text())
    assert run["status"] == "failed" and run["error"] == "no point was measured (0 ok, 1 failed, 0 skipped of 1 points)"
    (point,) = run["points"]
    assert point["status"] == "failed" and point["error"].startswith("no request succeeded (4 of 4 failed): HTTP 500")
    assert point["n_requests"] == point["n_failed"] == 4 and point["requests_file"]  # the requests are kept


def test_a_point_with_no_successful_request_makes_a_run_partial_not_complete():
    from types import SimpleNamespace as P

    from bench.run.status import exit_code, final_status, settle_point

    ok = P(status="ok", n_requests=10, n_failed=1)
    none_ok = P(status="ok", n_requests=10, n_failed=10, error="HTTP 500: x", valid=True, invalid_reasons=["e"])
    assert final_status([ok, none_ok]) == ("partial", "1 ok, 1 failed, 0 skipped of 2 points")
    assert final_status([none_ok]) == ("failed", "no point was measured (0 ok, 1 failed, 0 skipped of 1 points)")
    assert exit_code(final_status([ok, none_ok])[0]) == 4
    settle_point(none_ok)
    assert (none_ok.status, none_ok.valid, none_ok.error) == ("failed", False,
                                                              "no request succeeded (10 of 10 failed): HTTP 500: x")
    assert settle_point(ok).status == "ok"


def _disk_full_at_parquet(monkeypatch):
    import pandas as pd

    def disk_full(self, path, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", disk_full)


@pytest.mark.slow
def test_a_full_disk_during_a_run_exits_5_not_the_configuration_code(tmp_path, monkeypatch):
    _disk_full_at_parquet(monkeypatch)
    with FakeServer(FAST) as srv:
        result = _endpoint_run(srv.base_url, tmp_path)
    message = _one_line_error(result, 5, after_progress=True)  # was 2, the bad-configuration code
    assert message.startswith("cannot write ") and "No space left on device; points already written are kept" in message
    (run_dir,) = tmp_path.iterdir()
    run = json.loads((run_dir / "run.json").read_text())
    assert run["status"] == "failed" and "No space left on device" in run["error"]


def test_a_quota_is_a_full_disk_too_and_other_write_errors_are_not():
    from bench.errors import DiskFull, ResultError, write_error

    assert type(write_error(OSError(errno.EDQUOT, "Disk quota exceeded"), "m")) is DiskFull
    assert type(write_error(OSError(errno.EACCES, "Permission denied"), "m")) is ResultError
    assert DiskFull.exit_code == 5 and ResultError.exit_code == 2


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    from bench.run.runner import execute

    run_dir = tmp_path_factory.mktemp("run")
    with FakeServer(FAST) as srv:
        execute(make_plan([endpoint(srv.base_url)], telemetry="nvml"), run_dir, make_env())
    return run_dir


def _report_dir_disk_full(monkeypatch):
    """The report's HTML page (written last, after the CSV and the plots) hits a full disk."""
    from bench.analysis import pages

    def disk_full(path, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(pages, "run_page", disk_full)


@pytest.mark.slow
def test_bench_report_on_a_full_disk_is_one_line_and_leaves_no_partial_report(finished_run, monkeypatch):
    _report_dir_disk_full(monkeypatch)
    message = _one_line_error(_bench("report", str(finished_run)), 5)  # was an internal error, exit 1
    assert message == (f"cannot write the report {finished_run / 'report'}: No space left on device; nothing was "
                       "written (no report folder)")
    assert sorted(p.name for p in finished_run.iterdir() if p.name.startswith((".report", "report"))) == []


@pytest.mark.slow
def test_bench_report_replaces_a_report_only_once_the_new_one_is_whole(finished_run, monkeypatch):
    ok = _bench("report", str(finished_run))
    assert ok.exit_code == 0, ok.output
    report = finished_run / "report"
    assert f"report: {report / 'report.md'}; interactive: {report / 'report.html'}" in ok.output
    before = {p.name: p.read_bytes() for p in report.iterdir()}
    assert "report.html" in before
    _report_dir_disk_full(monkeypatch)
    _one_line_error(_bench("report", str(finished_run)), 5)
    assert {p.name: p.read_bytes() for p in report.iterdir()} == before  # the previous report, as it was
    monkeypatch.undo()
    assert _bench("report", str(finished_run)).exit_code == 0
    assert sorted(p.name for p in finished_run.iterdir() if p.name.startswith(".report")) == []


def test_sigterm_is_called_sigterm_not_ctrl_c(tmp_path):
    from bench.errors import BenchError
    from bench.run.events import PointStarting
    from bench.run.session import run_plan

    def term_at_point_start(event):  # SIGTERM to this process once a point is under way
        if isinstance(event, PointStarting):
            os.kill(os.getpid(), signal.SIGTERM)

    with FakeServer(FAST) as srv, pytest.raises(BenchError) as e:
        run_plan(make_plan([endpoint(srv.base_url)], n_points=2), tmp_path, make_env(), term_at_point_start)
    (run_dir,) = tmp_path.iterdir()
    assert str(e.value) == (f"terminated (SIGTERM); finished points are kept in {run_dir} "
                            f"(continue with --resume {run_dir})") and e.value.exit_code == 130
    run = json.loads((run_dir / "run.json").read_text())
    assert run["status"] == "interrupted" and run["error"] == "terminated (SIGTERM); finished points are kept"


def test_pack_on_a_cpu_host_is_refused_before_the_plan_is_printed_or_a_folder_made(tmp_path, monkeypatch):
    from bench.run import session
    from bench.run.environment import RunEnvironment
    from bench.testing.fake_device import fake_device

    monkeypatch.setattr(session, "prepare_run", lambda *a, **k: (RunEnvironment(device=fake_device("cpu")),
                                                                  "device: cpu"))
    out = tmp_path / "runs"
    result = _bench("sweep", str(REPO / "sweeps" / "cpu-tiny.yaml"), "--pack", "--out", str(out))
    assert _one_line_error(result, 2) == ("--pack needs GPUs: on a CPU host every configuration would share the "
                                          "same cores")
    assert not out.exists()  # was: the plan printed, then an empty run folder


@pytest.mark.parametrize("levels", ["1,,4", "1,4,", ",1"])
def test_an_empty_concurrency_level_is_refused(levels):
    result = _bench("plan", str(REPO / "sweeps" / "cpu-tiny.yaml"), "--hardware", "cpu-host", "--concurrency", levels)
    assert _one_line_error(result, 2) == f"bad --concurrency '{levels}' (an empty level; expected integers like 1,4,16)"


def test_engine_endpoint_without_url_says_what_is_missing(tmp_path):
    assert _one_line_error(_bench("run", "--engine", "endpoint", "--out", str(tmp_path)), 2) == \
        "--engine endpoint needs --url URL"  # was "options: ?: engine 'endpoint' needs endpoint_url"
    sweep = REPO / "sweeps" / "cpu-tiny.yaml"
    assert _one_line_error(_bench("plan", str(sweep), "--engine", "endpoint"), 2) == \
        f"{sweep}: engine 'endpoint' needs endpoint_url (--url URL)"
    assert not any(tmp_path.iterdir())
