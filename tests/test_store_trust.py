"""The shared table is derived, not declared (issue 17, defects 3 and 4; issue 18, defect 3).

Every figure that reaches the table is derived again from the run's records and energy
series, and checked against the catalog; a point file is read only when its run's
manifest vouches for it. A forged run, a NaN run, a run with an impossible GPU count, a
ghost point file and a tampered one each leave the table built from the honest runs only,
with one line saying which run was left out and why; a partial run uploads.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from result_factory import (
    each_point,
    edit_run,
    make_run,
    plant,
    point_file_of,
    rewrite_points,
)

from bench.cli import cli
from bench.errors import StoreError
from bench.results import read_summary
from bench.store import upload
from bench.store.costmodel import build
from bench.store.query import compare_points, query

RESULTS = Path(__file__).resolve().parent.parent / "results"
GHOST = "20260115-tiny-llama-h100-sxm-0123456789ab"


def _small(root, name, **kw):
    return make_run(root, name=name, **{"concurrencies": (1, 4), **kw})


def _n_gpus(value):
    def change(data):
        data["config"]["n_gpus"] = value
        for cfg in data["config"]["engine_configs"].values():
            cfg["n_gpus"] = value
    return change


def _counter_backwards(run_dir):
    """The energy counter of the first point's window steps back 500 J; run.json still says valid."""
    frame = pd.read_parquet(run_dir / "power.parquet")
    t_mid = read_summary(run_dir).points[0].window.t0_s + 1.0
    frame.loc[frame["t_s"] > t_mid, "energy_j"] -= 500.0
    frame.to_parquet(run_dir / "power.parquet", index=False)


# name -> (how the forged run is made from a run folder root, what the one line says)
FORGED = {
    # a self-consistent forgery: records made for 29.9 M output tok/s per H100 on an 8B model
    "impossible-throughput": (lambda root: _small(root, "forged", model="llama-3.1-8b", speed=299_000.0,
                                                  concurrencies=(1,)),
                              "above 1.5 x the roofline bound"),
    # records and power series consistent with a board drawing -700 W
    "negative-power": (lambda root: _small(root, "forged", board_w=-875.0, concurrencies=(1,)),
                       "energy.avg_power_w: -"),
    "nan-throughput": (lambda root: edit_run(_small(root, "forged"), lambda d: each_point(
        d, "metrics", "output_tok_s", math.nan)), "metrics.output_tok_s: stored nan"),
    "inf-power": (lambda root: edit_run(_small(root, "forged"), lambda d: each_point(
        d, "energy", "avg_power_w", math.inf)), "energy.avg_power_w: stored inf"),
    "x1000-throughput": (lambda root: edit_run(_small(root, "forged"), lambda d: [
        p["metrics"].update(output_tok_s=1000 * p["metrics"]["output_tok_s"]) for p in d["points"]]),
        "metrics.output_tok_s: stored"),
    "n_gpus-many": (lambda root: edit_run(_small(root, "forged"), _n_gpus("many")), "config.n_gpus: 'many'"),
    "n_gpus-1e30": (lambda root: edit_run(_small(root, "forged"), _n_gpus(10**30)), "config.n_gpus: 10000000000"),
    "n_gpus-negative": (lambda root: edit_run(_small(root, "forged"), _n_gpus(-5)), "config.n_gpus: -5"),
    "n_gpus-not-tp": (lambda root: edit_run(_small(root, "forged"), _n_gpus(8)), "config.n_gpus: 8 is not TP x PP x DP"),
    "window-trimmed": (lambda root: edit_run(_small(root, "forged"), lambda d: [
        p["window"].update(t0_s=p["window"]["t0_s"] + 5.0) for p in d["points"]]), "window.t0_s"),
    "counter-backwards": (lambda root: _counter_backwards(_small(root, "forged")) or root / "forged",
                          "energy.energy_valid: stored True, recomputed False"),
}


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(FORGED))
def test_a_forged_published_run_is_left_out_and_the_honest_ones_build(tmp_path, kind):
    make, why = FORGED[kind]
    url = str(tmp_path / "store")
    [honest] = upload([_small(tmp_path / "runs", "honest")], url)
    forged = plant(make(tmp_path / "runs"), tmp_path / "store")
    done = build(url)
    assert set(done.table["run_id"]) == {honest.run_id} and len(done.table) == 2
    [line] = done.skipped
    assert forged in line and why in line and "\n" not in line
    res = CliRunner().invoke(cli, ["costmodel", "build", "--store", url])
    assert res.exit_code == 1 and "1 run(s) skipped" in res.output and why in res.output
    assert pd.read_parquet(tmp_path / "store" / "costmodel" / "costmodel.parquet")["run_id"].unique().tolist() \
        == [honest.run_id]


