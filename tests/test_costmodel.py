"""The shared cost-model table: contents, recomputed cost, determinism, store round trip."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from result_factory import make_run, republish

from bench.cli import cli
from bench.errors import ConfigError
from bench.results import read_summary, write_summary
from bench.results.config import RunConfig
from bench.store import upload
from bench.store.costmodel import (
    BASE_COLUMNS,
    SCENARIO_FIELDS,
    build,
    build_table,
    runs_from_dirs,
    table_bytes,
    write_table,
)

DOCS = Path(__file__).resolve().parent.parent / "docs" / "costmodel.md"


def stand_in_scenarios(hardware_id):
    """Two catalog-independent scenarios: a flat hourly price, and the same price half busy."""
    from bench.measure.cost import make_scenario

    if not hardware_id:
        return {}
    return {"flat": make_scenario(name="flat", kind="rental", rental_usd_per_gpu_hour=2.0),
            "half-busy": make_scenario(name="half-busy", kind="rental", rental_usd_per_gpu_hour=2.0, utilization=0.5)}


INJECT = {"scenarios_for": stand_in_scenarios}


@pytest.fixture
def run_dirs(tmp_path):
    return [
        make_run(tmp_path / "runs", hardware="h100-sxm", invalid={16: "client saturation"}, failed=(8,)),
        make_run(tmp_path / "runs", hardware="b200", speed=2.0, n_gpus=2, quantization="fp8"),
        make_run(tmp_path / "runs", hardware="mi300x", speed=1.2, model="tiny-qwen3-moe"),
    ]


@pytest.mark.slow
def test_one_row_per_valid_ok_point_with_recomputed_cost(run_dirs):
    table = build_table(runs_from_dirs(run_dirs), **INJECT)
    assert len(table) == 3 + 5 + 5  # h100: c16 invalid and c8 failed are left out
    assert list(table.columns[: len(BASE_COLUMNS)]) == BASE_COLUMNS
    assert [c for c in table.columns if c.endswith("__flat")] == [f"{f}__flat" for f in SCENARIO_FIELDS]
    h100 = table[table["hardware"] == "h100-sxm"]
    assert sorted(h100["concurrency"]) == [1, 2, 4]
    b200 = table[table["hardware"] == "b200"].iloc[0]
    assert b200["precision"] == "fp8" and b200["n_gpus"] == 2
    assert b200["output_tok_s_per_gpu"] == pytest.approx(b200["output_tok_s"] / 2)
    assert b200["usd_per_mtok_output__flat"] == pytest.approx(2.0 / (b200["output_tok_s_per_gpu"] * 3600 / 1e6))
    assert b200["usd_per_mtok_output__half-busy"] == pytest.approx(2 * b200["usd_per_mtok_output__flat"])
    assert b200["utilization__half-busy"] == 0.5
    assert b200["isl"] == 128 and b200["osl"] == 32 and b200["load_kind"] == "concurrency"
    assert b200["energy_method"] == "nvml_counter" and bool(b200["measured"]) and bool(b200["valid"])
    moe = table[table["model"] == "tiny-qwen3-moe"].iloc[0]
    assert 0 < moe["sparsity"] < 1 and moe["active_params"] < moe["total_params"]


@pytest.mark.slow
def test_scenario_filter_and_unknown_scenario(run_dirs):
    table = build_table(runs_from_dirs(run_dirs), ["flat"], **INJECT)
    assert not [c for c in table.columns if "half-busy" in c]
    with pytest.raises(ConfigError, match="unknown cost scenario.*nope"):
        build_table(runs_from_dirs(run_dirs), ["nope"], **INJECT)


@pytest.mark.slow
def test_real_cost_scenarios_from_the_catalog(run_dirs):
    table = build_table(runs_from_dirs(run_dirs))
    row = table[table["hardware"] == "h100-sxm"].iloc[0]
    rate = row["usd_per_gpu_hour__rental-on-demand"]
    assert rate > 0
    assert row["usd_per_mtok_output__rental-on-demand"] == pytest.approx(
        rate / (row["output_tok_s_per_gpu"] * row["utilization__rental-on-demand"] * 3600 / 1e6))


def test_points_of_a_multi_configuration_run_take_their_own_configuration(tmp_path):
    a = read_summary(make_run(tmp_path / "a", n_gpus=1))
    b = read_summary(make_run(tmp_path / "b", n_gpus=2, quantization="fp8"))
    merged = a.model_copy(deep=True)
    merged.config = RunConfig(hardware_id="h100-sxm",
                              engine_configs={**a.config.engine_configs, **b.config.engine_configs})
    merged.points = a.points + [p.model_copy(update={"point_id": "b-" + p.point_id}) for p in b.points]
    table = build_table([("multi", merged)], **INJECT)
    by_point = table.set_index("point_id")
    assert by_point.loc["c0001", "n_gpus"] == 1 and by_point.loc["c0001", "precision"] == "bf16"
    assert by_point.loc["b-c0001", "n_gpus"] == 2 and by_point.loc["b-c0001", "precision"] == "fp8"
    assert by_point.loc["b-c0001", "tok_s_per_gpu"] == pytest.approx(by_point.loc["b-c0001", "total_tok_s"] / 2)


@pytest.mark.slow
def test_same_runs_give_the_same_bytes(run_dirs, tmp_path):
    runs = runs_from_dirs(run_dirs)
    first = table_bytes(build_table(runs, **INJECT))
    second = table_bytes(build_table(list(reversed(runs)), **INJECT))
    assert first == second
    paths_a = write_table(build_table(runs, **INJECT), tmp_path / "a")
    paths_b = write_table(build_table(runs[::-1], **INJECT), tmp_path / "b")
    assert [p.read_bytes() for p in paths_a] == [p.read_bytes() for p in paths_b]
    csv = paths_a[1].read_text()
    assert not re.search(r"\d{4}-\d\d-\d\dT\d\d:", csv)  # no timestamps, only the run date
    assert pd.read_csv(paths_a[1]).shape == pd.read_parquet(paths_a[0]).shape


def test_empty_store_gives_an_empty_table_with_every_column():
    table = build_table([], **INJECT)
    assert table.empty and list(table.columns) == BASE_COLUMNS
    assert table_bytes(table)["csv"].decode().strip() == ",".join(BASE_COLUMNS)


@pytest.mark.slow
def test_build_from_store_writes_back_and_loads_with_pandas(run_dirs, tmp_path, monkeypatch):
    import bench.store.costmodel as costmodel_mod

    url = str(tmp_path / "store")
    upload(run_dirs, url)
    serialized = []
    monkeypatch.setattr(costmodel_mod, "table_bytes", lambda t: serialized.append(len(t)) or table_bytes(t))
    done = build(url, out_dir=tmp_path / "out", **INJECT)
    assert serialized == [13]  # the table made into bytes once: the local copy and the store's are the same bytes
    monkeypatch.undo()
    assert len(done.table) == 13
    assert set(done.table["run_id"]) == {json.loads(p.read_text())["run_id"]
                                         for p in (tmp_path / "store" / "runs").glob("*/MANIFEST.json")}
    stored = tmp_path / "store" / "costmodel" / "costmodel.parquet"
    assert stored.read_bytes() == (tmp_path / "out" / "costmodel.parquet").read_bytes()
    again = build(url, **INJECT)
    assert again.local_paths == [] and stored.read_bytes() == (tmp_path / "out" / "costmodel.parquet").read_bytes()
    frame = pd.read_parquet(str(stored))
    assert len(frame) == 13 and frame["tok_s_per_gpu"].notna().all()


@pytest.mark.slow
def test_cli_costmodel_build(run_dirs, tmp_path):
    url = str(tmp_path / "store")
    upload(run_dirs, url)
    res = CliRunner().invoke(cli, ["costmodel", "build", "--store", url, "--out", str(tmp_path / "o"),
                                   "--scenario", "rental-on-demand"])
    assert res.exit_code == 0, res.output
    assert "13 load points from 3 runs" in res.output
    frame = pd.read_csv(tmp_path / "o" / "costmodel.csv")
    assert [c for c in frame.columns if c.startswith("usd_per_mtok_output__")] == ["usd_per_mtok_output__rental-on-demand"]


def test_every_column_is_documented():
    text = DOCS.read_text()
    documented = set(re.findall(r"^\| `([a-z_0-9]+)(?:__<scenario>)?` \|", text, flags=re.MULTILINE))
    assert set(BASE_COLUMNS) <= documented
    assert set(SCENARIO_FIELDS) <= documented


def test_invalid_points_are_never_counted(tmp_path):
    run_dir = make_run(tmp_path / "runs")
    result = read_summary(run_dir)
    for p in result.points:
        p.valid, p.invalid_reasons = False, ["token mismatch"]
    write_summary(run_dir, result)
    assert build_table(runs_from_dirs([run_dir]), **INJECT).empty


@pytest.mark.slow
def test_a_run_of_an_unknown_schema_in_the_store_is_skipped_not_fatal(run_dirs, tmp_path):
    url = str(tmp_path / "store")
    done = upload(run_dirs, url)
    # a newer harness published a run this one cannot read: rewrite it consistently
    run_dir = tmp_path / "store" / "runs" / done[0].run_id
    data = json.loads((run_dir / "run.json").read_text())
    data["schema_version"] = 99
    republish(run_dir, (json.dumps(data) + "\n").encode())
    result = build(url, **INJECT)
    assert len(result.table) == 10
    assert len(result.skipped) == 1 and "unknown schema_version 99" in result.skipped[0]


def test_an_unlabelled_configuration_gets_the_engine_configs_precision_label(tmp_path):
    """Issue 19: a run stored without its precision label (older writers) is labelled by
    the one rule (bench.catalog.dtypes.precision_label), as the runner labels it: bf16 weights + fp8
    quantization + fp8 KV cache is "fp8+fp8-kv", not the store's old fallback "fp8"."""
    run = read_summary(make_run(tmp_path / "a", n_gpus=1))
    (cid,) = run.config.engine_configs
    for cfg in (run.config, run.config.engine_configs[cid]):
        cfg.precision = None
        cfg.dtype, cfg.quantization, cfg.kv_cache_dtype = "bfloat16", "fp8", "fp8"
    (row, *_) = build_table([("r", run)], **INJECT).to_dict("records")
    assert row["precision"] == "fp8+fp8-kv"
