"""The published reference table (published.yaml): strict, faithful to its sources, kept
apart from measured data, and the sweep recipes under sweeps/anchors/ that reproduce it."""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

import bench
from bench.catalog import catalog_dir
from bench.catalog.published import FIGURES, load_published
from bench.cli import cli
from bench.errors import ConfigError
from bench.plan import load_sweep

REPO = Path(__file__).resolve().parent.parent
ANCHORS = sorted((REPO / "sweeps" / "anchors").glob("*"))
RESULTS = REPO / "results" / "cpu-host"

# Every figure as its publisher printed it (each entry's `where`), typed here apart from published.yaml: id -> figures.
EXPECTED = {
    "mlenergy-llama-3.1-8b-h100-s8": {"j_per_output_token": 0.455, "output_tok_s": 1070, "median_itl_ms": 7.3},
    "mlenergy-llama-3.1-8b-h100-s64": {"j_per_output_token": 0.119, "output_tok_s": 5147, "median_itl_ms": 11.5},
    "mlenergy-llama-3.1-8b-h100-s128": {"j_per_output_token": 0.095, "output_tok_s": 7037, "gpu_power_w": 669,
                                        "median_itl_ms": 16.5},
    "mlenergy-llama-3.1-8b-h100-s512": {"j_per_output_token": 0.070, "output_tok_s": 9806, "gpu_power_w": 688,
                                        "median_itl_ms": 47},
    "mlenergy-llama-3.1-8b-b200-s64": {"j_per_output_token": 0.110, "median_itl_ms": 9.0},
    "mlenergy-llama-3.1-8b-b200-s2048": {"j_per_output_token": 0.047, "output_tok_s": 14799},
    "mlenergy-llama-3.3-70b-h100x4-s128": {"j_per_output_token": 0.604, "output_tok_s_per_gpu": 974,
                                           "median_itl_ms": 28},
    "mlenergy-llama-3.3-70b-b200x2-s128": {"j_per_output_token": 0.481, "output_tok_s_per_gpu": 1987,
                                           "median_itl_ms": 28},
    "mlperf-v5.0-llama-2-70b-offline-h100x8": {"tok_s": 31307, "tok_s_per_gpu": 3913},
    "mlperf-v5.0-llama-2-70b-offline-h200x8": {"tok_s": 34988, "tok_s_per_gpu": 4374},
    "mlperf-v5.0-llama-2-70b-offline-b200x8": {"tok_s": 98858, "tok_s_per_gpu": 12357},
    "mlperf-v5.0-llama-2-70b-offline-b200x1": {"tok_s": 12269, "tok_s_per_gpu": 12269},
    "mlperf-v5.1-llama-2-70b-offline-dgx-b200": {"tok_s": 101527, "tok_s_per_gpu": 12691},
    "mlperf-v5.1-llama-2-70b-server-dgx-b200": {"tok_s": 99123},
    "mlperf-v5.1-llama-2-70b-interactive-dgx-b200": {"tok_s": 59545},
    "mlperf-v5.1-llama-2-70b-offline-gb200x4": {"tok_s": 51737, "tok_s_per_gpu": 12934},
    "semianalysis-v2-deepseek-r1-b200-50tps": {"usd_per_mtok_output": 0.56, "interactivity_tok_s_user": 50},
    "semianalysis-v2-deepseek-r1-b200-125tps": {"usd_per_mtok_output": 4, "interactivity_tok_s_user": 125},
    "semianalysis-v1-gpt-oss-120b-h100-90tps": {"tok_s_per_mw": 900_000, "interactivity_tok_s_user": 90},
    "semianalysis-v1-gpt-oss-120b-b200-90tps": {"tok_s_per_mw": 2_800_000, "interactivity_tok_s_user": 90},
}


def test_every_published_figure_as_in_the_sources():
    rows = {r.id: r for r in load_published()}
    assert set(rows) == set(EXPECTED)
    for rid, figures in EXPECTED.items():
        assert rows[rid].figures() == pytest.approx(figures), rid
        assert rows[rid].source == "published" and rows[rid].where and rows[rid].as_published


def test_uncertainty_travels_with_the_figures():
    rows = {r.id: r for r in load_published()}
    hopper = rows["mlperf-v5.0-llama-2-70b-offline-h100x8"]
    assert hopper.precision == "unverified (likely fp8)" and any("not verified" in n for n in hopper.notes)
    assert all(any("mirror" in n for n in r.notes) for r in rows.values() if r.id.startswith("mlperf-"))
    assert all(r.approximate for r in rows.values() if r.id.startswith("semianalysis-"))
    assert any("TDP, not measured" in n for n in rows["semianalysis-v1-gpt-oss-120b-b200-90tps"].notes)
    assert any("TCO assumptions" in n for n in rows["semianalysis-v2-deepseek-r1-b200-50tps"].notes)
    assert rows["mlenergy-llama-3.3-70b-h100x4-s128"].approximate  # "~28 ms"


def _copy_catalog(tmp_path: Path, rows: list) -> Path:
    shutil.copy(catalog_dir() / "models.yaml", tmp_path / "models.yaml")
    shutil.copytree(catalog_dir() / "hardware", tmp_path / "hardware")
    (tmp_path / "published.yaml").write_text(yaml.safe_dump(rows))
    return tmp_path


