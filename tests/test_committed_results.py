"""The genuine result files under results/ (measured by this harness on a CPU host, see
results/README.md): they validate, and the shared table, the comparison and the report
are built from them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from result_factory import make_run, republish

from bench.cli import cli
from bench.results import parse_summary, read_requests, read_summary, write_summary
from bench.results.schema_json import SCHEMA_FILE, schema_text
from bench.results.schema_json import main as schema_main
from bench.store import upload
from bench.store.costmodel import build_table, runs_from_dirs, table_bytes

RESULTS = Path(__file__).resolve().parent.parent / "results" / "cpu-host"
RUN_DIRS = sorted(p.parent for p in RESULTS.glob("*/run.json"))
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_every_committed_run_validates_and_recomputes():
    assert len(RUN_DIRS) >= 4
    for run_dir in RUN_DIRS:
        run = read_summary(run_dir)
        assert run.status == "complete" and run.harness.git_sha and run.provenance.engine_version
        for point in run.points:
            records = read_requests(run_dir, point)
            measured = [r for r in records if r.phase == "measured"]
            assert point.status == "ok" and len(measured) == point.n_requests
            # the stored aggregates are recomputable from the stored records
            from bench.measure.metrics import summarize

            again = summarize(records, window=(point.window.t0_s, point.window.t1_s),
                              n_gpus=1, slo=None)
            assert again.output_tok_s == point.metrics.output_tok_s
            assert again.ttft_s_p99 == point.metrics.ttft_s_p99


def test_costmodel_table_from_committed_runs_is_deterministic():
    runs = runs_from_dirs([RESULTS])
    table = build_table(runs)
    n_valid = sum(1 for d in RUN_DIRS for p in read_summary(d).points if p.valid and p.status == "ok")
    assert len(table) == n_valid > 0
    assert set(table["hardware"]) == {"cpu-host"}
    assert "tiny-llama" in set(table["model"])
    assert table_bytes(table) == table_bytes(build_table(runs_from_dirs([RESULTS])))


@pytest.mark.slow
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
        if read_summary(run_dir).config.model == "tiny-llama":
            assert read_summary(run_dir).run_id in report

    one = tmp_path / "one"
    res = CliRunner().invoke(cli, ["report", str(RUN_DIRS[0]), "--out", str(one)])
    assert res.exit_code == 0, res.output
    assert any(one.glob("*.png")) and any(one.glob("*.md"))


def test_committed_v1_runs_read_as_v2():
    run = read_summary(RUN_DIRS[0])
    assert run.schema_version == 2 and run.extra["upgraded_from_schema_version"] == 1
    p = run.points[0]
    assert p.metrics.output_tok_s > 0 and p.window.window_s > 0 and p.energy.energy_method == "nominal"
    assert p.roofline.bound_kind in ("bandwidth", "compute") and p.metrics.extra == {}


def test_v1_keys_v2_does_not_name_are_kept_in_extra(tmp_path):
    data = json.loads((RUN_DIRS[0] / "run.json").read_text())
    assert data["schema_version"] == 1
    data["points"][0]["metrics"]["queue_s_p50"] = 0.25  # a figure some v1 writer added
    data["points"][0]["energy"]["pue_note"] = "board only"
    data["points"][0]["cost"] = {"scenario": "old-flat", "usd_per_mtok_output": 3.0, "utilization": 1.0}
    run = parse_summary(data)
    p = run.points[0]
    assert p.metrics.extra == {"queue_s_p50": 0.25}
    assert p.energy.extra == {"pue_note": "board only"}
    assert p.cost["old-flat"].usd_per_mtok_output == 3.0
    # written back as v2 and read again: nothing lost
    write_summary(tmp_path, run)
    again = read_summary(tmp_path)
    assert json.loads((tmp_path / "run.json").read_text())["schema_version"] == 2
    assert again.points[0].metrics.extra == {"queue_s_p50": 0.25} and again == run


@pytest.mark.slow
def test_published_json_schema_is_the_generated_one():
    assert SCHEMA_FILE.read_text() == schema_text(), "run: python3 -m bench.results.schema_json"
    assert schema_main(["--check"]) == 0
    schema = json.loads(SCHEMA_FILE.read_text())
    metrics = schema["$defs"]["Metrics"]["properties"]
    for name in ("ttft_s_p99", "tpot_s_mean", "itl_s_std", "e2e_s_p90", "output_tok_s", "tok_s_per_gpu"):
        assert metrics[name]["description"], name
    for group in ("Window", "Metrics", "ServerCounters", "Energy", "CostFigures", "Roofline"):
        assert all(f.get("description") for f in schema["$defs"][group]["properties"].values()), group


@pytest.mark.slow
def test_a_fresh_v2_run_validates_against_the_published_schema(tmp_path):
    import jsonschema  # brought by moto[server] (dev) and vllm

    schema = json.loads(SCHEMA_FILE.read_text())
    data = json.loads((make_run(tmp_path) / "run.json").read_text())
    assert data["schema_version"] == 2
    jsonschema.validate(data, schema)
    data["points"][0]["metrics"]["ttft_s_p99"] = "slow"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(data, schema)


def _mixed(tmp_path) -> Path:
    """The committed v1 runs and a fresh v2 run of the same model and hardware, side by side."""
    root = tmp_path / "mixed"
    for run_dir in RUN_DIRS:
        shutil.copytree(run_dir, root / run_dir.name)
    make_run(root, hardware="cpu-host", model="tiny-llama", dtype="float16", name="syn-v2-tiny-llama")
    return root


@pytest.mark.slow
def test_compare_report_cost_and_costmodel_read_v1_and_v2_together(tmp_path):
    root = _mixed(tmp_path)
    versions = {json.loads(p.read_text())["schema_version"] for p in root.glob("*/run.json")}
    assert versions == {1, 2}
    runner = CliRunner()
    res = runner.invoke(cli, ["compare", str(root), "--model", "tiny-llama", "--baseline", "cpu-host",
                              "--out", str(tmp_path / "cmp")])
    assert res.exit_code == 0, res.output
    compared = pd.read_csv(tmp_path / "cmp" / "compare.csv")
    assert len(compared) == build_table(runs_from_dirs(RUN_DIRS)).query("model == 'tiny-llama'").groupby(
        ["precision", "engine"]).ngroups + 1  # the v2 run is its own (fp16) series
    for run_dir in (root / "syn-v2-tiny-llama", root / RUN_DIRS[0].name):
        res = runner.invoke(cli, ["report", str(run_dir), "--out", str(tmp_path / "rep" / run_dir.name)])
        assert res.exit_code == 0, res.output
    res = runner.invoke(cli, ["cost", str(root / RUN_DIRS[0].name), str(root / "syn-v2-tiny-llama"),
                              "--rental-usd-h", "2", "--json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.output)
    assert {r["run"] for r in rows} == {read_summary(RUN_DIRS[0]).run_id, "syn-v2-tiny-llama"}
    assert all(r["usd_per_mtok_output"] > 0 for r in rows)
    url = str(tmp_path / "store")
    published = upload(sorted(p.parent for p in root.glob("*/run.json")), url)
    # an older harness published its runs as version 1: put one committed v1 file back in the store
    v1 = next(u for u in published if u.run_id.startswith("20261124-tiny-llama"))
    source = next(d for d in RUN_DIRS if read_summary(d).run_id == _published_run(tmp_path, v1.run_id)["run_id"])
    _republish(tmp_path / "store" / "runs" / v1.run_id, (source / "run.json").read_bytes())
    assert {json.loads(p.read_text())["schema_version"] for p in (tmp_path / "store" / "runs").glob("*/run.json")} == {1, 2}
    res = runner.invoke(cli, ["costmodel", "build", "--store", url, "--out", str(tmp_path / "cm")])
    assert res.exit_code == 0, res.output
    table = pd.read_csv(tmp_path / "cm" / "costmodel.csv")
    assert "skipped" not in res.output
    # the store derives validity again, with today's rules (a v1 run can lose its valid points)
    assert table["run_id"].nunique() == build_table(runs_from_dirs(RUN_DIRS, verify=True))["run_id"].nunique() + 1


def _published_run(tmp_path: Path, run_id: str) -> dict:
    return json.loads((tmp_path / "store" / "runs" / run_id / "run.json").read_text())


def _republish(run_dir: Path, blob: bytes) -> None:
    republish(run_dir, blob)
