"""Everything shown to people is escaped for its medium (issue 17, defect 6): ids, model
names and reasons from runs and stores go through the real rendering (plotly figures,
report.md read by a GFM renderer with raw HTML and autolinks on, the CSV files,
`bench ls`, matplotlib PNGs, the error line) and show as text, never as markup, a
formula or a terminal command. tests/test_browser.py-style: one page in the session's headless
Chromium (tests/chromium.py).
"""

from __future__ import annotations

import json
import re

import markdown_it
import pandas as pd
import pytest
from click.testing import CliRunner
from result_factory import make_run

from bench.cli import cli
from bench.errors import StoreError

pytest_plugins = ["chromium"]  # a Chromium for this module's page test: `open_page`

IMG = '<img src=x onerror="window.__pwned=1">'
LINK = '<a href="https://evil.example/">click</a>'
FORMULA = '=HYPERLINK("https://evil.example","x")'
TITLE = "\x1b]0;pwned\x07\x1b]52;c;cHduZWQ=\x07\x1b[2J"  # retitle, write the clipboard (OSC 52), clear
MATH = "$\\frac{$"  # a malformed mathtext: matplotlib's savefig raised on it

HOSTILE_HW = f"h100{IMG}"
HOSTILE_ENGINE = f"vllm{LINK}"
HOSTILE_RUN = f"{FORMULA} www.evil.example {LINK}"


def test_md_text_is_plain_when_harmless_and_a_code_span_otherwise():
    from bench.escape import md_text

    assert md_text("tiny-llama p_c16 0.5 (invalid) n/a (TPOT 0) 1.2e+05") == "tiny-llama p_c16 0.5 (invalid) n/a (TPOT 0) 1.2e+05"
    assert md_text("a|b <x>") == "`a\\|b <x>`"
    assert md_text("x `y`") == "`` x `y` ``"
    assert md_text("see https://e.x") == "`see https://e.x`" and md_text("www.e.x") == "`www.e.x`"
    assert md_text("two\nlines") == "two lines"


def test_csv_cells_that_a_spreadsheet_would_evaluate_are_quoted():
    from bench.escape import csv_cell, csv_safe

    for bad in ("=1+1", "+1", "-1+2", "@SUM(A1)", "\tx", "\rx"):
        assert csv_cell(bad) == "'" + bad
    assert csv_cell("h100-sxm") == "h100-sxm" and csv_cell(-1.5) == -1.5
    frame = csv_safe(pd.DataFrame({"hardware": [FORMULA, "b200"], "tok_s": [-1.0, 2.0]}))
    assert frame["hardware"].tolist() == ["'" + FORMULA, "b200"] and frame["tok_s"].tolist() == [-1.0, 2.0]


def test_terminal_text_shows_control_characters_as_escapes():
    from bench.escape import plot_text, terminal_text

    assert terminal_text(f"run{TITLE}\u202eok") == "run\\x1b]0;pwned\\x07\\x1b]52;c;cHduZWQ=\\x07\\x1b[2J\\u202eok"
    assert terminal_text("a\nb\tc", keep="\n\t") == "a\nb\tc"
    assert plot_text(IMG) == '&lt;img src=x onerror="window.__pwned=1"&gt;'


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """compare and report of runs whose hardware, engine, run id and invalid reason are hostile."""
    root = tmp_path_factory.mktemp("hostile")
    results = root / "results"
    make_run(results / "a", hardware=HOSTILE_HW, engine=HOSTILE_ENGINE, name="hostile-run",
             invalid={16: f"{FORMULA} {IMG}"})
    make_run(results / "b", hardware="b200", speed=2.0)
    run_dir = next((results / "a").iterdir())
    data = json.loads((run_dir / "run.json").read_text())
    data["run_id"] = HOSTILE_RUN
    (run_dir / "run.json").write_text(json.dumps(data))
    runner = CliRunner()
    out = runner.invoke(cli, ["compare", str(results), "--model", "tiny-llama", "--out", str(root / "cmp")])
    assert out.exit_code == 0, out.output
    out = runner.invoke(cli, ["report", str(run_dir), "--out", str(root / "run")])
    assert out.exit_code == 0, out.output
    return root


def _rendered_markdown(path) -> str:
    """report.md as a GFM renderer shows it: raw HTML passed through, bare URLs linked."""
    return markdown_it.MarkdownIt("gfm-like").render(path.read_text())


@pytest.mark.slow
@pytest.mark.parametrize("report", ["cmp", "run"])
def test_report_md_renders_no_html_link_or_image_from_a_run(hostile, report):
    html = _rendered_markdown(hostile / report / "report.md")
    images = re.findall(r"<img[^>]*>", html)
    assert all(re.fullmatch(r'<img src="[a-z0-9_-]+\.png" alt="[a-z0-9_-]+" />', i) for i in images), images
    assert "<img src=x" not in html and "<a href=\"https://evil" not in html
    assert "evil.example" not in " ".join(re.findall(r'<a href="[^"]*"', html))
    assert "&lt;img src=x onerror=" in html  # shown, as text


