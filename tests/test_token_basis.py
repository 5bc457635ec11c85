"""Reports a person reads right (issue 20 item 5): one token basis per figure, named; the
terminal's energy per token on the same basis as its $/Mtok (output tokens); latencies in ms;
a $/Mtok chart in the run report."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.analysis.cellformat import fmt
from bench.analysis.report import run_report
from bench.cli.progress import summary_table
from bench.results import read_summary

RUN = Path(__file__).resolve().parent.parent / "results" / "cpu-host" / "20261201T185745Z_run-tiny-llama"


def test_the_terminal_table_names_its_token_basis_and_energy_is_per_output_token_like_cost():
    """Defect (base da21030): "J/tok" was per input + output token beside "$/Mtok out"."""
    run = read_summary(RUN)
    text = summary_table(run)
    header = text.splitlines()[0]
    assert "tok/s/GPU (in+out)" in header and "J/output tok" in header and "$/Mtok out" in header
    assert "J/tok " not in header
    p = run.points[0]
    row = next(ln for ln in text.splitlines() if ln.startswith(p.point_id + " "))
    assert fmt(p.energy.j_per_output_token) in row.split()


@pytest.mark.slow
def test_the_run_report_shows_ms_latencies_both_throughputs_and_a_cost_chart(tmp_path):
    """Defect (base da21030): the run report's table gave seconds and only all-token throughput
    while its chart showed output tokens, and it had no $/Mtok chart."""
    rep = run_report(RUN, tmp_path)
    md = rep.path.read_text()
    header = next(ln for ln in md.splitlines() if ln.startswith("| point_id | load"))
    for name in ("tok/s/GPU (in+out)", "output tok/s/GPU", "TTFT p50 (ms)", "TPOT p99 (ms)", "J/tok (in+out)",
                 "J/output tok"):
        assert f"| {name} |" in header, name
    p = read_summary(RUN).points[0]
    row = next(ln for ln in md.splitlines() if ln.startswith(f"| {p.point_id} |"))
    assert fmt(p.metrics.ttft_s_p50 * 1000) in row.split(" | ")
    assert "cost" in rep.figures and (tmp_path / "usd_per_mtok_rental-on-demand.png").is_file()
