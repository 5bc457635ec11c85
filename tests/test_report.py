"""Plots, the comparison report across hardware and the one-run report, on synthetic runs."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from result_factory import make_run

from bench.analysis.plots import (
    metric_vs_interactivity,
    power_over_time,
    throughput_vs_interactivity,
)
from bench.cli import cli
from bench.store import upload
from bench.store.costmodel import build_table, runs_from_dirs

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png(path: Path) -> None:
    data = Path(path).read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 5000, path


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Five synthetic runs, shared by the module's tests: they read them, never write there."""
    root = tmp_path_factory.mktemp("report") / "results"
    make_run(root / "h100", hardware="h100-sxm", speed=1.0, invalid={16: "client saturation"})
    make_run(root / "h100", hardware="h100-sxm", speed=1.6, quantization="fp8")
    make_run(root / "b200", hardware="b200", speed=2.5)
    make_run(root / "mi300x", hardware="mi300x", speed=1.2)
    make_run(root / "other", hardware="h100-sxm", model="tiny-qwen3-moe")
    return root


def _legend(plot) -> list[str]:
    return [t.get_text() for t in plot.figure.axes[0].get_legend().get_texts()]


@pytest.mark.slow
def test_plots_draw_one_series_per_hardware_precision_engine(results, tmp_path):
    table = build_table(runs_from_dirs([results]))
    table = table[table["model"] == "tiny-llama"]
    plot = throughput_vs_interactivity(table, tmp_path / "t.png")
    assert_png(plot.path)
    assert plot.n_series == 4
    assert _legend(plot) == ["b200 bf16 vllm", "h100-sxm bf16 vllm", "h100-sxm fp8 vllm", "mi300x bf16 vllm"]
    ax = plot.figure.axes[0]
    assert len(ax.get_lines()) == 4 and len(ax.collections) == 4  # front lines + all measured points
    cost = metric_vs_interactivity(table, "usd_per_mtok_output__rental-on-demand", tmp_path / "c.png")
    assert_png(cost.path)
    assert cost.n_series == 4
    energy = metric_vs_interactivity(table[table["hardware"] == "b200"], "j_per_token", tmp_path / "j.png")
    assert energy.n_series == 1 and len(energy.figure.axes[0].get_lines()[0].get_xdata()) == 5


@pytest.mark.slow
def test_power_plot_has_one_line_per_device(tmp_path):
    power = pd.DataFrame([{"t_s": 100.0 + 0.1 * k, "device": d, "power_w": 300.0 + d + k} for k in range(50)
                          for d in range(4)])
    plot = power_over_time(power, tmp_path / "p.png", windows=[("c0001", 101.0, 103.0)])
    assert_png(plot.path)
    assert plot.n_series == 4
    assert min(plot.figure.axes[0].get_lines()[0].get_xdata()) == 0.0


@pytest.mark.slow
def test_empty_plot_still_writes_a_png(tmp_path):
    plot = throughput_vs_interactivity(build_table([]), tmp_path / "e.png")
    assert plot.path.read_bytes()[:8] == PNG_MAGIC and plot.n_series == 0
    assert [t.get_text() for t in plot.figure.axes[0].texts] == ["no valid points"]


@pytest.mark.slow
@pytest.mark.parametrize("scale", [1e-4, 1.0, 4e5])
def test_png_labels_fit_inside_the_figure(tmp_path, scale):
    """The plots against interactivity are laid out by fixed margins (not tight_layout): the
    title, axis labels and every tick label stay inside the image, from J/token-sized values
    (0.0004) to throughput-sized ones (1.2e6)."""
    rows = [{"model": "m", "hardware": hw, "precision": "bf16", "kv_cache_dtype": "auto", "engine": "vllm",
             "n_gpus": 1, "interactivity_tok_s_user": x, "j_per_token": scale * (i + 1) * k}
            for hw, k in (("h100-sxm", 1.0), ("b200", 3.3)) for i, x in enumerate([5.0, 20.0, 60.0, 120.0])]
    plot = metric_vs_interactivity(pd.DataFrame(rows), "j_per_token", tmp_path / "p.png",
                                   "m: energy per token, a title of some length")
    fig = plot.figure
    drawn = fig.axes[0].get_tightbbox(fig.canvas.get_renderer())  # title, labels, the tick labels drawn
    assert fig.bbox.x0 <= drawn.x0 and drawn.x1 <= fig.bbox.x1 and fig.bbox.y0 <= drawn.y0 and drawn.y1 <= fig.bbox.y1