@pytest.mark.parametrize(("change", "message"), [
    ({"colour": "red"}, "unknown field 'colour'"),
    ({"source": "measured"}, "field 'source'"),
    ({"model": "llama-9"}, "unknown model 'llama-9'"),
    ({"hardware": "h900"}, "unknown hardware 'h900'"),
    ({"tok_s": "fast"}, "field 'tok_s'"),
    ({"tok_s": None}, "no figure"),
])
def test_published_file_is_strict(tmp_path, monkeypatch, change, message):
    row = {"id": "x-1", "source": "published", "publisher": "P", "where": "w", "model": "llama-3.1-8b",
           "model_as_published": "L", "precision": "bf16", "hardware": "h100-sxm", "hardware_as_published": "H",
           "workload": "w", "load": "l", "as_published": "1 tok/s", "tok_s": 1}
    monkeypatch.setenv("BENCH_CATALOG_DIR", str(_copy_catalog(tmp_path, [{**row, **change}])))
    with pytest.raises(ConfigError, match=message) as err:
        load_published()
    assert "published.yaml: entry 'x-1'" in str(err.value) and "\n" not in str(err.value)


def test_the_measured_cost_model_never_reads_published_figures(monkeypatch):
    store = Path(bench.__file__).parent / "store"
    for path in store.rglob("*.py"):
        text = path.read_text()
        modules = {n.module for n in ast.walk(ast.parse(text)) if isinstance(n, ast.ImportFrom)} | {
            a.name for n in ast.walk(ast.parse(text)) if isinstance(n, ast.Import) for a in n.names}
        assert not any(m and ("published" in m or "analysis" in m) for m in modules), path
        assert "published.yaml" not in text, path
    from bench.catalog import published
    from bench.store.costmodel import build_table, runs_from_dirs

    def refuse(*_a, **_k):
        raise AssertionError("the cost-model table read published.yaml")

    monkeypatch.setattr(published, "load_published", refuse)
    monkeypatch.setattr(published, "_load", refuse)
    table = build_table(runs_from_dirs([RESULTS]))
    assert len(table) > 0 and "source" not in table and set(table["hardware"]) == {"cpu-host"}


def test_every_recipe_is_referenced_and_matches_its_figures():
    rows = load_published()
    recipes = {r.recipe for r in rows}
    assert ANCHORS and {f"sweeps/anchors/{p.name}" for p in ANCHORS} == recipes
    for row in rows:
        sweep = load_sweep(REPO / row.recipe)
        models = [m if isinstance(m, str) else m.key for m in sweep.models]
        assert models == [row.model] and sweep.hardware == row.hardware, row.id
        if row.n_gpus:
            assert sweep.devices == row.n_gpus, row.id
        if row.max_num_seqs and sweep.engine_args.max_num_seqs != [None]:
            assert row.max_num_seqs <= max(sweep.engine_args.max_num_seqs), row.id
            assert row.max_num_seqs in sweep.loads[0].concurrency, row.id  # the batch the anchor ran


@pytest.mark.parametrize("path", ANCHORS, ids=[p.name for p in ANCHORS])
def test_bench_plan_accepts_every_anchor_recipe(path):
    res = CliRunner().invoke(cli, ["plan", str(path), "--json"])
    assert res.exit_code == 0, res.output
    assert '"points"' in res.output


@pytest.mark.slow
def test_compare_committed_results_with_the_reference(tmp_path):
    out = tmp_path / "cmp"
    res = CliRunner().invoke(cli, ["compare", str(RESULTS), "--model", "tiny-llama", "--reference", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "published figures (source: published, not measured here; none of tiny-llama" in res.output
    assert "mlenergy-llama-3.1-8b-h100-s512" in res.output
    report = (out / "report.md").read_text()
    section = report.split("## Published figures (source: published, not measured here)")[1].split("## Plots")[0]
    assert section.count("| published |") == len(EXPECTED) and "for scale only" in section
    assert "published" not in (out / "compare.csv").read_text()  # the measured table stays measured
    assert (out / "compare.html").stat().st_size > 1_000_000


def test_reference_of_the_compared_model_only(tmp_path):
    from bench.analysis.reference import ref_points, select_published

    rows, matched = select_published("llama-3.1-8b")
    assert matched and {r.model for r in rows} == {"llama-3.1-8b"} and len(rows) == 6
    points = ref_points(rows, "output_tok_s_per_gpu")
    assert len(points) == 4  # the B200 rows lack either tok/s or ITL: tabled, not drawn
    s512 = next(p for p in points if p.row.id.endswith("s512"))
    assert s512.x == pytest.approx(1000 / 47) and s512.y == 9806 and "1 / median ITL" in s512.derived[0]
    seventy = ref_points(select_published("llama-3.3-70b")[0], "output_tok_s_per_gpu")
    assert sorted(p.y for p in seventy) == [974, 1987] and all(len(p.derived) == 1 for p in seventy)
    assert all(f in FIGURES for f in ("tok_s", "usd_per_mtok_output"))
