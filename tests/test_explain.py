"""`bench compare` with repeats and `--explain`, on committed results (results/cpu-host):
ratios carry 95% intervals and verdicts, single runs are labelled, the cost-law factors
multiply exactly to the measured $/Mtok ratio, and a baseline is one of the series or none."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from bench.analysis.explain import explain, explain_columns
from bench.analysis.pareto import Operating
from bench.analysis.significance import compare_with_intervals
from bench.cli import cli
from bench.store.costmodel import build_table, runs_from_dirs

HOST = Path(__file__).resolve().parent.parent / "results" / "cpu-host"
BF16, FP32 = HOST / "20261124T002254Z_run-tiny-llama", HOST / "20261124T002410Z_run-tiny-llama"
LAUNCHED = sorted(HOST.glob("20261201T1*_run-tiny-llama"))[:5]  # five runs of the default, launched engine
ENDPOINT = sorted(HOST.glob("20261201T1*_run-tiny-llama"))[5:]  # three in endpoint mode
SCENARIO = "rental-on-demand"


PAIRS = {  # (runs, series A, series B, operating point)
    "bf16-fp32-peak": ([BF16, FP32], "cpu-host auto vllm", "cpu-host fp32 vllm", Operating()),
    "launched-endpoint-500": ([*LAUNCHED, *ENDPOINT], "cpu-host auto vllm", "cpu-host auto endpoint",
                              Operating(at_interactivity=500.0)),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(PAIRS))
def test_the_factors_multiply_exactly_to_the_measured_ratio(case):
    dirs, a, b, op = PAIRS[case]
    matched = compare_with_intervals(build_table(runs_from_dirs(dirs)), "tiny-llama", op, None,
                                     explain_columns(SCENARIO))
    e = explain(matched, a, b, SCENARIO)
    usd = matched.set_index("series")[f"usd_per_mtok_output__{SCENARIO}"]
    assert e.ratio == usd[b] / usd[a]
    assert math.prod(f.value for f in e.factors) == pytest.approx(e.ratio, rel=1e-12)
    names = [f.name for f in e.factors]
    assert any("roofline bound" in n for n in names) and any("utilization" in n for n in names)
    assert e.sparsity_a == e.sparsity_b == 1.0 and "sparsity" not in " ".join(names)
    if op.at_interactivity is None:  # measured single-run points: nothing is left to a residual
        assert e.factors[-1].value == pytest.approx(1.0, abs=1e-12)


def test_repeats_across_runs_give_intervals_and_single_runs_are_labelled():
    assert len(LAUNCHED) == 5 and len(ENDPOINT) == 3
    table = build_table(runs_from_dirs([*LAUNCHED, *ENDPOINT, FP32]))
    cost = [f"usd_per_mtok_output__{SCENARIO}"]
    frame = compare_with_intervals(table, "tiny-llama", Operating(), "cpu-host auto vllm", cost).set_index("series")
    assert frame.loc["cpu-host auto vllm", "n_repeats"] == 5 and frame.loc["cpu-host auto endpoint", "n_repeats"] == 3
    end = frame.loc["cpu-host auto endpoint"]
    lo, hi = map(float, end["tok_s_per_gpu_vs_baseline_ci95"].split("-"))
    assert lo < end["tok_s_per_gpu_vs_baseline"] < hi
    assert lo < 1 < hi and end["tok_s_per_gpu_vs_baseline_verdict"] == "not distinguishable"
    fp32 = frame.loc["cpu-host fp32 vllm"]
    assert fp32["n_repeats"] == 1 and fp32["tok_s_per_gpu_vs_baseline_verdict"] == "single run"
    assert pd.isna(fp32["tok_s_per_gpu_vs_baseline_ci95"])
    assert frame.loc["cpu-host auto vllm", "tok_s_per_gpu_vs_baseline_verdict"] == "baseline"


@pytest.mark.slow
def test_compare_explain_prints_the_factors_and_draws_the_waterfall(tmp_path):
    res = CliRunner().invoke(cli, ["compare", str(BF16), str(FP32), "--model", "tiny-llama", "--baseline",
                                   "cpu-host auto vllm", "--explain", "cpu-host auto vllm", "cpu-host fp32 vllm",
                                   "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "the factors multiply to" in res.output and "single run" in res.output
    html = (tmp_path / "compare.html").read_text()
    assert "explain-table" in html and '"waterfall"' in html
    assert "Baseline: **cpu-host auto vllm**" in (tmp_path / "report.md").read_text()


def test_an_unknown_explain_series_is_a_one_line_error(tmp_path):
    res = CliRunner().invoke(cli, ["compare", str(BF16), "--model", "tiny-llama", "--explain", "x", "y",
                                   "--out", str(tmp_path)])
    assert res.exit_code != 0 and "no series 'x'" in res.output and res.output.count("\n") == 1


@pytest.mark.slow
def test_a_baseline_no_series_has_is_not_named(tmp_path):
    """Defect (base da21030, docs/compare.png): the page said "Baseline: h100-sxm" for CPU results."""
    res = CliRunner().invoke(cli, ["compare", str(BF16), "--model", "tiny-llama", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    md = (tmp_path / "report.md").read_text()
    assert "Baseline: **none (no series on h100-sxm)**" in md and "Baseline: **h100-sxm**" not in md
    assert "Baseline: h100-sxm." not in (tmp_path / "compare.html").read_text()
