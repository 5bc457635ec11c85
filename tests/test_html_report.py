"""The HTML pages of `bench compare` and `bench report` (without a browser: tests/test_browser.py
opens them), and how reports show figures that are not measurements."""

from __future__ import annotations

import re
from collections import Counter

import pandas as pd
import pytest
from click.testing import CliRunner
from result_factory import make_run

from bench.analysis.cells import TPOT_ZERO, cell_text
from bench.analysis.figures import INVALID_SYMBOL
from bench.cli import cli
from bench.results import read_summary, write_summary


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Three synthetic runs, shared by the module's tests: they read them, never write there."""
    root = tmp_path_factory.mktemp("html") / "results"
    make_run(root / "h100", hardware="h100-sxm", speed=1.0, invalid={16: "client saturation: 6.1 in flight of 16"})
    make_run(root / "h100", hardware="h100-sxm", speed=1.6, quantization="fp8")
    make_run(root / "b200", hardware="b200", speed=2.5)
    return root


def kinds(fig) -> Counter:
    return Counter(t.meta["kind"] for t in fig.data)


def assert_self_contained(text: str) -> None:
    assert text.count("* plotly.js v") == 1  # the library, embedded once
    assert not re.search(r"<script[^>]*\bsrc=", text) and "cdn.plot.ly" not in text.split("</head>")[1]
    assert "<link" not in text  # no stylesheet or font from elsewhere


