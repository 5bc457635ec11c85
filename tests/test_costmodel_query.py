"""Queries of the point files: partition pruning, filters, $/Mtok at query time, --sql,
`bench costmodel query` and `bench compare --store`, on a folder and on S3 (moto)."""


from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest
from click.testing import CliRunner
from result_factory import make_run
from test_store import count_s3_requests

from bench.cli import cli
from bench.errors import ConfigError
from bench.measure.cost import make_scenario
from bench.store import Store, pull, upload
from bench.store.costmodel import build, build_table, runs_from_store, table_bytes
from bench.store.query import compare_points, parse_where, query, read_points


@pytest.fixture
def runs(tmp_path):
    """Three hardware x two models; one invalid and one failed point on the h100."""
    out = []
    for hw, speed in (("h100-sxm", 1.0), ("b200", 2.0), ("mi300x", 1.2)):
        for model in ("tiny-llama", "tiny-qwen3-moe"):
            out.append(make_run(tmp_path / "runs", hardware=hw, model=model, speed=speed, concurrencies=(1, 4, 16),
                                invalid={16: "client saturation"} if hw == "h100-sxm" else None))
    return out


def _names(paths):
    return sorted(p.rsplit("/", 2)[-2] + "/" + p.rsplit("/", 1)[-1] for p in paths)


def test_parse_where_types_values_and_refuses_unknown_columns():
    assert parse_where(["hardware=h100-sxm,model=x", "n_gpus=2", "hardware=b200", "valid=false", "rate_rps=2.5"]) == {
        "hardware": ["h100-sxm", "b200"], "model": ["x"], "n_gpus": [2], "valid": [False], "rate_rps": [2.5]}
    for bad, why in (("usd_per_mtok_output__own=1", "no column"), ("hardware", "expected column=value"),
                     ("n_gpus=two", "not a value"), ("valid=maybe", "not a value")):
        with pytest.raises(ConfigError, match=why):
            parse_where([bad])


@pytest.mark.slow
def test_where_on_partition_keys_opens_only_that_partition(runs, tmp_path, monkeypatch):
    url = str(tmp_path / "store")
    done = {(u.source.name): u.run_id for u in upload(runs, url)}
    store = Store(url)
    import duckdb  # noqa: F401 - imported before listings are watched (its own import lists site-packages)

    listed = []
    real_list_names = Store.list_names
    monkeypatch.setattr(Store, "list_names", lambda self, path: listed.append(str(path)) or real_list_names(self, path))
    read = read_points(store, parse_where(["hardware=b200,model=tiny-llama"]))
    assert read.partitions == 1 and len(read.files) == 1
    assert read.files[0].endswith("/hardware=b200/model=tiny-llama/" + next(
        rid for name, rid in done.items() if "b200" in name and "tiny-llama" in name) + ".parquet")
    assert [p.split("/costmodel/points/", 1)[1] for p in listed] == ["hardware=b200/model=tiny-llama"]
    assert set(read.table["hardware"]) == {"b200"} and set(read.table["model"]) == {"tiny-llama"}
    listed.clear()
    by_model = read_points(store, parse_where(["model=tiny-qwen3-moe", "n_gpus=1", "concurrency=4"]))
    assert _names(by_model.files) == sorted(f"model=tiny-qwen3-moe/{rid}.parquet" for name, rid in done.items()
                                            if "qwen3" in name)
    assert len(by_model.table) == 3 and set(by_model.table["concurrency"]) == {4}  # filtered inside the scan
    assert not [p for p in listed if "model=tiny-llama" in p]