@pytest.mark.parametrize("kind", sorted(FORGED))
def test_upload_refuses_a_forged_run_in_one_line(tmp_path, kind):
    make, why = FORGED[kind]
    with pytest.raises(StoreError, match="point c0001: |config.n_gpus") as err:
        upload([make(tmp_path / "runs")], str(tmp_path / "store"))
    assert why in str(err.value) and "\n" not in str(err.value)
    assert not list((tmp_path / "store").rglob("MANIFEST.json")) if (tmp_path / "store").exists() else True
    res = CliRunner().invoke(cli, ["upload", str(tmp_path / "runs" / "forged"), "--to", str(tmp_path / "store")])
    assert res.exit_code == 2 and res.output.startswith("bench: error: ") and res.output.count("\n") == 1


@pytest.mark.slow
def test_compare_store_never_ranks_a_forged_run(tmp_path):
    url = str(tmp_path / "store")
    upload([_small(tmp_path / "runs", "honest", model="llama-3.1-8b", speed=0.5)], url)
    forged = plant(FORGED["impossible-throughput"][0](tmp_path / "runs"), tmp_path / "store")
    build(url)
    read = compare_points(url, "llama-3.1-8b")
    assert forged not in set(read.table["run_id"])
    res = CliRunner().invoke(cli, ["compare", "--store", url, "--model", "llama-3.1-8b", "--out", str(tmp_path / "c")])
    assert res.exit_code == 0, res.output
    assert forged not in (tmp_path / "c" / "report.md").read_text()


def _ghost(store_root: Path, honest_id: str) -> Path:
    src = point_file_of(store_root, honest_id)
    return rewrite_points(src, src.with_name(f"{GHOST}.parquet"), run_id=GHOST, throughput_x=1000.0)


@pytest.mark.slow
def test_a_ghost_point_file_is_never_read(tmp_path):
    url = str(tmp_path / "store")
    [honest] = upload([_small(tmp_path / "runs", "honest")], url)
    _ghost(tmp_path / "store", honest.run_id)
    for read in (query(url, ["model=tiny-llama"]), compare_points(url, "tiny-llama")):
        assert set(read.table["run_id"]) == {honest.run_id}
        [line] = read.skipped
        assert GHOST in line and "no published run" in line
    res = CliRunner().invoke(cli, ["costmodel", "query", "--store", url])
    assert res.exit_code == 1 and GHOST not in res.stdout and "1 point file(s) skipped" in res.stderr
    done = build(url)
    assert set(done.table["run_id"]) == {honest.run_id}
    [line] = done.skipped
    assert GHOST in line and "has no published run" in line
    assert set(query(url, []).table["run_id"]) == {honest.run_id}  # after the build: the compacted file, not the ghost


@pytest.mark.slow
def test_a_tampered_point_file_is_never_read(tmp_path):
    url = str(tmp_path / "store")
    honest, other = upload([_small(tmp_path / "runs", "honest"), _small(tmp_path / "runs", "other", hardware="b200")],
                           url)
    path = point_file_of(tmp_path / "store", honest.run_id)
    rewrite_points(path, path, throughput_x=1000.0)  # the same run id, x1000 throughput
    read = query(url, [])
    assert set(read.table["run_id"]) == {other.run_id}
    [line] = read.skipped
    assert honest.run_id in line and "not the file its run's manifest lists" in line
    done = build(url)
    assert set(done.table["run_id"]) == {other.run_id}
    [line] = done.skipped
    assert honest.run_id in line and "does not hold the rows the run gives" in line
    assert set(query(url, []).table["run_id"]) == {other.run_id}
    assert compare_points(url, "tiny-llama").table["output_tok_s"].max() < 1e4


