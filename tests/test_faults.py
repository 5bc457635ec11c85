"""The load driver against a faulty server: every fault ends as a failed request with its
error, the limits are honoured, and nothing hangs (issue 11, defect 3)."""

from __future__ import annotations

import time

import pytest

from bench.load import loop
from bench.load.client import ClientConfig, default_request_timeout_s
from bench.load.driver import run_point_sync
from bench.load.types import LoadJob
from bench.load.workload import RandomPrompts
from bench.testing.fake_server import FakeServer, FakeServerConfig

CONC2 = {"kind": "concurrency", "concurrency": 2}


def _run(cfg: FakeServerConfig, n: int, out_len: int = 8, load: dict = CONC2, stalled=None, **client):
    """One point in this process's loop; `client`: ClientConfig fields (the timeouts)."""
    wl = RandomPrompts(12, out_len, 500, seed=1)
    t0 = time.monotonic()
    with FakeServer(cfg, mode="thread") as srv:
        pr = run_point_sync(LoadJob(srv.base_url, cfg.model, wl, load, 0, n, client=ClientConfig(**client),
                                    stalled=stalled))
    return pr, time.monotonic() - t0


@pytest.mark.slow
def test_a_server_that_never_answers_fails_each_request_at_the_stall_limit():
    pr, wall_s = _run(FakeServerConfig(hang_every=1), 3, stall_timeout_s=0.4, timeout_s=60)
    assert [r.error for r in pr.records] == ["timeout: stalled, no bytes for 0.4 s while waiting for a response"] * 3
    assert all(r.t_first is None and r.n_out == 0 for r in pr.records)
    assert wall_s < 10  # two waves of 0.4 s, not the request limit


@pytest.mark.slow
def test_a_stream_that_stops_half_way_fails_at_the_stall_limit_and_keeps_its_tokens():
    cfg = FakeServerConfig(ttft_s=0.01, itl_s=0.005, stall_every=2)
    pr, wall_s = _run(cfg, 4, out_len=10, stall_timeout_s=0.5, timeout_s=60,
                      load={"kind": "concurrency", "concurrency": 1})
    by_id = {r.request_id: r for r in pr.records}
    for i in (1, 3):  # the 2nd and 4th requests the server saw
        assert by_id[i].error == "timeout: stalled, no bytes for 0.5 s while waiting for the next bytes"
        assert by_id[i].n_out == 5 and by_id[i].t_first is not None
    assert by_id[0].ok and by_id[2].ok
    assert wall_s < 10


@pytest.mark.slow
def test_the_request_limit_ends_a_slow_but_live_stream():
    cfg = FakeServerConfig(ttft_s=0.01, itl_s=0.1)  # 40 tokens: 4 s, bytes every 0.1 s
    pr, wall_s = _run(cfg, 2, out_len=40, stall_timeout_s=5.0, timeout_s=0.6)
    assert [r.error for r in pr.records] == ["timeout: request took over 0.6 s"] * 2
    assert all(0 < r.n_out < 40 for r in pr.records)  # what arrived before the limit is kept
    assert wall_s < 4


@pytest.mark.slow
def test_slow_headers_under_the_stall_limit_are_fine_and_over_it_a_stall():
    ok, _ = _run(FakeServerConfig(headers_delay_s=0.2), 2, stall_timeout_s=2.0)
    assert all(r.ok for r in ok.records), [r.error for r in ok.records]
    slow, _ = _run(FakeServerConfig(headers_delay_s=1.0), 2, stall_timeout_s=0.3)
    assert all(r.error.startswith("timeout: stalled") for r in slow.records)


@pytest.mark.slow
def test_garbage_in_the_stream_is_a_failed_request_not_a_crash():
    pr, _ = _run(FakeServerConfig(garbage_every=2), 4, load={"kind": "concurrency", "concurrency": 1})
    errors = [r.error for r in pr.records]
    assert errors[0] is None and errors[2] is None
    assert errors[1].startswith("malformed stream event: {") and errors[3].startswith("malformed stream event")
    assert all("\n" not in e for e in errors if e)


@pytest.mark.slow
def test_a_body_that_is_not_sse_and_other_faults_at_once():
    cfg = FakeServerConfig(not_sse_every=5, fail_http_every=3, cut_stream_every=4, hang_every=7)
    pr, wall_s = _run(cfg, 16, load={"kind": "concurrency", "concurrency": 4}, stall_timeout_s=0.5)
    assert len(pr.records) == 16 and pr.max_in_flight == 4
    kinds = {"ok": 0, "HTTP 500": 0, "stream ended": 0, "connection closed": 0, "timeout": 0}
    for r in pr.records:
        key = "ok" if r.ok else next((k for k in kinds if r.error.startswith(k) or k in r.error), r.error)
        kinds[key] += 1
    # server requests: HTTP 500 3,6,9,12,15; hang 7,14; cut 4,8,16; HTML body (then no [DONE]) 5,10
    assert kinds == {"ok": 4, "HTTP 500": 5, "stream ended": 2, "connection closed": 3, "timeout": 2}
    assert wall_s < 15


@pytest.mark.slow
def test_stalled_requests_are_reported_while_the_point_runs(monkeypatch):
    monkeypatch.setattr(loop, "STALL_SHOW_S", 0.3)  # read by the in-process loop
    seen: list[int] = []
    pr, _ = _run(FakeServerConfig(hang_every=1), 2, stall_timeout_s=2.0, stalled=seen.append)
    assert all(r.error.startswith("timeout: stalled") for r in pr.records)
    assert seen[0] == 2 and seen[-1] == 0  # both shown stalled, then cleared when the point ends


def test_the_default_limits_come_from_the_expected_lengths():
    cfg = ClientConfig()
    assert cfg.stall_timeout_s == 300.0
    assert cfg.request_timeout_s(1000, 200) == pytest.approx(300 + 200 + 10) == default_request_timeout_s(1000, 200)
    assert ClientConfig(timeout_s=5).request_timeout_s(1000, 200) == 5
    assert ClientConfig().describe()["timeout_s"] == "from expected lengths"


def test_the_progress_line_shows_stalled_requests(capsys):
    from bench.cli.progress import Progress
    from bench.run.events import PointStarting, RequestsStalled

    bar = Progress(n_points=1, disable=True)  # no terminal: one line when requests start stalling
    bar.on_event(PointStarting("p", 4))
    for n in (2, 3, 0):
        bar.on_event(RequestsStalled(n))
    bar.close()
    err = capsys.readouterr().err
    assert err.count("stalled") == 1 and "2 request(s) stalled" in err


def test_sweep_files_take_both_limits():
    from bench.errors import ConfigError
    from bench.plan import sweep_from_dict

    base = {"models": ["tiny-llama"], "workloads": [{"input_len": 8, "output_len": 8}],
            "loads": [{"concurrency": 1}]}
    spec = sweep_from_dict(base)
    assert spec.request_timeout_s is None and spec.stall_timeout_s == 300.0
    spec = sweep_from_dict({**base, "request_timeout_s": 90, "stall_timeout_s": 20})
    assert (spec.request_timeout_s, spec.stall_timeout_s) == (90, 20)
    assert sweep_from_dict({**base, "stall_timeout_s": None}).stall_timeout_s is None  # off
    with pytest.raises(ConfigError, match="stall_timeout_s"):
        sweep_from_dict({**base, "stall_timeout_s": 0})


def test_bench_run_has_both_options():
    from click.testing import CliRunner

    from bench.cli import cli

    out = CliRunner().invoke(cli, ["run", "--help"]).output
    assert "--request-timeout" in out and "--stall-timeout" in out