@pytest.mark.slow
def test_after_a_build_a_partition_is_one_compacted_file_plus_new_uploads(runs, tmp_path):
    url = str(tmp_path / "store")
    upload(runs, url)
    before = query(url, ["model=tiny-llama"]).table
    build(url)
    read = read_points(Store(url), parse_where(["hardware=h100-sxm,model=tiny-llama"]))
    assert _names(read.files) == ["model=tiny-llama/compacted.parquet"]
    [new] = upload([make_run(tmp_path / "more", hardware="h100-sxm", speed=3.0, concurrencies=(1, 2))], url)
    read = read_points(Store(url), parse_where(["hardware=h100-sxm,model=tiny-llama"]))
    assert _names(read.files) == sorted(["model=tiny-llama/compacted.parquet", f"model=tiny-llama/{new.run_id}.parquet"])
    after = query(url, ["model=tiny-llama"]).table
    assert len(after) == len(before) + 2
    assert set(after["run_id"]) == set(before["run_id"]) | {new.run_id}


@pytest.mark.slow
def test_query_rows_are_the_table_rows_with_cost_computed_now(runs, tmp_path):
    url = str(tmp_path / "store")
    upload(runs, url)
    table = build(url).table
    got = query(url, ["model=tiny-llama"]).table
    expected = table[table["model"] == "tiny-llama"].reset_index(drop=True)
    assert table_bytes(got) == table_bytes(expected)
    # a price change needs no rewrite: the query prices with the scenarios it is given
    files = {p.name: p.read_bytes() for p in (tmp_path / "store").rglob("*.parquet")}
    cheap = query(url, ["model=tiny-llama"], scenarios_for=lambda hw: {
        "cheap": make_scenario(name="cheap", kind="rental", rental_usd_per_gpu_hour=1.0)}).table
    assert cheap["usd_per_mtok_output__cheap"].tolist() == pytest.approx(
        (1.0 / (cheap["output_tok_s_per_gpu"] * 3600 / 1e6)).tolist())
    assert {p.name: p.read_bytes() for p in (tmp_path / "store").rglob("*.parquet")} == files


@pytest.mark.slow
def test_the_table_cost_is_the_per_point_cost_formula(runs, tmp_path):
    """Each $/Mtok cell is exactly what bench.measure.cost.cost_for_point gives the point,
    a point with no output and one with no power (ownership has no total then) included."""
    import math

    from bench.catalog import get_hardware
    from bench.measure.cost import cost_for_point, scenarios_for
    from bench.results import read_summary, write_summary

    run = read_summary(runs[0])
    run.points[0].metrics.output_tok_s = 0.0
    run.points[1].energy.avg_power_w = None
    write_summary(runs[0], run)
    table = build_table([("r", read_summary(runs[0]))])
    named = scenarios_for(get_hardware("h100-sxm"))
    assert {s.kind for s in named.values()} == {"rental", "ownership"}
    for name, scenario in named.items():
        for p in (p for p in run.points if p.valid):
            row = table[table["point_id"] == p.point_id].iloc[0]
            figures = cost_for_point(p.metrics, p.energy, scenario, 1)
            for field in ("usd_per_gpu_hour", "usd_per_mtok_output", "usd_per_mtok_input", "usd_per_mtok_total",
                          "usd_per_mtok_goodput"):
                want = getattr(figures, field)
                got = row[f"{field}__{name}"]
                assert (math.isnan(got) and want is None) or got == want, (p.point_id, name, field)
    assert math.isnan(table.loc[0, "usd_per_mtok_output__rental-on-demand"])
    assert math.isnan(table.loc[1, "usd_per_gpu_hour__own"]) and table.loc[1, "usd_per_gpu_hour__rental-on-demand"] > 0