@pytest.mark.slow
def test_compaction_never_writes_through_a_planted_symbolic_link(tmp_path):
    url, outside = str(tmp_path / "store"), tmp_path / "outside"
    outside.mkdir()
    upload([_small(tmp_path / "runs", "a")], url)
    build(url)
    compacted = tmp_path / "store" / "costmodel" / "compacted" / "hardware=h100-sxm"
    import shutil

    shutil.rmtree(compacted)
    compacted.symlink_to(outside, target_is_directory=True)
    [b] = upload([_small(tmp_path / "runs", "b", speed=1.5)], url)
    done = build(url)
    assert list(outside.rglob("*")) == []
    assert b.run_id in set(done.table["run_id"]) and len(done.table) == 4  # the rows still reach the table
    [line] = done.skipped
    assert "resolves outside the store" in line and "\n" not in line
    (tmp_path / "store" / "costmodel" / "points" / "hardware=b200").symlink_to(outside, target_is_directory=True)
    with pytest.raises(StoreError, match="'hardware=b200' below the store's root is a symbolic link or not a folder"):
        upload([_small(tmp_path / "runs", "c", hardware="b200")], url)
    assert list(outside.rglob("*")) == []


def test_hardware_the_catalog_lacks_leaves_points_invalid_not_the_run_refused(tmp_path):
    url = str(tmp_path / "store")
    [done] = upload([_small(tmp_path / "runs", "new-gpu", hardware="a100-sxm")], url)
    table = build(url)
    assert table.skipped == [] and table.table.empty
    points = query(url, ["valid=false"], sql="SELECT run_id, invalid_reasons FROM points").table
    assert set(points["run_id"]) == {done.run_id}
    assert all("not checked against the catalog: hardware 'a100-sxm'" in r for r in points["invalid_reasons"])


def test_a_run_without_its_power_series_keeps_its_points_invalid_with_the_reason(tmp_path):
    run = _small(tmp_path / "runs", "no-series")
    os.remove(run / "power.parquet")
    url = str(tmp_path / "store")
    upload([run], url)
    assert build(url).table.empty
    reasons = query(url, ["valid=false"], sql="SELECT invalid_reasons FROM points").table["invalid_reasons"]
    assert len(reasons) == 2 and all("energy: not recomputable" in r for r in reasons)


