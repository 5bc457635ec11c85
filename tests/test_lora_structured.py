"""LoRA traffic and structured output, without vLLM: random adapters in PEFT's layout, the
`lora` block and vLLM's arguments, the mix and structured workloads, the request bodies, the
streamed tool call, the per-adapter and parse-share figures, the table's columns, and a LoRA
point end to end against the fake server (which answers an unknown adapter as vLLM does)."""

from __future__ import annotations

import json
from collections import Counter
from types import SimpleNamespace

import pytest
from safetensors.numpy import load_file

from bench.catalog import get_model
from bench.catalog.lora import adapter_folder_name, prepare_adapter, projection_shapes
from bench.engines.base import engine_args_to_cli
from bench.engines.vllm_args import lora_launch_args
from bench.errors import ConfigError
from bench.load.client import ClientConfig, StreamingClient
from bench.load.driver import run_point_sync
from bench.load.records import RequestRecord
from bench.load.sse import StreamParser
from bench.load.types import LoadJob
from bench.load.workload import make_workload
from bench.measure.traffic import adapter_figures, structured_figures, traffic_figures, wants_answers
from bench.plan import EngineConfig
from bench.plan.lora import LoraConfig
from bench.plan.points import DEFAULT_JSON_SCHEMA, parse_workload
from bench.plan.sweepfile import sweep_from_dict
from bench.store.rows import traffic_columns
from bench.testing.fake_server import FakeServer, FakeServerConfig

TINY = "tiny-llama"
MIX = {"kind": "lora", "mix": {"base": 2, "sql": 1, "chat": 1}, "requests": {"kind": "random", "input_len": 8, "output_len": 4}}


# ---------------------------------------------------------------- adapters


