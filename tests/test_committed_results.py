"""The genuine result files under results/ (measured by this harness on a CPU host, see
results/README.md): they validate, and the shared table, the comparison and the report
are built from them."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from click.testing import CliRunner

from bench.cli import cli
from bench.store.costmodel import build_table, runs_from_dirs, table_bytes
from bench.results import read_requests, read_summary

RESULTS = Path(__file__).resolve().parent.parent / "results" / "cpu-host"
RUN_DIRS = sorted(p.parent for p in RESULTS.glob("*/run.json"))
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_every_committed_run_validates_and_recomputes():
    assert len(RUN_DIRS) >= 4
    for run_dir in RUN_DIRS:
        run = read_summary(run_dir)
        assert run.status == "complete" and run.harness.git_sha and run.provenance["engine_version"]
        for point in run.points:
            records = read_requests(run_dir, point)
            measured = [r for r in records if r.phase == "measured"]
            assert point.status == "ok" and len(measured) == point.n_requests
            # the stored aggregates are recomputable from the stored records
            from bench.measure.metrics import summarize

            again = summarize(records, window=(point.window["t0_s"], point.window["t1_s"]),
                              n_gpus=1, slo=None)
            assert again["output_tok_s"] == point.metrics["output_tok_s"]
            assert again["ttft_s_p99"] == point.metrics["ttft_s_p99"]


def test_costmodel_table_from_committed_runs_is_deterministic():
    runs = runs_from_dirs([RESULTS])
    table = build_table(runs)
    n_valid = sum(1 for d in RUN_DIRS for p in read_summary(d).points if p.valid and p.status == "ok")
    assert len(table) == n_valid > 0
    assert set(table["hardware"]) == {"cpu-host"}
    assert "tiny-llama" in set(table["model"])
    assert table_bytes(table) == table_bytes(build_table(runs_from_dirs([RESULTS])))


def test_compare_and_report_on_committed_runs(tmp_path):
    out = tmp_path / "cmp"
    res = CliRunner().invoke(cli, ["compare", str(RESULTS), "--model", "tiny-llama", "--baseline", "cpu-host",
                                   "--out", str(out)])
    assert res.exit_code == 0, res.output
    compared = pd.read_csv(out / "compare.csv")
    table = build_table(runs_from_dirs([RESULTS]))
    llama = table[table["model"] == "tiny-llama"]
    series = llama.groupby(["precision", "engine"]).ngroups
    assert len(compared) == series >= 3  # vLLM bf16, vLLM fp32, transformers
    for png in out.glob("*.png"):
        assert png.read_bytes()[:8] == PNG_MAGIC
    assert (out / "throughput_vs_interactivity.png").exists()
    report = (out / "report.md").read_text()
    for run_dir in RUN_DIRS:
        if read_summary(run_dir).config.get("model") == "tiny-llama":
            assert read_summary(run_dir).run_id in report

    one = tmp_path / "one"
    res = CliRunner().invoke(cli, ["report", str(RUN_DIRS[0]), "--out", str(one)])
    assert res.exit_code == 0, res.output
    assert any(one.glob("*.png")) and any(one.glob("*.md"))