@pytest.mark.slow
def test_sql_runs_on_the_points_view_and_nothing_else(runs, tmp_path):
    url = str(tmp_path / "store")
    upload(runs, url)
    sql = ("SELECT hardware, count(*) AS n, max(tok_s_per_gpu) AS best, "
           "min(\"usd_per_mtok_output__rental-on-demand\") AS usd FROM points GROUP BY 1 ORDER BY 1")
    res = CliRunner().invoke(cli, ["costmodel", "query", "--store", url, "--where", "model=tiny-llama", "--sql", sql])
    assert res.exit_code == 0, res.output
    frame = pd.read_csv(__import__("io").StringIO(res.stdout))
    assert frame["hardware"].tolist() == ["b200", "h100-sxm", "mi300x"] and frame["n"].tolist() == [3, 2, 3]
    assert frame["usd"].notna().all()
    assert "3 rows; read 3 files from 3 partitions" in res.stderr
    for sql, why in (("SELECT * FROM read_csv('/etc/passwd')", "--sql: "), ("SELEC nonsense", "--sql: ")):
        res = CliRunner().invoke(cli, ["costmodel", "query", "--store", url, "--sql", sql])
        assert res.exit_code != 0 and res.output.startswith(f"bench: error: {why}") and "root:" not in res.output


@pytest.mark.slow
def test_a_filter_on_valid_replaces_the_default(runs, tmp_path):
    url = str(tmp_path / "store")
    upload(runs, url)
    invalid = query(url, ["valid=false"], sql="SELECT hardware, point_id, invalid_reasons FROM points").table
    assert invalid.to_dict("records") == [{"hardware": "h100-sxm", "point_id": "c0016",
                                           "invalid_reasons": "client saturation"}] * 2  # both models
    assert len(query(url, ["valid=true,valid=false"]).table) == 18


@pytest.mark.slow
def test_cli_query_writes_csv_or_parquet(runs, tmp_path):
    url = str(tmp_path / "store")
    upload(runs, url)
    out = tmp_path / "q.parquet"
    res = CliRunner().invoke(cli, ["costmodel", "query", "--store", url, "--where", "hardware=mi300x",
                                   "--scenario", "rental-on-demand", "--out", str(out)])
    assert res.exit_code == 0, res.output
    frame = pd.read_parquet(out)
    assert len(frame) == 6 and set(frame["hardware"]) == {"mi300x"}
    assert next(c for c in frame.columns if "__" in c).endswith("__rental-on-demand")
    res = CliRunner().invoke(cli, ["costmodel", "query", "--store", url, "--where", "nope=1"])
    assert res.exit_code != 0 and "no column 'nope'" in res.output


@pytest.mark.slow
def test_query_and_build_on_a_folder_and_on_s3(store_url, tmp_path, monkeypatch):
    runs = [make_run(tmp_path / "runs", hardware=hw, concurrencies=(1, 4)) for hw in ("h100-sxm", "b200")]
    upload(runs, store_url)
    read = query(store_url, ["hardware=b200"])
    assert len(read.table) == 2 and set(read.table["hardware"]) == {"b200"} and len(read.files) == 1
    done = build(store_url)
    assert table_bytes(done.table) == table_bytes(build_table(runs_from_store(store_url)))
    store = Store(store_url)
    opened, real_open = [], store.fs.open
    store.fs.open = lambda path, *a, **k: opened.append(str(path)) or real_open(path, *a, **k)  # DuckDB reads through it
    real_footer = store.parquet_footer  # the compacted file's footer: read alone, bounded (bench.store.bounded)
    store.parquet_footer = lambda path, *a, **k: opened.append(str(path)) or real_footer(path, *a, **k)
    again = read_points(store, parse_where(["hardware=b200"]))
    assert _names(again.files) == ["model=tiny-llama/compacted.parquet"] and len(again.table) == 2
    assert opened and {p.split("/costmodel/", 1)[1] for p in opened} == {
        "compacted/hardware=b200/model=tiny-llama/compacted.parquet"}
    if store_url.startswith("s3://"):  # DuckDB's questions about a file come from one listing of its folder
        calls = count_s3_requests(monkeypatch)
        assert len(read_points(Store(store_url), parse_where(["hardware=b200"])).table) == 2
        assert "head_object" not in calls, calls  # fe7b476 made 14 HEAD requests here


