"""The HTML reports opened in headless Chromium (Debian's `chromium`, driven by Playwright):
they load offline with no console error, draw the expected series and points, mark
invalid and published points, and their tables sort.

One Chromium serves the session (tests/chromium.py), a fresh page per test. scripts/install.sh
installs chromium where it is missing; set BENCH_CHROMIUM to use another Chromium or Chrome,
or BENCH_NO_BROWSER=1 to skip these tests knowingly.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from result_factory import make_run

from bench.cli import cli

pytest_plugins = ["chromium"]  # the module's one Chromium: `browser` and `open_page`
RESULTS = Path(__file__).resolve().parent.parent / "results" / "cpu-host"
TRACES_JS = """() => Array.from(document.querySelectorAll('.js-plotly-plot')).map(d => d.data.map(t => ({
    kind: t.meta.kind, name: t.name, n: t.x ? t.x.length : 0, symbol: t.marker ? t.marker.symbol : null,
    visible: t.visible !== false})))"""


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    """compare.html of synthetic runs (one invalid point), of the committed results with
    --reference, and report.html of a synthetic run with power and an invalid point."""
    root = tmp_path_factory.mktemp("browser")
    res = root / "results"
    make_run(res / "h100", hardware="h100-sxm", speed=1.0, invalid={16: "client saturation: 6.1 in flight of 16"})
    make_run(res / "b200", hardware="b200", speed=2.5)
    run = make_run(root / "one", n_gpus=2, invalid={8: "client saturation: 6.1 in flight of 8"})
    runner = CliRunner()
    for args in (["compare", str(res), "--model", "tiny-llama", "--scenario", "rental-on-demand",
                  "--out", str(root / "syn")],
                 ["compare", str(RESULTS), "--model", "tiny-llama", "--reference", "--out", str(root / "ref")],
                 ["report", str(run), "--out", str(root / "run")]):
        out = runner.invoke(cli, args)
        assert out.exit_code == 0, out.output
    return {"synthetic": root / "syn" / "compare.html", "reference": root / "ref" / "compare.html",
            "run": root / "run" / "report.html"}


@pytest.mark.slow
def test_synthetic_compare_page(open_page, pages):
    page, problems = open_page(pages["synthetic"])
    plots = page.evaluate(TRACES_JS)
    assert page.evaluate("document.querySelectorAll('script[src], link[href]').length") == 0
    assert len(plots) == 4  # throughput, energy, $/Mtok, latency
    throughput = plots[0]
    assert [(t["kind"], t["n"]) for t in throughput] == [
        ("measured", 5), ("front", 5), ("measured", 4), ("front", 4), ("invalid", 1)]
    assert throughput[-1]["symbol"] == "x-thin-open" and throughput[-1]["name"] == "h100-sxm bf16 vllm (invalid)"
    cost = plots[2]
    assert [t["n"] for t in cost if t["kind"] == "measured"] == [5, 4]  # one scenario asked for
    assert sum(t["kind"] == "invalid" for t in plots[3]) == 4  # TTFT and TPOT, p50 and p99
    assert page.locator("#points-table tr.invalid").count() == 1
    assert problems == []


@pytest.mark.slow
def test_committed_results_with_reference(open_page, pages):
    page, problems = open_page(pages["reference"])
    plots = page.evaluate(TRACES_JS)
    throughput, energy, cost = plots[0], plots[1], plots[2]
    published = [t for t in throughput if t["kind"] == "published"]
    assert sum(t["n"] for t in published) == 6 and {t["symbol"] for t in published} == {"star"}
    assert sum(t["n"] for t in energy if t["kind"] == "published") == 7
    assert sum(t["n"] for t in cost if t["kind"] == "published" and t["visible"]) == 2
    measured = {t["name"]: t["n"] for t in throughput if t["kind"] == "measured"}
    # 2026-11-24: hf 3 valid, vllm 1 (+5 starved), fp32 2 (+1); 2026-12-01: 5 default runs x 3 and 3 endpoint runs x 3
    assert measured == {"cpu-host auto hf": 3, "cpu-host auto vllm": 1 + 15, "cpu-host fp32 vllm": 2,
                        "cpu-host auto endpoint": 9}
    invalid = {t["name"]: t["n"] for t in throughput if t["kind"] == "invalid"}
    assert invalid == {"cpu-host auto vllm (invalid)": 5, "cpu-host fp32 vllm (invalid)": 1}
    assert page.locator("#reference-table tr.published").count() == 20
    assert page.locator("#points-table tr.invalid").count() == 6
    # hover text of a published point names its source
    assert "source: published" in page.evaluate(
        "document.querySelectorAll('.js-plotly-plot')[0].data.find(t => t.meta.kind === 'published').hovertext[0]")
    assert problems == []


def column(page, table: str, index: int) -> list[str]:
    return page.eval_on_selector_all(f"#{table} tbody tr", f"rows => rows.map(r => r.cells[{index}].textContent)")


@pytest.mark.slow
def test_run_page_and_sorting(open_page, pages):
    page, problems = open_page(pages["run"])
    plots = page.evaluate(TRACES_JS)
    assert len(plots) == 5  # throughput, energy, latency, $/Mtok output, power
    samples = [t["n"] for t in plots[4]]
    assert len(samples) == 2 and samples[0] == samples[1] > 2  # one line per GPU of the 2-GPU run, every sample
    assert any(t["kind"] == "invalid" and t["symbol"] == "x-thin-open" for t in plots[0])
    headers = page.eval_on_selector_all("#points-table th", "hs => hs.map(h => h.textContent)")
    i = headers.index("tok/s/user")
    before = [float(v.split()[0]) for v in column(page, "points-table", i)]
    page.locator("#points-table th").nth(i).click()
    ascending = [float(v.split()[0]) for v in column(page, "points-table", i)]
    assert ascending == sorted(before) and ascending != before
    page.locator("#points-table th").nth(i).click()
    assert [float(v.split()[0]) for v in column(page, "points-table", i)] == sorted(before, reverse=True)
    page.locator("#points-table th").nth(0).click()  # text column: point ids in order
    ids = column(page, "points-table", 0)
    assert ids == sorted(ids)
    assert problems == []