def test_the_upload_lists_each_point_file_hash_in_the_manifest(tmp_path):
    url = str(tmp_path / "store")
    [done] = upload([_small(tmp_path / "runs", "r")], url)
    manifest = json.loads((tmp_path / "store" / "runs" / done.run_id / "MANIFEST.json").read_text())
    [entry] = manifest["point_files"]
    import hashlib

    path = point_file_of(tmp_path / "store", done.run_id)
    assert entry["path"] == path.relative_to(tmp_path / "store").as_posix()
    assert entry["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


# ---- the recomputation is the run's own: genuine results verify, and give their own figures back

GENUINE = sorted(p.parent for p in RESULTS.rglob("run.json"))


@pytest.mark.parametrize("run_dir", GENUINE, ids=[p.name for p in GENUINE])
def test_genuine_runs_verify_and_keep_their_figures(run_dir):
    from bench.store.costmodel import point_rows
    from bench.store.verify import verify_run

    run = read_summary(run_dir)
    verified = verify_run(run, lambda rel: (run_dir / rel).read_bytes() if (run_dir / rel).is_file() else None, "r")
    before, after = point_rows("r", run, include_invalid=True), point_rows("r", verified, include_invalid=True)
    numbers = [k for k, v in before[0].items() if isinstance(v, float) and k != "roofline_efficiency"]
    for a, b in zip(before, after):
        assert all(a[k] == b[k] or (math.isnan(a[k]) and math.isnan(b[k])) for k in numbers if a[k] is not None)
        assert b["valid"] <= a["valid"]  # the run's own finding is kept; the derived one may add to it


def test_an_honest_run_gives_back_its_own_figures_bit_for_bit(tmp_path):
    """Measured energy (a power series with its counter) included: the figures are recomputed
    from the same inputs as the run's, so the point rows are the same bytes, not just close."""
    from bench.store.costmodel import point_rows
    from bench.store.verify import verify_run

    run_dir = make_run(tmp_path / "runs", n_gpus=2, concurrencies=(1, 8), tokens_per_chunk=4)
    run = read_summary(run_dir)
    verified = verify_run(run, lambda rel: (run_dir / rel).read_bytes() if (run_dir / rel).is_file() else None, "r")
    assert point_rows("r", verified, include_invalid=True) == point_rows("r", run, include_invalid=True)
    assert [p.energy.flat() for p in verified.points] == [p.energy.flat() for p in run.points]
    assert verified.points[0].energy.energy_method == "nvml_counter"


# ---- properties: any non-finite, negative or altered figure is refused, naming it

FIGURES = [("metrics", "output_tok_s"), ("metrics", "total_tok_s"), ("metrics", "tok_s_per_gpu"),
           ("metrics", "ttft_s_p99"), ("metrics", "tpot_s_p50"), ("metrics", "interactivity_tok_s_user"),
           ("metrics", "error_rate"), ("energy", "avg_power_w"), ("energy", "energy_j"), ("energy", "j_per_token"),
           ("energy", "j_per_output_token"), ("roofline", "roofline_efficiency"), ("window", "window_s")]


class _Honest(tuple):
    def __repr__(self) -> str:  # hypothesis prints its arguments: not the whole run and its Parquet
        return "<an honest run and its files>"


@pytest.fixture(scope="module")
def honest(tmp_path_factory):
    run_dir = make_run(tmp_path_factory.mktemp("runs"), concurrencies=(4,))
    files = {p.relative_to(run_dir).as_posix(): p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    return _Honest((read_summary(run_dir), files.get))


def _with(run, group: str, key: str, value):
    point = run.points[0]
    changed = getattr(point, group).model_copy(update={key: value})
    return run.model_copy(update={"points": [point.model_copy(update={group: changed})]})


@pytest.mark.slow
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(figure=st.sampled_from(FIGURES),
       value=st.one_of(st.sampled_from([math.nan, math.inf, -math.inf]), st.floats(max_value=-1e-12)))
def test_any_non_finite_or_negative_figure_is_refused_naming_it(honest, figure, value):
    from bench.store.verify import verify_run

    run, read = honest
    with pytest.raises(StoreError) as err:
        verify_run(_with(run, *figure, value), read, "r")
    assert f"{figure[0]}.{figure[1]}" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.slow
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(figure=st.sampled_from(FIGURES), factor=st.one_of(st.floats(1 + 1e-6, 1e6), st.floats(1e-6, 1 - 1e-6)))
def test_any_figure_altered_beyond_rounding_is_refused_naming_it(honest, figure, factor):
    from bench.store.verify import verify_run

    run, read = honest
    stored = getattr(getattr(run.points[0], figure[0]), figure[1])
    altered = stored * factor if stored else factor  # a figure of 0 (no error) altered to FACTOR
    with pytest.raises(StoreError) as err:
        verify_run(_with(run, *figure, altered), read, "r")
    assert f"{figure[0]}.{figure[1]}" in str(err.value)


@given(st.one_of(st.text(max_size=5), st.floats(allow_nan=True), st.integers(max_value=0),
                 st.integers(min_value=100_001), st.booleans(), st.none(), st.lists(st.integers(), max_size=2)))
def test_any_gpu_count_but_a_positive_integer_is_refused_in_one_line(value):
    from bench.store.plausibility import n_gpus_of

    if value is None:  # not recorded: one GPU, the runner's default
        assert n_gpus_of({"n_gpus": value}) == 1
        return
    with pytest.raises(StoreError, match=r"^config.n_gpus: .* is not a GPU count"):
        n_gpus_of({"n_gpus": value})


def test_point_rows_refuse_an_impossible_gpu_count_instead_of_crashing(tmp_path):
    from bench.store.costmodel import point_rows

    run = read_summary(edit_run(_small(tmp_path / "runs", "r"), _n_gpus("many")))
    with pytest.raises(StoreError, match="config.n_gpus: 'many'"):
        point_rows("r", run)


def test_a_point_file_row_count_matches_the_verified_copy(tmp_path):
    url = str(tmp_path / "store")
    [done] = upload([_small(tmp_path / "runs", "r", invalid={4: "packed: differs from alone"})], url)
    rows = pq.read_table(point_file_of(tmp_path / "store", done.run_id)).to_pylist()
    assert [r["valid"] for r in rows] == [True, False]
    assert rows[1]["invalid_reasons"].startswith("packed: differs from alone")
