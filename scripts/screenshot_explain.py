#!/usr/bin/env python3
"""Remake docs/explain.png: the `bench compare --explain` waterfall of the committed CPU results
(tiny Llama, vLLM bf16 vs fp32, results/cpu-host), as headless Chromium draws compare.html.

    python3 scripts/screenshot_explain.py [--out docs/explain.png]

Needs chromium (scripts/install.sh installs it; BENCH_CHROMIUM overrides) and playwright.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RUNS = ["20261124T002254Z_run-tiny-llama", "20261124T002410Z_run-tiny-llama"]  # bf16, fp32 (README.md of results/)
A, B = "cpu-host auto vllm", "cpu-host fp32 vllm"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "explain.png")
    args = ap.parse_args()
    chromium = os.environ.get("BENCH_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        print("screenshot_explain.py: error: no chromium (scripts/install.sh installs it)", file=sys.stderr)
        return 1
    from click.testing import CliRunner
    from playwright.sync_api import sync_playwright

    from bench.cli import cli

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "cmp"
        res = CliRunner().invoke(cli, ["compare", *(str(REPO / "results" / "cpu-host" / r) for r in RUNS),
                                       "--model", "tiny-llama", "--baseline", A, "--explain", A, B, "--out", str(out)])
        if res.exit_code != 0:
            print(res.output, file=sys.stderr)
            return 1
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1300, "height": 900})
            page.goto((out / "compare.html").as_uri())
            page.wait_for_function("document.querySelectorAll('.js-plotly-plot').length > 4")
            panel = page.locator(".js-plotly-plot").nth(4)  # the waterfall: the fifth figure of the page
            args.out.parent.mkdir(parents=True, exist_ok=True)
            panel.screenshot(path=str(args.out))
            browser.close()
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
