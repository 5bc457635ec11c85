"""One headless Chromium (Debian's `chromium`, driven by Playwright) per test module.

A pytest plugin: a test module that opens pages names it in `pytest_plugins = ["chromium"]`
and takes the `open_page` fixture: each test opens its own pages, each in a fresh browser
context, so no cookie, storage or script state passes between tests; the module-scoped
`browser` beneath is launched once per module. Not once per session: while Playwright's sync
API is started it holds an event loop running on the main thread, so every later test of the
process that calls asyncio.run() would fail ("cannot be called from a running event loop":
seen when it was session-scoped).

scripts/install.sh installs chromium where it is missing; set BENCH_CHROMIUM to use
another Chromium or Chrome, or BENCH_NO_BROWSER=1 to skip these tests knowingly.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]


def chromium_path() -> str:
    """The Chromium executable (BENCH_CHROMIUM, else chromium on PATH); fails when absent."""
    if os.environ.get("BENCH_NO_BROWSER") == "1":
        pytest.skip("BENCH_NO_BROWSER=1: browser tests skipped on request")
    found = os.environ.get("BENCH_CHROMIUM") or next(
        (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
    if not found:
        pytest.fail("no chromium: run scripts/install.sh (apt-get install chromium) or set BENCH_CHROMIUM")
    return found


@pytest.fixture(scope="module")
def browser():
    """A launched Chromium, shared by the tests of one module; closed at the module's end."""
    path = chromium_path()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is not installed: pip install -e .[dev]")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, args=LAUNCH_ARGS)
        yield b
        b.close()


def _open(browser, path: Path):
    page = browser.new_page(viewport={"width": 1300, "height": 900})
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("request", lambda r: problems.append(f"request {r.url}") if not r.url.startswith("file://") else None)
    page.goto(path.as_uri())
    page.wait_for_function("document.querySelectorAll('.js-plotly-plot').length === "
                           "document.querySelectorAll('.plotly-graph-div').length")
    return page, problems


@pytest.fixture
def open_page(browser):
    """A function: path -> (page, problems), the file opened in a fresh context (a page of its
    own) with its console errors, page errors and any request that leaves the file. Every
    page it opened is closed (with its context) when the test ends, passed or failed."""
    pages = []

    def open_(path: Path):
        page, problems = _open(browser, path)
        pages.append(page)
        return page, problems

    yield open_
    for page in pages:
        page.close()
