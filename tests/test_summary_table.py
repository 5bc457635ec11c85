"""The end-of-run table shows invalid points plainly, with their reasons, and names the
cost scenario and utilization beside $/Mtok."""

from __future__ import annotations

from pathlib import Path

from bench.analysis.cellformat import fmt
from bench.cli.progress import Progress, summary_table
from bench.measure.groups import CostFigures, Metrics
from bench.results import read_summary
from bench.run.events import PointDone

RESULTS = Path(__file__).resolve().parent.parent / "results" / "cpu-host"


def test_invalid_points_and_their_reasons_are_shown():
    run = read_summary(RESULTS / "20261124T002637Z_cpu-tiny")
    text = summary_table(run)
    lines = text.splitlines()
    assert sum(" INVALID " in ln for ln in lines) == sum(not p.valid for p in run.points) == 6
    for p in run.points:
        assert any(ln.startswith(p.point_id + ":") and p.invalid_reasons[0] in ln for ln in lines)
    assert "* energy estimated from nominal catalog power (not measured)" in lines


def test_cost_column_names_its_scenario_and_utilization():
    run = read_summary(RESULTS / "20261124T002601Z_run-tiny-llama")
    for p in run.points:
        p.cost = {"rental-3yr": CostFigures(usd_per_mtok_output=0.25, utilization=0.7)}
    text = summary_table(run)
    assert "$/Mtok under scenario 'rental-3yr' at utilization 0.7" in text.splitlines()
    assert text.count(" 0.25") == 3


def test_a_point_where_every_request_failed_shows_no_throughput(capsys):
    run = read_summary(RESULTS / "20261124T002601Z_run-tiny-llama")
    p = run.points[0]
    p.metrics = Metrics(n_measured=20, n_failed=20, error_rate=1.0)  # as summarize gives it: no rates
    p.energy, p.roofline = None, None
    row = next(ln for ln in summary_table(run).splitlines() if ln.startswith(p.point_id + " "))
    assert "None" not in row
    Progress(disable=True).on_event(PointDone(p))
    assert "no out tok/s" in capsys.readouterr().err


# ---- issue 12: a starved figure is never printed as if real ------------------------------

def _row(text: str, point_id: str) -> str:
    return next(ln for ln in text.splitlines() if ln.startswith(point_id + " "))


def _cells(text: str, point_id: str) -> dict[str, str]:
    """The table row of `point_id` as {header: cell} (cells hold no spaces in these tables)."""
    header = text.splitlines()[0].replace("out tok/s", "out_tok/s").replace(" p50 ms", "_p50_ms") \
        .replace(" p99 ms", "_p99_ms").replace("$/Mtok out", "$/Mtok_out").replace(" (in+out)", "_in+out") \
        .replace("J/output tok", "J/output_tok")
    row = _row(text, point_id).replace("conc ", "conc_")
    return dict(zip(header.split(), row.split()))


def _starved(point):
    """The point of the issue: tokens read in one burst by a starved client, so TPOT ~ 0."""
    flat = {**point.metrics.flat(), "tpot_s_p50": 1.456e-5, "interactivity_tok_s_user": 68689.5}
    point.metrics = Metrics.from_flat(flat)
    point.valid, point.invalid_reasons = False, ["client saturation: event-loop lag p99 94.8 ms > 10 ms"]
    return point


def test_an_invalid_points_latency_and_interactivity_are_marked_not_printed_as_measured():
    run = read_summary(RESULTS / "20261124T002601Z_run-tiny-llama")
    p = _starved(run.points[0])
    text = summary_table(run)
    cells = _cells(text, p.point_id)
    for key in ("tok/s/user", "ttft_p50_ms", "ttft_p99_ms", "tpot_p50_ms"):
        assert cells[key].startswith("[") and cells[key].endswith("]"), (key, cells[key])
    assert cells["tpot_p50_ms"] != "[0.0]"  # 14.6 us is not shown as a TPOT of 0
    assert "68689.5" not in text.replace("[68689.5]", "")
    assert any("of an invalid point: not a measurement of the server" in ln for ln in text.splitlines())
    valid = _cells(text, run.points[1].point_id)  # a valid point's figures stay plain
    assert valid["ttft_p50_ms"] == f"{1000 * run.points[1].metrics.ttft_s_p50:.1f}"


