"""Repeats: every repeat of a point sends the same prompts on the same schedule (only the
measurement is repeated), and `bench run --repeats N` plans N of each point."""

from __future__ import annotations

import pytest

from bench.load.workload import make_workload
from bench.plan import PointSpec
from bench.plan.engineconfig import EngineConfig
from bench.plan.request import RunRequest
from bench.run.measure_point import workload_seed

RANDOM = {"kind": "random", "input_len": 16, "output_len": 8}


def _point(load: str, repeat: int) -> PointSpec:
    cfg = EngineConfig(model="tiny-llama", engine="endpoint", endpoint_url="http://x")
    return PointSpec(point_id=f"{cfg.config_id()}_w0_{load}_r{repeat}", engine_config_id=cfg.config_id(),
                     workload=RANDOM, load={"kind": "concurrency", "concurrency": int(load[1:])},
                     n_warmup=1, n_requests=8, repeat=repeat)


def test_repeats_of_a_point_send_the_same_prompts_other_points_others():
    r0, r1, r2, other = _point("c2", 0), _point("c2", 1), _point("c2", 2), _point("c4", 0)
    assert workload_seed(0, r0) == workload_seed(0, r1) == workload_seed(0, r2)
    assert workload_seed(0, r0) != workload_seed(0, other)
    p0 = make_workload(r0.workload, 32000, workload_seed(0, r0)).prompts(4)
    p1 = make_workload(r1.workload, 32000, workload_seed(0, r1)).prompts(4)
    assert p0 == p1


def test_bench_run_plans_each_level_repeats_times():
    request = RunRequest.single_run("tiny-llama", [1, 4], 16, 8, {"repeats": 3, "engine": "endpoint",
                                                                  "endpoint_url": "http://x"})
    plan = request.plan(None, 1)
    assert [p.point_id.rsplit("_", 2)[1:] for p in plan.points] == [
        ["c1", f"r{r}"] for r in range(3)] + [["c4", f"r{r}"] for r in range(3)]