@pytest.mark.slow
def test_compare_writes_one_self_contained_page(results, tmp_path):
    out = tmp_path / "cmp"
    res = CliRunner().invoke(cli, ["compare", str(results), "--model", "tiny-llama", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert f"interactive: {out / 'compare.html'}" in res.output
    text = (out / "compare.html").read_text()
    assert_self_contained(text)
    assert text.count('class="plotly-graph-div"') == 4  # throughput, energy, $/Mtok (a menu of scenarios), latency
    assert "[compare.html](compare.html)" in (out / "report.md").read_text()
    assert "1 invalid load point(s) left out of the matching" in (out / "report.md").read_text()
    assert len(re.findall(r'<tr class="invalid">', text)) == 1  # the invalid point, in the points table


@pytest.mark.slow
def test_compare_figures_series_fronts_and_invalid_markers(results, tmp_path):
    from bench.analysis.pareto import Operating
    from bench.analysis.report import compare_report
    from bench.store.costmodel import build_table, runs_from_dirs

    runs = runs_from_dirs([results])
    rep = compare_report(build_table(runs), runs, "tiny-llama", tmp_path / "c", Operating(), "h100-sxm")
    assert set(rep.figures) == {"throughput", "energy", "cost", "latency"}
    cost = rep.figures["cost"]
    scenarios = [t.meta["scenario"] for t in cost.data]
    assert len(set(scenarios)) == len(cost.layout.updatemenus[0].buttons) >= 2
    assert [t.visible for t in cost.data] == [s == scenarios[0] for s in scenarios]
    fig = rep.figures["throughput"]
    assert kinds(fig) == {"measured": 3, "front": 3, "invalid": 1}
    by_name = {t.name: t for t in fig.data}
    assert len(by_name["h100-sxm bf16 vllm"].x) == 4 and len(by_name["b200 bf16 vllm"].x) == 5
    bad = by_name["h100-sxm bf16 vllm (invalid)"]
    assert len(bad.x) == 1 and bad.marker.symbol == INVALID_SYMBOL
    assert "INVALID</b>: client saturation: 6.1 in flight of 16" in bad.hovertext[0]
    assert "run syn-tiny-llama-h100-sxm" in by_name["b200 bf16 vllm"].hovertext[0] or \
        "run syn-tiny-llama-b200" in by_name["b200 bf16 vllm"].hovertext[0]
    # the synthetic throughput rises with concurrency while per-user speed falls: all on the front
    assert len(by_name["b200 bf16 vllm front"].x) == 5
    # energy: lower is better, so the front keeps the points no other beats on both
    assert kinds(rep.figures["energy"])["front"] == 3
    latency = rep.figures["latency"]
    assert Counter(t.meta["metric"] for t in latency.data if t.meta["kind"] == "measured") == {
        "ttft_s_p50": 3, "ttft_s_p99": 3, "tpot_s_p50": 3, "tpot_s_p99": 3}
    assert sum(t.meta["kind"] == "invalid" for t in latency.data) == 4


@pytest.mark.slow
def test_reference_markers_and_table(results, tmp_path):
    # One render, its page and its figures: `bench compare --reference` itself is run by
    # test_published and test_browser.
    from bench.analysis.pareto import Operating
    from bench.analysis.report import compare_report
    from bench.store.costmodel import build_table, runs_from_dirs

    runs = runs_from_dirs([results])
    rep = compare_report(build_table(runs), runs, "tiny-llama", tmp_path / "r", Operating(), reference=True)
    text = (tmp_path / "r" / "compare.html").read_text()
    assert text.count('<tr class="published">') == 20 and "for scale only" in text
    published = [t for t in rep.figures["throughput"].data if t.meta["kind"] == "published"]
    assert sum(len(t.x) for t in published) == 6  # 4 Llama-8B H100 + 2 Llama-70B rows with tok/s and ITL
    assert all("source: published" in h for t in published for h in t.hovertext)
    assert all(t.marker.symbol == "star" for t in published)
    cost = [t for t in rep.figures["cost"].data if t.meta["kind"] == "published" and t.visible]
    assert [len(t.x) for t in cost] == [2]  # SemiAnalysis's two $/Mtok figures, beside each scenario


def _starve(run_dir, concurrency: int) -> None:
    """Make one point look as a starved client measured it: TPOT 0, no interactivity."""
    run = read_summary(run_dir)
    for p in run.points:
        if p.load.concurrency == concurrency:
            for key in ("tpot_s_p50", "tpot_s_p90", "tpot_s_p99"):
                setattr(p.metrics, key, 0.0)
            p.metrics.interactivity_tok_s_user = None
    write_summary(run_dir, run)


@pytest.mark.slow
def test_run_report_marks_invalid_latency_and_never_shows_a_zero_tpot(tmp_path):
    run = make_run(tmp_path / "runs", invalid={8: "client saturation: 6.1 in flight of 8"}, failed=(16,))
    _starve(run, 2)
    out = tmp_path / "rep"
    res = CliRunner().invoke(cli, ["report", str(run), "--out", str(out)])
    assert res.exit_code == 0, res.output
    md = (out / "report.md").read_text()
    c8 = next(line for line in md.splitlines() if line.startswith("| c0008"))
    assert c8.count("(invalid)") == 5  # interactivity and TTFT/TPOT p50/p99
    c2 = next(line for line in md.splitlines() if line.startswith("| c0002"))
    assert c2.count(TPOT_ZERO) == 3  # interactivity, TPOT p50 and p99: no number shown
    text = (out / "report.html").read_text()
    assert_self_contained(text)
    assert TPOT_ZERO in text and text.count('<tr class="invalid">') == 2  # c0008 and the failed c0016
    from bench.analysis.report import run_report

    rep = run_report(run, tmp_path / "again")
    assert set(rep.figures) == {"throughput", "energy", "latency", "cost", "power"}
    drawn = {(round(x, 6)) for t in rep.figures["throughput"].data if t.meta["kind"] != "front" for x in t.x}
    assert len(drawn) == 3  # c1, c4 valid, c8 invalid; c2 (TPOT 0) and the failed c16 are not drawn
    assert kinds(rep.figures["power"]) == {"power": 1}
    shapes = rep.figures["power"].layout.shapes
    assert len(shapes) == 4  # one shaded window per ok point


def test_cells():
    assert cell_text({"tpot_s_p50": 0.0, "interactivity_tok_s_user": None}, "interactivity_tok_s_user") == TPOT_ZERO
    assert cell_text({"tpot_s_p50": 0.0}, "tpot_s_p50") == TPOT_ZERO
    assert cell_text({"tpot_s_p50": float("inf")}, "interactivity_tok_s_user") == "-"
    assert cell_text({"tpot_s_p50": 1e-5, "interactivity_tok_s_user": 1e5, "valid": False},
                     "interactivity_tok_s_user") == "100000 (invalid)"
    assert cell_text({"ttft_s_p99": 0.5, "valid": True}, "ttft_s_p99") == "0.5"
    assert cell_text({"tok_s_per_gpu": 10.0, "valid": False}, "tok_s_per_gpu") == "10"  # not a latency
    assert cell_text({"tpot_s_p50": None, "valid": False}, "tpot_s_p50") == "-"
    assert pd.isna(pd.NA) and cell_text({"x": pd.NA}, "x") == "-"
