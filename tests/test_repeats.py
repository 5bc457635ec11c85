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
