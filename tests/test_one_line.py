"""One `one_line` (bench.errors, issue 19 item 3): every message bench writes from a text it did
not compose is one line of at most ONE_LINE_CHARS characters, redacted before it is cut."""

from __future__ import annotations

import json

import pytest

from bench.errors import ONE_LINE_CHARS, one_line
from bench.plan import EngineConfig, Plan, PointSpec
from bench.run.runner import RunEnvironment, execute
from bench.telemetry.fake_nvml import FakeNvmlTelemetry
from bench.testing.fake_device import fake_device

SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"  # an AWS secret key's shape: 40 characters


def test_one_line_escapes_each_break_and_cuts_at_one_limit():
    assert one_line("  ValueError: 1 error\n  field x\r\n\tbad  ") == "ValueError: 1 error\\nfield x\\nbad"
    assert one_line("a\u2028b\x85c") == "a\\nb\\nc"
    assert one_line(KeyError("k")) == "'k'"
    long = one_line("x" * (ONE_LINE_CHARS + 50))
    assert len(long) == ONE_LINE_CHARS and long.endswith("…")
    assert one_line("y" * ONE_LINE_CHARS) == "y" * ONE_LINE_CHARS


def test_a_helpers_error_keeps_the_lines_after_the_first():
    """The fleet backends' helper kept the first line only: a library error whose first line is
    a heading lost its reason."""
    from bench.fleet.backends.base import library_error

    error = library_error("ray", ConnectionError("could not connect:\n  no head node at 10.0.0.1:6379"))
    assert str(error) == "ray: ConnectionError: could not connect:\\nno head node at 10.0.0.1:6379"


def test_a_failed_runs_error_is_redacted_before_it_is_cut(tmp_path):
    """The runner cut its error at 500 characters, then redacted it: a secret across the cut was
    no longer a secret's shape and its first characters reached run.json."""
    cfg = EngineConfig(model="tiny-llama", engine="endpoint", endpoint_url="http://127.0.0.1:9")
    plan = Plan(engine_configs=[cfg], name="cut", n_devices=1, telemetry="none", points=[PointSpec(
        point_id=f"{cfg.config_id()}_w0_c1_r0", engine_config_id=cfg.config_id(),
        workload={"kind": "random", "input_len": 8, "output_len": 4}, load={"kind": "concurrency", "concurrency": 1},
        n_warmup=0, n_requests=1)])
    env = RunEnvironment(device=fake_device("nvidia", 1, "Fake"), hardware=None,
                         telemetry_factory=FakeNvmlTelemetry([100.0]), idle_baseline_s=0.0)
    message = "." * (490 - len("RuntimeError: ")) + " " + SECRET  # the secret starts at 491, across 500

    def fail(event):
        raise RuntimeError(message)

    with pytest.raises(RuntimeError):
        execute(plan, tmp_path, env, on_event=fail)
    error = json.loads((tmp_path / "run.json").read_text())["error"]
    assert SECRET[:8] not in error and len(error) <= ONE_LINE_CHARS