@pytest.mark.slow
def test_compare_cli_on_local_results(results, tmp_path):
    out = tmp_path / "cmp"
    res = CliRunner().invoke(cli, ["compare", str(results), "--model", "tiny-llama", "--at-interactivity", "50",
                                   "--scenario", "rental-on-demand", "--out", str(out)])
    assert res.exit_code == 0, res.output
    table = pd.read_csv(out / "compare.csv").set_index("series")
    assert len(table) == 4
    assert table.loc["b200 bf16 vllm", "status"].startswith("outside measured range")
    assert table.loc["h100-sxm bf16 vllm", "tok_s_per_gpu_vs_baseline"] == pytest.approx(1.0)
    # the synthetic model: mi300x at speed 1.2 vs h100 at 1.0, both interpolated at 50 tok/s/user
    mi = table.loc["mi300x bf16 vllm"]
    assert mi["status"] == "interpolated" and mi["tok_s_per_gpu_vs_baseline"] > 1
    assert mi["usd_per_mtok_output__rental-on-demand_vs_baseline"] > 0
    report = (out / "report.md").read_text()
    assert "interactivity 50 tok/s/user" in report and "Synthetic data" in report
    for name in ("throughput_vs_interactivity.png", "j_per_token_vs_interactivity.png",
                 "usd_per_mtok_rental-on-demand.png"):
        assert f"]({name})" in report
        assert_png(out / name)
    assert report.count("(SYNTHETIC)") == 4  # every run used, and only those of this model
    assert "tiny-qwen3-moe" not in report


@pytest.mark.slow
def test_compare_from_a_store_with_ttft_limit(results, tmp_path):
    url = str(tmp_path / "store")
    upload([p.parent for p in results.rglob("run.json")], url)
    out = tmp_path / "cmp"
    res = CliRunner().invoke(cli, ["compare", "--store", url, "--model", "tiny-llama", "--ttft-slo", "0.095",
                                   "--out", str(out)])
    assert res.exit_code == 0, res.output
    table = pd.read_csv(out / "compare.csv").set_index("series")
    assert set(table["status"]) == {"measured"}
    assert (table["ttft_s_p99"] <= 0.095).all()
    # synthetic h100 bf16: only concurrency 1 (p99 TTFT 0.09 s, 100 tok/s/user) meets 0.095 s
    assert table.loc["h100-sxm bf16 vllm", "interactivity_tok_s_user"] == pytest.approx(100.0)
    assert "20260115-tiny-llama-" in (out / "report.md").read_text()


@pytest.mark.slow
def test_compare_refuses_bad_arguments(results, tmp_path):
    runner = CliRunner()
    res = runner.invoke(cli, ["compare", str(results), "--model", "nope", "--out", str(tmp_path / "x")])
    assert res.exit_code != 0 and "no valid load points for model 'nope'" in res.output
    res = runner.invoke(cli, ["compare", "--model", "tiny-llama"])
    assert res.exit_code != 0 and "either --store URL or RESULTS" in res.output
    res = runner.invoke(cli, ["compare", str(results), "--model", "tiny-llama", "--scenario", "free-lunch",
                              "--out", str(tmp_path / "y")])
    assert res.exit_code != 0 and "free-lunch" in res.output


@pytest.mark.slow
def test_run_report_lists_every_point_with_reasons(tmp_path):
    run = make_run(tmp_path / "runs", n_gpus=2, invalid={8: "client saturation: 6.1 in flight of 8"}, failed=(16,))
    out = tmp_path / "rep"
    res = CliRunner().invoke(cli, ["report", str(run), "--out", str(out)])
    assert res.exit_code == 0, res.output
    text = (out / "report.md").read_text()
    assert "client saturation: 6.1 in flight of 8" in text and "engine died" in text
    assert text.split("## Cost")[0].count("| c00") == 5
    assert '"engine_version": "0.0.0-synthetic"' in text
    cost = text.split("## Cost as stored with the run")[1].split("## Plots")[0]
    assert "$/Mtok output (synthetic-rental)" in cost and cost.count("| c00") == 4  # the failed point has none
    points = pd.read_csv(out / "points.csv")
    assert list(points["valid"]) == [True, True, True, False, False]
    for name in ("throughput_vs_interactivity.png", "j_per_token_vs_interactivity.png", "power_over_time.png"):
        assert_png(out / name)
