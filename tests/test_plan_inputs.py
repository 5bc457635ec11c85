"""Every input file is checked before any engine starts (issue 18, defect 7): trace, sessions
and prompt files are read when the plan is built, so a missing, empty, malformed or backwards
file, or a replay that would last for ages, is one line from `bench plan` and `bench sweep`
before a run folder or an engine exists; `bench plan` shows a trace's real request count and
replay time."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from bench.cli import cli
from bench.errors import ConfigError
from bench.plan import build_plan, sweep_from_dict

DATA = Path(__file__).parent / "data" / "traces"
MOONCAKE = DATA / "mooncake_sample.jsonl"


def _sweep(tmp_path: Path, workload: dict, **top) -> Path:
    data = {"name": "inputs", "models": ["tiny-llama"], "workloads": [workload],
            "loads": [{"kind": "trace"}] if workload["kind"] == "trace" else [{"concurrency": 1}], **top}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _trace(tmp_path: Path, text: str, name: str = "t.jsonl", **fields) -> dict:
    path = tmp_path / name
    path.write_text(text)
    return {"kind": "trace", "format": "mooncake", "path": str(path), **fields}


def _row(t_ms: float, n_in: int = 8, n_out: int = 4) -> str:
    return json.dumps({"timestamp": t_ms, "input_length": n_in, "output_length": n_out}) + "\n"


BAD_TRACES = {
    "missing": (lambda tmp: {"kind": "trace", "format": "mooncake", "path": str(tmp / "nope.jsonl")},
                "nope.jsonl: no such trace file"),
    "empty": (lambda tmp: _trace(tmp, ""), "t.jsonl: no requests in trace"),
    "malformed": (lambda tmp: _trace(tmp, _row(0) + "{not json\n"), "t.jsonl:2: not valid JSON"),
    "backwards": (lambda tmp: _trace(tmp, _row(5) + _row(4)), "t.jsonl:2: timestamp goes back in time"),
    "1e300 ms": (lambda tmp: _trace(tmp, _row(0) + _row(1e300)), "t.jsonl:2: timestamp 1e+297 s is out of range"),
    "speedup 1e-9": (lambda tmp: _trace(tmp, _row(0) + _row(1000), speedup=1e-9),
                     "workloads[0].speedup: Input should be greater than or equal to 0.001"),
    "slowed to days": (lambda tmp: _trace(tmp, _row(0) + _row(100_000), speedup=0.001),
                       "t.jsonl: replaying 2 requests takes 27.8 h at speedup 0.001 (trace span 100 s), over"),
    "years of replay": (lambda tmp: _trace(tmp, _row(0) + _row(1e12)),
                        ("t.jsonl: replaying 2 requests takes 1.16e+04 days, over the 24 h limit; "
                         "raise max_replay_s (--max-replay-s S) to allow it, or set limit or speedup")),
    "sessions missing": (lambda tmp: {"kind": "sessions", "path": str(tmp / "none.jsonl")},
                         "none.jsonl: no such sessions file"),
    "sessions malformed": (lambda tmp: {"kind": "sessions", "path": str(_file(tmp, "s.jsonl", "[1, 2\n"))},
                           "s.jsonl:1: not valid JSON"),
    "a FIFO": (lambda tmp: {"kind": "trace", "format": "jsonl", "path": str(_fifo(tmp))},
               "fifo: not a regular file (trace file)"),  # refused, never opened: a read could block
    "prompt file missing": (lambda tmp: {"kind": "file", "path": str(tmp / "p.jsonl"), "output_len": 4},
                            "p.jsonl: no such prompt file"),
    "prompt file without a prompt": (
        lambda tmp: {"kind": "file", "path": str(_file(tmp, "p.jsonl", '{"prompt": "a"}\n{"text": "b"}\n')),
                     "output_len": 4},
        "p.jsonl:2: no prompt (expected 'prompt' or a human turn in 'conversations')"),
    "sessions without a human turn": (
        lambda tmp: {"kind": "sessions", "path": str(_file(tmp, "s.jsonl", '{"conversations": []}\n'))},
        "s.jsonl: no conversation with a human turn"),
}


def _fifo(tmp: Path) -> Path:
    import os

    os.mkfifo(tmp / "fifo")
    return tmp / "fifo"


def _file(tmp: Path, name: str, text: str) -> Path:
    (tmp / name).write_text(text)
    return tmp / name


@pytest.mark.parametrize("case", list(BAD_TRACES))
def test_bench_plan_refuses_a_bad_input_file_in_one_line(tmp_path, case):
    make, message = BAD_TRACES[case]
    sweep = _sweep(tmp_path, make(tmp_path))
    result = CliRunner().invoke(cli, ["plan", str(sweep), "--hardware", "cpu-host"])
    assert result.exit_code == 2, result.output
    assert result.output.startswith("bench: error: ") and result.output.count("\n") == 1, result.output
    assert message in result.output, result.output


@pytest.mark.parametrize("case", ["missing", "malformed", "years of replay", "sessions malformed",
                                  "prompt file missing"])
def test_bench_sweep_refuses_before_any_run_folder_or_engine(tmp_path, case, monkeypatch):
    """The file was read after the engine start (31 s on CPU, minutes on a GPU): now never started."""
    from bench.run import engine_session

    started = []
    monkeypatch.setattr(engine_session, "start_engine", lambda *a, **k: started.append(a) or pytest.fail("engine started"))
    make, message = BAD_TRACES[case]
    sweep = _sweep(tmp_path, make(tmp_path))
    out = tmp_path / "runs"
    result = CliRunner().invoke(cli, ["sweep", str(sweep), "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert message in result.output and result.output.startswith("bench: error: ")
    assert started == [] and not out.exists()


def test_bench_plan_shows_the_real_request_count_and_replay_time(tmp_path):
    rows = [json.loads(line) for line in MOONCAKE.read_text().splitlines()]
    sweep = _sweep(tmp_path, {"kind": "trace", "format": "mooncake", "path": str(MOONCAKE), "speedup": 4.0})
    result = CliRunner().invoke(cli, ["plan", str(sweep), "--hardware", "cpu-host"])
    assert result.exit_code == 0, result.output
    replay_s = (rows[-1]["timestamp"] - rows[0]["timestamp"]) / 1000 / 4
    assert f"note: trace {MOONCAKE}: {len(rows)} requests replayed over {replay_s:.1f} s at speedup 4" in result.output
    line = next(x for x in result.output.splitlines() if "trace-mooncake" in x and x.startswith("tiny-llama"))
    cells = line.split()
    assert cells[-2] == str(len(rows))  # was 1000000 for any trace without a limit
    assert float(cells[-1]) >= replay_s  # was 0: a trace was "not estimated"
    plan = build_plan(sweep_from_dict(yaml.safe_load(sweep.read_text()), source="t.yaml"), "cpu-host", 1)
    assert plan.points[0].n_requests == len(rows) and plan.points[0].replay_s == pytest.approx(replay_s)


def test_limits_and_fixed_counts_give_the_count_and_time_replayed(tmp_path):
    wl = _trace(tmp_path, "".join(_row(1000 * i) for i in range(10)), limit=6)
    plan = build_plan(sweep_from_dict({"models": ["tiny-llama"], "workloads": [wl], "loads": [{"kind": "trace"}]}),
                      "cpu-host", 1)
    assert (plan.points[0].n_requests, plan.points[0].replay_s) == (6, 5.0)
    plan = build_plan(sweep_from_dict({"models": ["tiny-llama"], "workloads": [{**wl, "limit": None, "speedup": 2.0}],
                                       "loads": [{"kind": "trace"}], "n_requests": 3}), "cpu-host", 1)
    assert (plan.points[0].n_requests, plan.points[0].replay_s) == (3, 1.0)
    # a closed loop over a trace workload has no replay time; its file is still read
    plan = build_plan(sweep_from_dict({"models": ["tiny-llama"], "workloads": [wl], "loads": [{"concurrency": 1}]}),
                      "cpu-host", 1)
    assert plan.points[0].replay_s is None and "replay_s" not in plan.points[0].model_dump()


def test_the_replay_bound_is_a_sweep_key_and_an_option(tmp_path):
    wl = _trace(tmp_path, _row(0) + _row(3 * 3600 * 1000))  # 3 h
    base = {"models": ["tiny-llama"], "workloads": [wl], "loads": [{"kind": "trace"}]}
    with pytest.raises(ConfigError, match=r"takes 3 h, over the 2 h limit"):
        build_plan(sweep_from_dict({**base, "max_replay_s": 7200}), "cpu-host", 1)
    assert build_plan(sweep_from_dict(base), "cpu-host", 1).points[0].replay_s == 3 * 3600
    sweep = _sweep(tmp_path, wl)
    refused = CliRunner().invoke(cli, ["plan", str(sweep), "--hardware", "cpu-host", "--max-replay-s", "60"])
    assert refused.exit_code == 2 and "over the 60 s limit" in refused.output
    with pytest.raises(ConfigError, match="max_replay_s: Input should be greater than 0"):
        sweep_from_dict({**base, "max_replay_s": 0})


def test_a_sessions_file_is_counted_in_the_plan(tmp_path):
    conv = {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]}
    path = _file(tmp_path, "s.jsonl", (json.dumps(conv) + "\n") * 3)
    plan = build_plan(sweep_from_dict({"models": ["tiny-llama"], "workloads": [{"kind": "sessions", "path": str(path)}],
                                       "loads": [{"concurrency": 1}], "endpoint": "chat"}), "cpu-host", 1)
    assert f"sessions file {path}: 3 conversations" in plan.points[0].notes
