"""The end-of-run table shows invalid points plainly, with their reasons, and names the
cost scenario and utilization beside $/Mtok."""

from __future__ import annotations

from pathlib import Path

from bench.cli.progress import Progress, summary_table
from bench.measure.groups import CostFigures, Metrics
from bench.results import read_summary

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
    Progress(disable=True).on_event("point_done", {"point_id": p.point_id, "point": p})
    assert "no out tok/s" in capsys.readouterr().err
