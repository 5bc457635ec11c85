#!/usr/bin/env python3
"""Remake docs/compare.png: the compare page of the committed results, with the published
reference, as headless Chromium draws it.

    python3 scripts/screenshot_report.py [--out docs/compare.png] [--height 1185]

Runs `bench compare results/cpu-host --model tiny-llama --reference` into a temporary
folder and screenshots the top of compare.html (title and the first plots). Needs
chromium (scripts/install.sh installs it; BENCH_CHROMIUM overrides) and playwright.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "compare.png")
    ap.add_argument("--width", type=int, default=1300)
    ap.add_argument("--height", type=int, default=1185)
    args = ap.parse_args()
    chromium = os.environ.get("BENCH_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        print("screenshot_report.py: error: no chromium (scripts/install.sh installs it)", file=sys.stderr)
        return 1
    from click.testing import CliRunner
    from playwright.sync_api import sync_playwright

    from bench.cli import cli

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "cmp"
        res = CliRunner().invoke(cli, ["compare", str(REPO / "results" / "cpu-host"), "--model", "tiny-llama",
                                       "--reference", "--out", str(out)])
        if res.exit_code != 0:
            print(res.output, file=sys.stderr)
            return 1
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": args.width, "height": args.height})
            page.goto((out / "compare.html").as_uri())
            page.wait_for_function("document.querySelectorAll('.js-plotly-plot').length > 1")
            args.out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(args.out))
            browser.close()
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
