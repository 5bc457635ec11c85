"""A configuration failing its accuracy gate is drawn but never on a Pareto front nor a win
(issue 20 item 1's verdict, read by compare from the columns accuracy_passed / accuracy_score)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.analysis.pareto import Operating
from bench.analysis.report import compare_report
from bench.store.costmodel import build_table, runs_from_dirs

HOST = Path(__file__).resolve().parent.parent / "results" / "cpu-host"
RUNS = [HOST / "20261124T002254Z_run-tiny-llama", HOST / "20261124T002410Z_run-tiny-llama"]


@pytest.mark.slow
def test_a_gate_failing_series_is_marked_never_matched_nor_a_win(tmp_path):
    runs = runs_from_dirs(RUNS)
    table = build_table(runs)
    bf16 = table["precision"] == "auto"
    table["accuracy_passed"] = [False if b else True for b in bf16]  # the faster bf16 fails its gate
    table["accuracy_score"] = [0.0008 if b else 0.78 for b in bf16]
    rep = compare_report(table, runs, "tiny-llama", tmp_path, Operating(), baseline="cpu-host fp32 vllm")
    by = rep.table.set_index("series")
    assert by.loc["cpu-host auto vllm", "status"] == "accuracy gate failed"
    assert by.loc["cpu-host auto vllm", "accuracy"] == "FAILED 0.0008"
    assert by.loc["cpu-host fp32 vllm", "accuracy"] == "passed 0.78"
    assert by["tok_s_per_gpu"].isna()["cpu-host auto vllm"]  # no matched figure, no ratio: never a win
    assert by["tok_s_per_gpu_vs_baseline"].isna()["cpu-host auto vllm"]
    fig = rep.figures["throughput"]
    fronts = {t.meta["series"] for t in fig.data if t.meta and t.meta.get("kind") == "front"}
    assert "cpu-host fp32 vllm" in fronts and "cpu-host auto vllm" not in fronts
    hover = " ".join(str(t.hovertext or t.text or "") for t in fig.data)
    assert "accuracy gate failed" in hover and "accuracy: FAILED (0.0008)" in hover