@pytest.mark.slow
def test_cli_compare_store_matches_compare_of_the_pulled_runs(runs, tmp_path):
    url = str(tmp_path / "store")
    upload(runs, url)
    pulled = pull(url, tmp_path / "cache")
    runner = CliRunner()
    res = runner.invoke(cli, ["compare", "--store", url, "--model", "tiny-llama", "--out", str(tmp_path / "s")])
    assert res.exit_code == 0, res.output
    res = runner.invoke(cli, ["compare", *map(str, pulled), "--model", "tiny-llama", "--out", str(tmp_path / "l")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "s" / "compare.csv").read_bytes() == (tmp_path / "l" / "compare.csv").read_bytes()
    store_md, local_md = ((tmp_path / d / "report.md").read_text() for d in ("s", "l"))
    assert store_md.split("## Runs used")[1] == local_md.split("## Runs used")[1]  # provenance from the point files
    assert "1 invalid load point(s)" in store_md
    res = runner.invoke(cli, ["compare", "--store", url, "--model", "tiny-llama", "--hardware", "b200",
                              "--hardware", "h100-sxm", "--out", str(tmp_path / "h")])
    assert res.exit_code == 0, res.output
    assert sorted(pd.read_csv(tmp_path / "h" / "compare.csv")["hardware"]) == ["b200", "h100-sxm"]
    res = runner.invoke(cli, ["compare", "--store", url, "--model", "nope"])
    assert res.exit_code != 0 and "models with data: tiny-llama, tiny-qwen3-moe" in res.output


@pytest.mark.slow
def test_compare_points_keep_invalid_points_and_their_reasons(runs, tmp_path):
    url = str(tmp_path / "store")
    upload(runs, url)
    read = compare_points(url, "tiny-llama", ["h100-sxm"])
    points = read.table
    assert sorted(points["concurrency"]) == [1, 4, 16]
    invalid = points[~points["valid"]]
    assert invalid["invalid_reasons"].tolist() == ["client saturation"]


@pytest.mark.slow
def test_bench_help_imports_no_duckdb():
    code = ("import sys; from bench.cli import cli\n"
            "for args in (['--help'], ['costmodel', '--help'], ['costmodel', 'query', '--help'], ['compare', '--help']):\n"
            "    try: cli.main(args=args, prog_name='bench', standalone_mode=False)\n"
            "    except SystemExit: pass\n"
            "print(sorted(m for m in ('duckdb', 's3fs', 'pyarrow.dataset') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("[]")


@pytest.mark.slow
@pytest.mark.parametrize("older", [0, 1])
def test_compacted_files_of_an_older_and_a_newer_writer_read_together(tmp_path, older):
    """A compacted file without a column (an older bench) reads with that column empty,
    whichever file comes first; a column the reader does not know (a newer bench) is left out."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    url = str(tmp_path / "store")
    done = upload([make_run(tmp_path / "runs", hardware=hw, concurrencies=(1, 4)) for hw in ("b200", "h100-sxm")], url)
    build(url)
    files = sorted(Store(url).fs.glob(f"{url}/costmodel/compacted/**/*.parquet"))
    old, new = files[older], files[1 - older]
    table = pq.read_table(old)
    pq.write_table(table.drop_columns(["synthetic", "weights"]).replace_schema_metadata(table.schema.metadata), old)
    table = pq.read_table(new)
    pq.write_table(table.append_column("future_column", pa.array([1.0] * table.num_rows))
                   .replace_schema_metadata(table.schema.metadata), new)
    read = read_points(Store(url), {})
    rows = read.table.set_index("hardware")
    old_hw = old.split("hardware=", 1)[1].split("/", 1)[0]
    assert len(read.table) == 4 and "future_column" not in read.table and len(read.files) == 2
    assert rows.loc[old_hw, "synthetic"].isna().all() and rows.loc[old_hw, "weights"].isna().all()
    assert rows.drop(old_hw)["synthetic"].all() and (rows.drop(old_hw)["weights"] == "dummy").all()
    assert {d.run_id for d in done} == set(read.table["run_id"])