@pytest.mark.slow
def test_bench_run_repeats_every_level_against_the_fake_server(tmp_path):
    """Defect (base da21030): `bench run` had no --repeats (only `bench sweep` did)."""
    import json

    from click.testing import CliRunner

    from bench.cli import cli
    from bench.testing.fake_server import FakeServer, FakeServerConfig

    with FakeServer(FakeServerConfig(ttft_s=0.002, itl_s=0.001)) as srv:
        res = CliRunner().invoke(cli, ["run", "--engine", "endpoint", "--url", srv.base_url, "--concurrency", "1",
                                       "--input-len", "8", "--output-len", "4", "--requests", "6", "--warmup", "0",
                                       "--repeats", "3", "--hardware", "cpu-host", "--telemetry", "none",
                                       "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    (path,) = tmp_path.rglob("run.json")
    ids = [p["point_id"] for p in json.loads(path.read_text())["points"]]
    assert [i.rsplit("_", 1)[1] for i in ids] == ["r0", "r1", "r2"]
    # every repeat keeps its own per-request records
    assert sorted(p.name for p in (path.parent / "requests").iterdir()) == sorted(f"{i}.parquet" for i in ids)
    table = res.output.split("over repeats", 1)[1]
    row = next(line for line in table.splitlines() if "tok/s per GPU (input + output)" in line)
    assert row.split()[-6] == "3"  # n, then mean, sd, CV %, 95% CI low and high: numbers
    mean, sd, cv, lo, hi = map(float, row.split()[-5:])
    assert lo < mean < hi and sd > 0 and cv == pytest.approx(100 * sd / mean, rel=1e-3)
    assert "TTFT p99" in table and " ms " in table

    report = CliRunner().invoke(cli, ["report", str(path.parent), "--out", str(tmp_path / "rep")])
    assert report.exit_code == 0, report.output
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "## Over repeats" in md and "TTFT p50 (ms)" in md and "tok/s/GPU (in+out)" in md
    assert (tmp_path / "rep" / "usd_per_mtok_rental-on-demand.png").is_file()  # the run report's $/Mtok chart
    assert "repeats-table" in (tmp_path / "rep" / "report.html").read_text()


def _run_fake(tmp_path, *extra: str, requests: int = 6):
    import json

    from click.testing import CliRunner

    from bench.cli import cli
    from bench.testing.fake_server import FakeServer, FakeServerConfig

    with FakeServer(FakeServerConfig(ttft_s=0.002, itl_s=0.001)) as srv:
        res = CliRunner().invoke(cli, ["run", "--engine", "endpoint", "--url", srv.base_url, "--concurrency", "1",
                                       "--input-len", "8", "--output-len", "4", "--requests", str(requests), "--warmup",
                                       "0", "--hardware", "cpu-host", "--telemetry", "none", "--out", str(tmp_path), *extra])
    (path,) = tmp_path.rglob("run.json")
    return res, json.loads(path.read_text())


def _result(point: PointSpec, tok_s: float, valid: bool = True):
    from bench.measure.groups import Metrics
    from bench.results import PointResult

    return PointResult(point_id=point.point_id, engine_config_id=point.engine_config_id, load=point.load,
                       status="ok", valid=valid, invalid_reasons=[] if valid else ["x"],
                       n_requests=100, n_failed=0, metrics=Metrics(tok_s_per_gpu=tok_s))


def test_adaptive_repeats_drop_a_points_later_repeats_once_its_interval_is_narrow():
    from bench.plan.sweepfile import RepeatUntil
    from bench.run.repeats import AdaptiveRepeats

    stop = AdaptiveRepeats(RepeatUntil(metric="tok_s_per_gpu", share=0.05, min_repeats=3))
    c2 = [_point("c2", r) for r in range(6)]
    c4 = [_point("c4", r) for r in range(2)]
    pending = [*c2[1:], *c4]
    for done, value in ((c2[0], 100.0), (c2[1], 101.0)):
        pending, dropped = stop.after(_result(done, value), pending[1:] if done is not c2[0] else pending)
        assert not dropped  # fewer than min_repeats valid repeats: keep going
    pending, dropped = stop.after(_result(c2[2], 99.0, valid=False), pending[1:])
    assert not dropped  # an invalid repeat is no value
    pending, dropped = stop.after(_result(c2[3], 100.5), pending[1:])
    assert [p.point_id for p, _ in dropped] == [c2[4].point_id, c2[5].point_id]
    assert dropped[0][1].startswith("converged: the 95% interval of tok_s_per_gpu over 3 valid repeats")
    assert pending == c4  # the other load point's repeats are untouched


def test_a_converged_repeat_left_out_keeps_the_run_complete():
    from bench.results.point import failed_point
    from bench.run.status import final_status

    ok = [_result(_point("c2", r), 100.0) for r in range(3)]
    skipped = failed_point(_point("c2", 3), "skipped", "converged: ...")
    assert final_status([*ok, skipped]) == ("complete", None)
    assert final_status([*ok, failed_point(_point("c2", 3), "skipped", "does not fit")])[0] == "partial"


@pytest.mark.slow
def test_adaptive_repeats_run_every_repeat_when_the_interval_stays_wide(tmp_path):
    res, run = _run_fake(tmp_path, "--repeats", "4", "--repeat-until", "output_tok_s:0.000001")
    assert res.exit_code == 0, res.output
    assert [p["status"] for p in run["points"]] == ["ok"] * 4


def test_a_bad_repeat_until_is_a_one_line_usage_error():
    from click.testing import CliRunner

    from bench.cli import cli

    res = CliRunner().invoke(cli, ["run", "--repeat-until", "tok_s_per_gpu"])
    assert res.exit_code == 2 and "expected METRIC:SHARE" in res.output
    res = CliRunner().invoke(cli, ["run", "--engine", "endpoint", "--url", "http://127.0.0.1:9", "--repeat-until",
                                   "nonsense:0.1"])
    assert res.exit_code != 0 and "repeat_until" in res.output


def test_the_table_rows_of_a_points_repeats_carry_its_intervals():
    from pathlib import Path

    from bench.measure.intervals import summarize
    from bench.results import read_summary
    from bench.store.rows import point_rows

    run = read_summary(Path(__file__).resolve().parent.parent / "results" / "cpu-host" /
                       "20261201T185745Z_run-tiny-llama")
    first = run.points[0]
    copies = []
    for r, k in ((1, 1.02), (2, 0.97)):
        metrics = first.metrics.model_copy(update={"tok_s_per_gpu": first.metrics.tok_s_per_gpu * k})
        copies.append(first.model_copy(update={"point_id": first.point_id.replace("_r0", f"_r{r}"),
                                               "metrics": metrics}))
    run = run.model_copy(update={"points": [first, *copies, *run.points[1:]]})
    rows = {r["point_id"]: r for r in point_rows("rid", run, model_info=lambda _: {})}
    values = [first.metrics.tok_s_per_gpu * k for k in (1, 1.02, 0.97)]
    iv = summarize(values)
    for pid in (first.point_id, copies[0].point_id, copies[1].point_id):
        row = rows[pid]
        assert row["repeat_of"] == first.point_id[: -len("_r0")] and row["repeats_n"] == 3
        assert row["tok_s_per_gpu_mean"] == pytest.approx(iv.mean)
        assert (row["tok_s_per_gpu_ci95_lo"], row["tok_s_per_gpu_ci95_hi"]) == (pytest.approx(iv.lo), pytest.approx(iv.hi))
    single = rows[run.points[3].point_id]
    assert single["repeats_n"] == 1 and single["tok_s_per_gpu_sd"] is None