def _labels(fig) -> list[str]:
    out = [str(fig.layout.title.text or "")]
    for t in fig.data:
        out.append(str(t.name or ""))
        hover = t.hovertext if t.hovertext is not None else []
        out += [str(h) for h in (hover if isinstance(hover, (list, tuple)) else [hover])]
    return out


@pytest.mark.slow
def test_plotly_labels_show_hostile_ids_as_text(hostile):
    from bench.analysis.pareto import Operating
    from bench.analysis.report import compare_report
    from bench.store.costmodel import build_table, runs_from_dirs

    runs = runs_from_dirs([hostile / "results"])
    rep = compare_report(build_table(runs), runs, "tiny-llama", hostile / "api", Operating(), "b200")
    labels = [label for fig in rep.figures.values() for label in _labels(fig)]
    joined = "\n".join(labels)
    assert "<img" not in joined and "<a " not in joined and "<a>" not in joined
    assert "h100&lt;img src=x onerror=" in joined and "vllm&lt;a href=" in joined
    assert any("run =HYPERLINK" in label for label in labels)  # hover text names the run, escaped


@pytest.mark.slow
def test_csv_files_never_start_a_cell_with_a_formula(hostile):
    from bench.store.costmodel import build_table, runs_from_dirs, table_bytes

    points = (hostile / "run" / "points.csv").read_text()
    assert "'=HYPERLINK" in points and not re.search(r'(^|,)"?=HYPERLINK', points, re.MULTILINE)
    table = build_table(runs_from_dirs([hostile / "results"]))
    table.loc[table.index[0], "hardware"] = FORMULA
    csv = table_bytes(table)["csv"].decode()
    assert "'=HYPERLINK" in csv and not re.search(r'(^|,)"?=HYPERLINK', csv, re.MULTILINE)


@pytest.mark.slow
def test_png_plots_with_a_dollar_in_a_label_are_written(tmp_path):
    results = tmp_path / "results"
    run = make_run(results / "a", hardware=f"h100{MATH}", engine=f"vllm{MATH}")
    make_run(results / "b", hardware="b200", speed=2.0)
    runner = CliRunner()
    for args in (["compare", str(results), "--model", "tiny-llama", "--out", str(tmp_path / "cmp")],
                 ["report", str(run), "--out", str(tmp_path / "run")]):
        out = runner.invoke(cli, args)
        assert out.exit_code == 0, out.output
    for folder in ("cmp", "run"):
        assert (tmp_path / folder / "throughput_vs_interactivity.png").stat().st_size > 1000


def test_bench_ls_prints_no_escape_sequence_from_a_store(tmp_path):
    from bench.store import upload

    url = str(tmp_path / "store")
    upload([make_run(tmp_path / "runs", hardware=f"h100{TITLE}", engine=f"vllm{TITLE}")], url)
    res = CliRunner().invoke(cli, ["ls", url])
    assert res.exit_code == 0, res.output
    assert "\x1b" not in res.output and "\x07" not in res.output
    assert "h100\\x1b]0;pwned\\x07" in res.output


def test_an_error_line_prints_no_escape_sequence():
    from bench.cli import BenchClickError

    err = BenchClickError(StoreError(f"run r{TITLE}: refused (key=sk-{'a' * 24})"))
    import io

    buf = io.StringIO()
    err.show(file=buf)
    assert "\x1b" not in buf.getvalue() and "sk-aaaa" not in buf.getvalue()


@pytest.mark.slow
def test_a_hostile_label_neither_runs_nor_links_in_chromium(open_page, hostile):
    """The page in headless Chromium: no <img> is created, nothing sets window.__pwned, no
    link to the attacker exists in the legends or hover labels, the text shows as typed."""
    page, problems = open_page(hostile / "cmp" / "compare.html")
    plot = page.locator(".js-plotly-plot").first
    box = plot.bounding_box()
    for dx in range(0, int(box["width"]), 12):  # hover across the plot: hover labels are drawn
        page.mouse.move(box["x"] + dx, box["y"] + box["height"] / 2)
    assert page.evaluate("window.__pwned") is None
    assert page.evaluate("document.querySelectorAll('img').length") == 0
    hrefs = page.evaluate("Array.from(document.querySelectorAll('a')).map(a => a.getAttribute('href') "
                          "|| a.getAttribute('xlink:href') || '')")
    assert not any("evil.example" in h for h in hrefs), hrefs
    legend = page.evaluate("Array.from(document.querySelectorAll('.legendtext')).map(t => t.textContent)")
    assert any('h100<img src=x onerror="window.__pwned=1">' in t for t in legend), legend
    assert problems == []
