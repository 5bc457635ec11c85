"""Reasoning-aware timing: reasoning deltas (`reasoning`, older `reasoning_content`) against the fake
server, whose emits say which tokens went out as reasoning and when each chunk was written."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bench.load import sse
from bench.load.client import ClientConfig, StreamingClient
from bench.load.driver import run_point_sync
from bench.load.records import RequestRecord
from bench.load.sse import StreamParser
from bench.load.types import LoadJob
from bench.load.workload import RandomPrompts
from bench.measure.metrics import summarize
from bench.testing.fake_server import FakeServer, FakeServerConfig

OUT = 10


def _run(cfg: FakeServerConfig, n: int = 6, endpoint: str = "chat"):
    wl = RandomPrompts(8, OUT, 500, seed=1, as_text=endpoint == "chat")
    with FakeServer(cfg, mode="thread") as srv:
        pr = run_point_sync(LoadJob(srv.base_url, cfg.model, wl, {"kind": "concurrency", "concurrency": 2}, 1, n,
                                    client=ClientConfig(endpoint=endpoint)))
        return pr, srv.emits()


def _server_chunks(pr, emits, rec) -> tuple[list[tuple[float, int]], int]:
    e = emits[f"{pr.client.request_id_prefix}-{rec.request_id}"]
    return [(t, k) for t, k in e["chunks"] if k > 0], e["reasoning_tokens"]


@pytest.mark.slow
@pytest.mark.parametrize("field", ["reasoning", "reasoning_content"])
@pytest.mark.parametrize("per_chunk", [1, 3])
def test_reasoning_times_and_counts_match_server_emits(field, per_chunk):
    cfg = FakeServerConfig(ttft_s=0.01, itl_s=0.003, tokens_per_chunk=per_chunk, reasoning_tokens=4,
                           reasoning_field=field)
    pr, emits = _run(cfg)
    assert all(r.ok for r in pr.records), [r.error for r in pr.records]
    errs = []
    for rec in pr.records:
        chunks, n_think = _server_chunks(pr, emits, rec)
        assert n_think == 4
        assert rec.chunk_tokens == [k for _, k in chunks] and rec.n_out == OUT
        cum = np.cumsum([0] + rec.chunk_tokens)
        first_answer = int(np.argmax(cum[:-1] >= n_think))  # the first chunk that starts after the reasoning
        assert rec.n_reasoning == n_think == sum(rec.chunk_tokens[:first_answer])
        assert rec.t_first_reasoning == rec.t_first == rec.chunk_t[0]
        assert rec.t_first_answer == rec.chunk_t[first_answer] > rec.t_first_reasoning
        assert rec.ttfat_s == rec.t_first_answer - rec.t_send
        for got, (wrote, _) in ((rec.t_first_reasoning, chunks[0]), (rec.t_first_answer, chunks[first_answer])):
            assert got >= wrote  # never stamped before the server wrote it
            errs.append(got - wrote)
    assert np.median(errs) < 0.005, np.round(np.asarray(errs) * 1e3, 2)

    m = summarize(pr.records, (pr.window_t0_s, pr.window_t1_s), n_gpus=1)
    meas = pr.measured
    assert m.reasoning_tokens_total == 4 * len(meas) and m.reasoning_share == pytest.approx(0.4)
    assert m.ttfat_s_p50 == pytest.approx(float(np.median([r.ttfat_s for r in meas])))
    assert m.ttfat_s_p50 > m.ttft_s_p50  # ttft is the first generated token of either kind
    assert m.ttfat_s_p99 >= m.ttfat_s_p50


@pytest.mark.slow
@pytest.mark.parametrize("endpoint", ["chat", "completions"])
def test_stream_without_reasoning_is_unchanged(endpoint):
    # completions never carry reasoning, whatever the server is told
    pr, _ = _run(FakeServerConfig(ttft_s=0.01, itl_s=0.002, reasoning_tokens=4 if endpoint == "completions" else 0),
                     n=4, endpoint=endpoint)
    for rec in pr.records:
        assert rec.ok and rec.n_out == OUT and rec.chunk_tokens == [1] * OUT
        assert (rec.n_reasoning, rec.t_first_reasoning) == (0, None)
        assert rec.t_first_answer == rec.t_first
    m = summarize(pr.records, (pr.window_t0_s, pr.window_t1_s), n_gpus=1)
    assert (m.ttfat_s_p50, m.ttfat_s_p99, m.reasoning_tokens_total, m.reasoning_share) == (None,) * 4
    assert "reasoning_share" not in m


class _CountingDecode:
    def __init__(self):
        self.calls = 0
        self.decode = sse._DECODE

    def __call__(self, payload):
        self.calls += 1
        return self.decode(payload)


@pytest.mark.parametrize("n_think,full_parses", [(0, 2), (3, 5)])
def test_fast_path_still_taken_by_answer_chunks(monkeypatch, n_think, full_parses):
    """Full parses: the role chunk (first event), each reasoning chunk and the final usage-only
    chunk; every answer chunk is read by the bytes search."""
    counting = _CountingDecode()
    monkeypatch.setattr(sse, "_DECODE", counting)
    cfg = FakeServerConfig(ttft_s=0.005, itl_s=0.001, reasoning_tokens=n_think)
    with FakeServer(cfg, mode="thread") as srv:
        import asyncio

        async def one() -> RequestRecord:
            async with StreamingClient(srv.base_url, cfg.model, ClientConfig(endpoint="chat")) as client:
                return await client.send(RequestRecord(0, "measured", 3, 8), "a b c")

        rec = asyncio.run(one())
    assert rec.ok and rec.n_out == 8 and rec.n_reasoning == n_think
    assert counting.calls == full_parses


def _ev(obj) -> bytes:
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


def _chat(delta: dict, done: int | None = None, ids: list[int] | None = None) -> bytes:
    choice = {"index": 0, "delta": delta}
    if ids is not None:
        choice["token_ids"] = ids
    obj = {"choices": [choice]}
    if done is not None:
        obj["usage"] = {"prompt_tokens": 3, "completion_tokens": done}
    return _ev(obj)


def _feed(events: list[bytes], keep_text: bool = False, n_out: int = 0) -> StreamParser:
    parser = StreamParser(RequestRecord(0, "measured", 3, n_out), keep_text=keep_text)
    for i, e in enumerate(events + [b"data: [DONE]\n\n"]):
        parser.feed(e, float(i))
    parser.finish()
    return parser


def test_parser_attributes_tokens_by_delta_field():
    events = [_chat({"role": "assistant", "content": ""}, 0),
              _chat({"reasoning_content": "hm"}, 2),
              _chat({"reasoning": ""}, 3),  # empty reasoning text (random weights) still counts as reasoning
              _chat({"reasoning": "so", "content": " Yes"}, 5),  # both: the answer has begun
              _chat({"content": " done"}, 6)]
    p = _feed(events, keep_text=True, n_out=6)
    rec = p.rec
    assert rec.ok and rec.chunk_tokens == [2, 1, 2, 1] and rec.n_out == 6 and rec.n_reasoning == 3
    assert (rec.t_first, rec.t_first_reasoning, rec.t_first_answer) == (1.0, 1.0, 3.0)
    assert p.answer_text == " Yes done"  # reasoning is never part of the answer's text


def test_parser_text_chunk_fallback_counts_reasoning_chunks():
    rec = _feed([_chat({"reasoning": "a"}), _chat({"reasoning": "b"}), _chat({"content": "c"})], n_out=3).rec
    assert rec.ok and rec.token_source == "text_chunks" and rec.n_out == 3 and rec.n_reasoning == 2
    rec = _feed([_chat({"reasoning": "a"}, ids=[1, 2]), _chat({"content": "c"}, ids=[3])], n_out=3).rec
    assert rec.token_source == "token_ids" and (rec.n_reasoning, rec.t_first_answer) == (2, 1.0)


def test_keep_text_off_by_default_and_for_completions():
    events = [_ev({"choices": [{"index": 0, "text": " a"}], "usage": {"prompt_tokens": 3, "completion_tokens": 1}}),
              _ev({"choices": [{"index": 0, "text": " b"}], "usage": {"prompt_tokens": 3, "completion_tokens": 2}})]
    assert _feed(events).answer_text == ""
    assert _feed(events, keep_text=True).answer_text == " a b"


@pytest.mark.parametrize("usage_first", [False, True])
def test_fast_path_sees_reasoning_whatever_the_key_order(usage_first):
    """After the first event, chat chunks go through the bytes search; one naming reasoning must not,
    whether usage follows the choices (vLLM) or precedes them."""
    def chunk(delta: dict, done: int) -> bytes:
        usage = {"prompt_tokens": 3, "completion_tokens": done}
        choices = [{"index": 0, "delta": delta}]
        return _ev({"usage": usage, "choices": choices} if usage_first else {"choices": choices, "usage": usage})

    events = [chunk({"role": "assistant", "content": ""}, 0), chunk({"content": "a"}, 1),
              chunk({"reasoning": "b"}, 3), chunk({"content": 'say "reasoning"'}, 4), chunk({"content": "c"}, 5)]
    rec = _feed(events, n_out=5).rec
    assert rec.ok and rec.chunk_tokens == [1, 2, 1, 1] and rec.n_reasoning == 2
    assert (rec.t_first_answer, rec.t_first_reasoning) == (1.0, 2.0)