def test_a_tpot_of_zero_or_none_is_na_and_gives_no_interactivity_even_on_a_valid_point():
    run = read_summary(RESULTS / "20261124T002601Z_run-tiny-llama")
    zero, missing = run.points[0], run.points[1]
    zero.metrics = Metrics.from_flat({**zero.metrics.flat(), "tpot_s_p50": 0.0, "interactivity_tok_s_user": 68689.5})
    missing.metrics = Metrics.from_flat({**missing.metrics.flat(), "tpot_s_p50": None,
                                         "interactivity_tok_s_user": None})
    assert zero.valid and missing.valid
    text = summary_table(run)
    for p in (zero, missing):
        cells = _cells(text, p.point_id)
        assert cells["tpot_p50_ms"] == "n/a" and cells["tok/s/user"] == "n/a"
    assert "68689" not in text
    assert any(ln.startswith("n/a: no inter-token time was measured") for ln in text.splitlines())
    assert "n/a" not in _row(text, run.points[2].point_id)


def test_the_point_done_line_marks_an_invalid_points_ttft(capsys):
    run = read_summary(RESULTS / "20261124T002601Z_run-tiny-llama")
    p = _starved(run.points[0])
    ttft_ms = f"{1000 * p.metrics.ttft_s_p50:.1f}"
    Progress(disable=True).on_event(PointDone(p))
    line = capsys.readouterr().err.strip()
    assert f"ttft p50 [{ttft_ms}] ms (not a server measurement)" in line and "INVALID: client saturation" in line
    ok = run.points[1]
    Progress(disable=True).on_event(PointDone(ok))
    assert f"ttft p50 {1000 * ok.metrics.ttft_s_p50:.1f} ms" in capsys.readouterr().err
    ok.metrics = Metrics(n_measured=20, n_failed=20, error_rate=1.0)
    Progress(disable=True).on_event(PointDone(ok))
    assert "ttft p50 n/a" in capsys.readouterr().err  # not "0.0 ms"


# ---- issue 12: the default CPU run prints $/Mtok ----------------------------------------

def test_a_cpu_host_run_prints_dollars_per_mtok_and_labels_nominal_energy(tmp_path):
    """A run on the cpu-host entry (as `bench run` resolves it here) gets the catalog's rental
    price, so $/Mtok is in the table; nominal energy keeps its '*' label."""
    from bench.catalog import get_hardware
    from bench.plan import EngineConfig, Plan, PointSpec
    from bench.run.environment import RunEnvironment
    from bench.run.runner import execute
    from bench.telemetry import open_telemetry
    from bench.testing.fake_device import fake_device
    from bench.testing.fake_server import FakeServer, FakeServerConfig

    def nominal(requested, hardware=None, gpu_indices=None):  # what auto gives where RAPL is unreadable
        return open_telemetry("nominal", hardware=hardware, gpu_indices=gpu_indices)

    hw = get_hardware("cpu-host")
    env = RunEnvironment(device=fake_device("cpu", name="cpu"), hardware=hw,
                         telemetry_factory=nominal, idle_baseline_s=0.05)
    with FakeServer(FakeServerConfig(ttft_s=0.005, itl_s=0.002)) as srv:
        cfg = EngineConfig(model="tiny-llama", engine="endpoint", endpoint_url=srv.base_url)
        point = PointSpec(point_id=f"{cfg.config_id()}_w0_c2_r0", engine_config_id=cfg.config_id(),
                          workload={"kind": "random", "input_len": 8, "output_len": 8},
                          load={"kind": "concurrency", "concurrency": 2}, n_warmup=1, n_requests=6)
        result = execute(Plan(engine_configs=[cfg], points=[point], name="cpu", n_devices=1), tmp_path, env)
    (p,) = result.points
    assert p.status == "ok", p.error
    cost = p.cost["rental-on-demand"]
    assert cost.usd_per_gpu_hour == hw.prices.rental_usd_per_gpu_hour.value
    text = summary_table(result)
    cells = _cells(text, p.point_id)
    assert cells["$/Mtok_out"] == fmt(cost.usd_per_mtok_output)  # the one cell formatter, never 1e-05
    assert cells["energy"] == "nominal*"
    assert "$/Mtok under scenario 'rental-on-demand' at utilization 1" in text.splitlines()
    assert "* energy estimated from nominal catalog power (not measured)" in text.splitlines()