def test_random_adapter_has_peft_layout_for_every_attention_projection(tmp_path):
    spec = get_model(TINY)
    folder = prepare_adapter(spec, tmp_path, "sql", 8, seed=1)
    cfg = json.loads((folder / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "LORA" and cfg["r"] == 8 and set(cfg["target_modules"]) == {"q_proj", "k_proj", "v_proj", "o_proj"}
    tensors = load_file(str(folder / "adapter_model.safetensors"))
    shapes = projection_shapes(spec)
    assert len(tensors) == spec.config.num_hidden_layers * len(shapes) * 2
    for layer in range(spec.config.num_hidden_layers):
        for proj, (n_in, n_out) in shapes.items():
            key = f"base_model.model.model.layers.{layer}.self_attn.{proj}"
            assert tensors[f"{key}.lora_A.weight"].shape == (8, n_in)
            assert tensors[f"{key}.lora_B.weight"].shape == (n_out, 8)
            assert abs(tensors[f"{key}.lora_B.weight"]).max() > 0  # not PEFT's zero init: the adapter changes the output
    # q is heads x head_dim wide, k and v kv_heads x head_dim (grouped-query attention)
    assert shapes["q_proj"][1] == 4 * 64 and shapes["k_proj"][1] == 2 * 64
    again = prepare_adapter(spec, tmp_path, "sql", 8, seed=1)
    assert again == folder and load_file(str(again / "adapter_model.safetensors"))[key + ".lora_A.weight"].tobytes() \
        == tensors[key + ".lora_A.weight"].tobytes()
    assert adapter_folder_name(spec, "sql", 8, 2) != folder.name  # another seed, another folder


def test_adapter_rank_and_mla_refused(tmp_path):
    with pytest.raises(ConfigError, match="rank 7"):
        prepare_adapter(get_model(TINY), tmp_path, "x", 7)
    with pytest.raises(ConfigError, match="MLA"):
        projection_shapes(get_model("tiny-deepseek-v2"))


# ---------------------------------------------------------------- the lora block and vLLM's arguments


def test_lora_block_maps_to_vllm_flags(tmp_path):
    lora = LoraConfig(adapters=[{"name": "sql", "rank": 8}, {"name": "chat", "rank": 16, "seed": 3}])
    cfg = EngineConfig(model=TINY, lora=lora)
    model_dir = tmp_path / "tiny-llama-000"
    args = lora_launch_args(cfg, get_model(TINY), str(model_dir))
    assert args["enable_lora"] is True and args["max_loras"] == 2 and args["max_lora_rank"] == 16
    names = [m.split("=", 1)[0] for m in args["lora_modules"]]
    assert names == ["sql", "chat"]
    for m in args["lora_modules"]:
        path = m.split("=", 1)[1]
        assert (tmp_path / path.rsplit("/", 1)[1] / "adapter_config.json").is_file()  # beside the model folder
    cli = engine_args_to_cli(args)
    assert cli[:4] == ["--enable-lora", "--max-loras", "2", "--max-lora-rank"]
    i = cli.index("--lora-modules")
    assert cli[i + 1].startswith("sql=") and cli[i + 2].startswith("chat=")
    assert EngineConfig(model=TINY).config_id() != cfg.config_id()  # the adapters are part of what is measured
    assert lora_launch_args(EngineConfig(model=TINY), get_model(TINY), str(model_dir)) == {}


def test_real_weights_need_adapter_paths(tmp_path):
    cfg = EngineConfig(model=TINY, weights="org/repo", lora=LoraConfig(adapters=[{"name": "sql"}]))
    with pytest.raises(ConfigError, match="dummy weights only"):
        lora_launch_args(cfg, get_model(TINY), "org/repo")
    given = EngineConfig(model=TINY, weights="org/repo", lora=LoraConfig(adapters=[{"name": "sql", "path": "/a/sql"}]))
    assert lora_launch_args(given, get_model(TINY), "org/repo")["lora_modules"] == ["sql=/a/sql"]


@pytest.mark.parametrize(("adapters", "extra", "match"), [
    ([{"name": "base"}], {}, "reserved"),
    ([{"name": "a"}, {"name": "a"}], {}, "listed twice"),
    ([{"name": "a", "rank": 12}], {}, "rank 12"),
    ([{"name": "a", "rank": 16}], {"max_lora_rank": 8}, "above max_lora_rank"),
    ([{"name": "a b"}], {}, "pattern"),
    ([{"name": "a=b"}], {}, "pattern"),  # would split vLLM's name=path
])
def test_lora_block_refuses(adapters, extra, match):
    with pytest.raises(ValueError, match=match):
        LoraConfig(adapters=adapters, **extra)


def _sweep(**over):
    raw = {"models": [TINY], "workloads": [MIX], "loads": [{"kind": "concurrency", "concurrency": 2}],
           "lora": {"adapters": [{"name": "sql"}, {"name": "chat"}]}}
    return sweep_from_dict({**raw, **over}, source="t.yaml")


def test_sweep_checks_mix_against_served_adapters():
    assert _sweep().lora.names() == ["sql", "chat"]
    with pytest.raises(ConfigError, match="does not serve.*served: base, sql"):
        _sweep(lora={"adapters": [{"name": "sql"}]})
    with pytest.raises(ConfigError, match="needs engine vllm and a `lora` block"):
        _sweep(lora=None)
    with pytest.raises(ConfigError, match="needs `endpoint: chat`"):
        _sweep(workloads=[{"kind": "structured"}])
    _sweep(workloads=[{"kind": "structured", "mode": "tool_call"}], endpoint="chat")


# ---------------------------------------------------------------- workloads and request bodies


@pytest.mark.slow
def test_lora_mix_is_seeded_and_follows_weights():
    spec = parse_workload(MIX)
    assert spec.mix_label() == "base:0.5,sql:0.25,chat:0.25"
    a = make_workload(spec, 500, seed=7).prompts(2000)
    assert [p.model for p in a] == [p.model for p in make_workload(spec, 500, seed=7).prompts(2000)]
    assert [p.model for p in a] != [p.model for p in make_workload(spec, 500, seed=8).prompts(2000)]
    counts = Counter(p.model or "base" for p in a)
    assert abs(counts["base"] / 2000 - 0.5) < 0.05 and abs(counts["sql"] / 2000 - 0.25) < 0.05
    inner = make_workload(spec.requests, 500, seed=7).prompts(2000)
    assert [p.token_ids for p in a] == [p.token_ids for p in inner]  # the mix leaves the prompts as they were


def test_structured_bodies_ask_for_the_schema():
    client = StreamingClient("http://127.0.0.1:1", "tiny-llama", ClientConfig(endpoint="chat"))
    for mode in ("json_schema", "tool_call"):
        spec = parse_workload({"kind": "lora", "mix": {"sql": 1}, "requests": {"kind": "structured", "mode": mode}})
        p = make_workload(spec, 500, seed=0).prompts(1)[0]
        body = json.loads(client.body(p.for_endpoint("chat"), p.n_out_expected, {**p.extra, "model": p.model}))
        assert body["model"] == "sql" and body["ignore_eos"] is False and body["max_tokens"] == 128
        if mode == "json_schema":
            assert body["response_format"]["json_schema"]["schema"] == DEFAULT_JSON_SCHEMA
        else:
            assert body["tools"][0]["function"]["parameters"] == DEFAULT_JSON_SCHEMA
            assert body["tool_choice"] == {"type": "function", "function": {"name": "record"}}
        assert wants_answers(spec)
    assert not wants_answers(parse_workload(MIX))


def test_bad_json_schema_refused_when_planned():
    with pytest.raises(ConfigError, match="json_schema"):
        parse_workload({"kind": "structured", "json_schema": {"type": "nope"}})


# ---------------------------------------------------------------- the stream and the figures


def _events(*objs) -> bytes:
    return b"".join(b"data: " + json.dumps(o).encode() + b"\n\n" for o in objs) + b"data: [DONE]\n\n"


def test_streamed_tool_call_arguments_are_the_answer_and_short_answers_are_not_failures():
    rec = RequestRecord(0, "measured", 5, 64, ignore_eos=False)
    parser = StreamParser(rec, keep_text=True)
    call = {"index": 0, "id": "c1", "type": "function", "function": {"name": "record", "arguments": ""}}
    parser.feed(_events(
        {"choices": [{"delta": {"role": "assistant", "content": ""}}], "usage": {"prompt_tokens": 5, "completion_tokens": 0}},
        {"choices": [{"delta": {"tool_calls": [call]}}], "usage": {"prompt_tokens": 5, "completion_tokens": 1}},
        {"choices": [{"delta": {"tool_calls": [{"index": 0, "function": {"arguments": '{"city": "rome",'}}]}}],
         "usage": {"prompt_tokens": 5, "completion_tokens": 4}},
        {"choices": [{"delta": {"tool_calls": [{"index": 0, "function": {"arguments": ' "open": true}'}}]}}],
         "usage": {"prompt_tokens": 5, "completion_tokens": 7}},
        {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 7}}), 1.0)
    parser.finish()
    assert rec.ok and rec.n_out == 7 and rec.chunk_tokens == [1, 3, 3]
    assert parser.answer_json() == ('{"city": "rome", "open": true}', "record")
    exact = RequestRecord(1, "measured", 5, 64)  # ignore_eos: fewer tokens than asked stays a failure
    p2 = StreamParser(exact)
    p2.feed(_events({"choices": [{"text": "a"}], "usage": {"prompt_tokens": 5, "completion_tokens": 1}}), 1.0)
    p2.finish()
    assert exact.error == "fewer tokens than asked: 1 of 64"


def _rec(i, model=None, answer=None, tool=None, ok=True, t=0.0):
    r = RequestRecord(i, "measured", 4, 2, t_send=t, t_first=t + 0.1, t_last=t + 0.3, n_in=4, n_out=3,
                      chunk_t=[t + 0.1, t + 0.2, t + 0.3], chunk_tokens=[1, 1, 1], model=model, answer=answer,
                      tool_name=tool)
    if not ok:
        r.error = "HTTP 500: x"
    return r


def test_adapter_figures_split_the_point_by_adapter():
    recs = [_rec(0), _rec(1, "sql", t=1.0), _rec(2, "sql", t=2.0, ok=False), _rec(3, None, t=3.0),
            RequestRecord(9, "warmup", 4, 2, model="chat")]
    figs = {f.adapter: f for f in adapter_figures(recs, (0.0, 10.0), ["base", "sql", "chat"])}
    assert figs["base"].n_requests == 2 and figs["sql"].n_requests == 2 and figs["chat"].n_requests == 0
    assert figs["sql"].n_failed == 1 and figs["base"].share == 0.5
    assert figs["base"].window_output_tokens == 6 and figs["sql"].window_output_tokens == 3  # successful only
    assert figs["base"].output_tok_s == pytest.approx(0.6) and figs["sql"].ttft_s_p50 == pytest.approx(0.1)
    assert figs["chat"].ttft_s_p50 is None and figs["chat"].output_tok_s is None


def test_parse_share_counts_schema_valid_answers():
    spec = parse_workload({"kind": "structured"})
    good = '{"city":"rome","open":true,"stars":3}'
    recs = [_rec(0, answer=good), _rec(1, answer='{"city":"rome","open":true}'), _rec(2, answer='{"city": "ro'),
            _rec(3, answer=good, ok=False)]
    s = structured_figures(recs, spec)
    assert (s.n_checked, s.n_valid, s.valid_share) == (3, 1, pytest.approx(1 / 3))
    assert "against the schema: 'stars' is a required property" in s.first_invalid
    tool = parse_workload({"kind": "structured", "mode": "tool_call"})
    t = structured_figures([_rec(0, answer=good, tool="record"), _rec(1, answer=good, tool="other")], tool)
    assert (t.n_valid, t.valid_share) == (1, 0.5) and "names 'other'" in t.first_invalid
    lora = parse_workload({"kind": "lora", "mix": {"base": 1}, "requests": {"kind": "structured"}})
    adapters, structured = traffic_figures(lora, recs, (0.0, 10.0))
    assert adapters[0].n_requests == 4 and structured.n_valid == 1
    assert traffic_figures(parse_workload({"kind": "random", "input_len": 1, "output_len": 1}), recs, None) == (None, None)


def test_table_columns_of_a_lora_structured_point():
    lora = parse_workload({"kind": "lora", "mix": {"base": 1, "sql": 3}, "requests": {"kind": "structured"}})
    s = structured_figures([_rec(0, answer='{"city":"rome","open":true,"stars":3}')], lora.requests)
    cols = traffic_columns(SimpleNamespace(workload=lora, structured=s))
    assert cols == {"lora_mix": "base:0.25,sql:0.75", "structured_mode": "json_schema", "structured_valid_share": 1.0}
    plain = traffic_columns(SimpleNamespace(workload=parse_workload({"kind": "random", "input_len": 1, "output_len": 1}),
                                            structured=None))
    assert set(plain.values()) == {None}


# ---------------------------------------------------------------- end to end against the fake server


@pytest.mark.slow
@pytest.mark.parametrize("workers", [0, 2])
def test_lora_point_sends_each_request_to_its_adapter(workers):
    cfg = FakeServerConfig(model=TINY, adapters=("sql", "chat"), ttft_s=0.005, itl_s=0.001)
    wl = make_workload(parse_workload(MIX), 500, seed=3)
    with FakeServer(cfg, mode="thread") as srv:
        pr = run_point_sync(LoadJob(srv.base_url, TINY, wl, {"kind": "concurrency", "concurrency": 2}, 2, 24,
                                    workers=workers))
        emits = srv.emits()
    assert all(r.ok for r in pr.records), [r.error for r in pr.records if not r.ok]
    for r in pr.records:
        assert emits[f"{pr.client.request_id_prefix}-{r.request_id}"]["model"] == (r.model or TINY)
    assert {r.model for r in pr.measured} == {None, "sql", "chat"}
    figs = adapter_figures(pr.records, (pr.window_t0_s, pr.window_t1_s), ["base", "sql", "chat"])
    assert sum(f.n_requests for f in figs) == 24
    assert sum(f.output_tokens_total for f in figs) == sum(r.n_out for r in pr.measured)


def test_unknown_adapter_is_a_failed_request_with_the_servers_reason():
    cfg = FakeServerConfig(model=TINY, adapters=("sql",), ttft_s=0.005, itl_s=0.001)
    wl = make_workload(parse_workload(MIX), 500, seed=3)
    with FakeServer(cfg, mode="thread") as srv:
        pr = run_point_sync(LoadJob(srv.base_url, TINY, wl, {"kind": "concurrency", "concurrency": 2}, 0, 12))
    bad = [r for r in pr.records if r.model == "chat"]
    assert bad and all(r.error.startswith("HTTP 404") and "`chat` does not exist" in r.error for r in bad)
    assert all(r.ok for r in pr.records if r.model != "chat")


@pytest.mark.parametrize("workers", [0, 2])
def test_an_unconstrained_server_gives_a_parse_share_of_zero(workers):
    """The fake server has no grammar: its answers (" t12 t40 ...") are not JSON. The answers reach
    the records through client workers too, and the share says so."""
    spec = parse_workload({"kind": "structured", "prompt_len": 4, "output_len": 6})
    cfg = FakeServerConfig(model=TINY, ttft_s=0.005, itl_s=0.001)
    with FakeServer(cfg, mode="thread") as srv:
        pr = run_point_sync(LoadJob(srv.base_url, TINY, make_workload(spec, 500, seed=1),
                                    {"kind": "concurrency", "concurrency": 2}, 1, 8, workers=workers,
                                    client=ClientConfig(endpoint="chat", keep_answers=wants_answers(spec))))
    assert all(r.ok and r.answer and r.answer.startswith(" t") and not r.ignore_eos for r in pr.records)
    s = structured_figures(pr.records, spec)
    assert (s.n_checked, s.n_valid, s.valid_share) == (8, 0, 0.0) and s.first_invalid.startswith("not JSON")
