#!/usr/bin/env python3
"""Remake docs/time-breakdown.png: the "Where the time went" section of one run's report.html
(issue 22, docs/timing.md), as headless Chromium draws it.

    python3 scripts/screenshot_timing.py RUN_DIR [--out docs/time-breakdown.png]

Runs `bench report RUN_DIR` into a temporary folder and screenshots the section: its heading,
the stacked bar of the wall time and its two tables. Needs chromium (scripts/install.sh
installs it; BENCH_CHROMIUM overrides) and playwright.
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
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "time-breakdown.png")
    ap.add_argument("--width", type=int, default=1300)
    args = ap.parse_args()
    chromium = os.environ.get("BENCH_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        print("screenshot_timing.py: error: no chromium (scripts/install.sh installs it)", file=sys.stderr)
        return 1
    from click.testing import CliRunner
    from playwright.sync_api import sync_playwright

    from bench.cli import cli

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "report"
        res = CliRunner().invoke(cli, ["report", str(args.run_dir), "--out", str(out)])
        if res.exit_code != 0:
            print(res.output, file=sys.stderr)
            return 1
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": args.width, "height": 900})
            page.goto((out / "report.html").as_uri())
            page.wait_for_function("document.querySelector('#plot-time .main-svg') !== null")
            top = page.locator("h2", has_text="Where the time went").bounding_box()
            bottom = page.locator("#start-table").bounding_box()
            if top is None or bottom is None:
                print("screenshot_timing.py: error: the run has no time breakdown", file=sys.stderr)
                return 1
            clip = {"x": 0, "y": top["y"] - 8, "width": args.width, "height": bottom["y"] + bottom["height"] - top["y"] + 16}
            args.out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(args.out), clip=clip, full_page=True)
            browser.close()
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
