"""Multi-turn sessions against the fake server, which records each request's prompt tokens and messages."""

from __future__ import annotations

import itertools
import json

import pandas as pd
import pytest

from bench.errors import ConfigError
from bench.load.client import ClientConfig
from bench.load.driver import run_point_sync
from bench.load.merge import in_flight_reach
from bench.load.records import RequestRecord
from bench.load.sessions import ChatSessions, session_records
from bench.load.types import LoadJob
from bench.load.workload import make_workload
from bench.measure.metrics import session_metrics, summarize
from bench.testing.fake_server import FakeServer, FakeServerConfig

FAST = FakeServerConfig(ttft_s=0.005, itl_s=0.001)
CONC = {"kind": "concurrency", "concurrency": 2}


def _run(wl: ChatSessions, cfg: FakeServerConfig = FAST, load=CONC, n_warmup: int = 3, n: int = 12):
    with FakeServer(cfg, mode="thread") as srv:
        pr = run_point_sync(LoadJob(srv.base_url, cfg.model, wl, load, n_warmup, n))
        return pr, srv.emits(), srv.counters()


def _emit(pr, emits, rec: RequestRecord) -> dict:
    return emits[f"{pr.client.request_id_prefix}-{rec.request_id}"]


def _by_session(records) -> dict[int, list[RequestRecord]]:
    out: dict[int, list[RequestRecord]] = {}
    for r in records:
        out.setdefault(r.session, []).append(r)
    return out


def test_plan_is_deterministic_and_phases_hold_whole_sessions():
    wl = ChatSessions(turns=3, prompt_len=5, answer_len=4, seed=7)
    plan = wl.plan(4, 7)
    assert plan == ChatSessions(turns=3, prompt_len=5, answer_len=4, seed=7).plan(4, 7)
    assert [(s.phase, len(s.users)) for s in plan] == [("warmup", 3), ("warmup", 1), ("measured", 3),
                                                        ("measured", 3), ("measured", 1)]
    assert [s.first_request for s in plan] == [0, 3, 4, 7, 10]
    assert all(len(u.split()) == 5 for s in plan for u in s.users)
    recs = session_records(plan)
    assert [r.request_id for r in recs] == list(range(11))
    assert [r.phase for r in recs] == ["warmup"] * 4 + ["measured"] * 7
    assert [(r.session, r.turn, r.n_in_expected, r.n_out_expected) for r in recs[4:7]] == \
        [(2, 0, 5, 4), (2, 1, 14, 4), (2, 2, 23, 4)]  # the conversation so far: users + earlier answers


def test_sessions_from_a_sharegpt_file(tmp_path):
    path = tmp_path / "chats.jsonl"
    lines = [{"conversations": [{"from": "human", "value": "hello there"}, {"from": "gpt", "value": "hi"},
                                {"from": "human", "value": "how are you"}, {"from": "gpt", "value": "fine"}]},
             {"conversations": [{"from": "system", "value": "be brief"}, {"from": "user", "value": "one"}]},
             {"conversations": [{"from": "gpt", "value": "no human turn: skipped"}]}]
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    wl = make_workload({"kind": "sessions", "path": str(path), "answer_len": 3}, vocab_size=100, seed=0)
    assert isinstance(wl, ChatSessions) and wl.describe()["n_conversations"] == 2
    plan = wl.plan(0, 6)
    assert sorted({s.users for s in plan}) == [("hello there", "how are you"), ("one",)]
    assert sum(len(s.users) for s in plan) == 6 and all(s.answer_len == 3 for s in plan)
    (tmp_path / "bad.jsonl").write_text('{"prompt": "not a conversation"}\n')
    with pytest.raises(ConfigError, match=r"bad.jsonl:1: .*'conversations'"):
        ChatSessions(tmp_path / "bad.jsonl").plan(0, 1)
    with pytest.raises(ConfigError, match="no such sessions file"):
        ChatSessions(tmp_path / "missing.jsonl").plan(0, 1)


@pytest.mark.slow
def test_history_grows_turn_by_turn_with_exact_token_counts():
    wl = ChatSessions(turns=3, prompt_len=5, answer_len=4, seed=1)
    pr, emits, counters = _run(wl)
    recs = pr.records
    assert [r.request_id for r in recs] == list(range(15)) and all(r.ok for r in recs), [r.error for r in recs]
    assert [r.phase for r in recs] == ["warmup"] * 3 + ["measured"] * 12
    assert all(r.t_done is not None and r.t_done >= r.t_last and r.chunk_t for r in recs)
    for r in recs:
        e = _emit(pr, emits, r)
        # every user message and every earlier answer (4 words of streamed text each) is sent again
        assert e["prompt_tokens"] == r.n_in == r.n_in_expected == 5 * (r.turn + 1) + 4 * r.turn
        assert e["n_messages"] == 2 * r.turn + 1
        assert r.n_out == 4 and sum(r.chunk_tokens) == 4
    assert counters["generation_tokens"] == sum(r.n_out for r in recs) == 15 * 4
    assert counters["prompt_tokens"] == sum(r.n_in for r in recs)
    assert pr.client.options["endpoint"] == "chat"

    m = summarize(recs, (pr.window_t0_s, pr.window_t1_s), n_gpus=1)
    assert pr.target_reached and pr.window_t1_s > pr.window_t0_s and m.window_output_tokens > 0
    assert (m.n_sessions, m.turns_per_session_mean) == (4, 3.0)
    assert m.input_tokens_p50_by_turn == [5.0, 14.0, 23.0]
    assert len(m.ttft_s_p50_by_turn) == 3 and all(t > 0 for t in m.ttft_s_p50_by_turn)
    assert m.session_s_p50 > 0 and m.session_s_p99 >= m.session_s_p50
    assert session_metrics(recs) == {k: getattr(m, k) for k in session_metrics(recs)}


@pytest.mark.slow
def test_sessions_run_concurrently_up_to_the_limit_with_think_time():
    think = 0.05
    wl = ChatSessions(turns=3, prompt_len=4, answer_len=3, think_time_s=think, seed=2)
    pr, _, _ = _run(wl, n_warmup=0, n=15)  # 5 sessions, 2 at a time
    meas = pr.measured
    assert len(meas) == 15 and all(r.ok for r in meas)
    spans = [(min(r.t_send for r in rs), max(r.t_done for r in rs)) for rs in _by_session(meas).values()]
    events = sorted([(t0, 1) for t0, _ in spans] + [(t1, -1) for _, t1 in spans], key=lambda e: (e[0], e[1]))
    active = peak = 0
    for _, step in events:
        active += step
        peak = max(peak, active)
    assert peak == 2  # sessions at once: the concurrency, never more
    assert in_flight_reach(meas, 2)[0] == 2 == pr.max_in_flight
    for rs in _by_session(meas).values():
        rs.sort(key=lambda r: r.turn)
        assert [r.turn for r in rs] == [0, 1, 2]
        for prev, nxt in itertools.pairwise(rs):
            assert nxt.t_send - prev.t_done >= think  # the user thinks between an answer and the next turn
    m = summarize(pr.records, (pr.window_t0_s, pr.window_t1_s), n_gpus=1)
    assert m.session_s_p50 >= 2 * think


@pytest.mark.slow
def test_reasoning_stays_out_of_the_history():
    wl = ChatSessions(turns=2, prompt_len=3, answer_len=5, seed=3)
    pr, emits, _ = _run(wl, cfg=FakeServerConfig(ttft_s=0.005, itl_s=0.001, reasoning_tokens=2), n_warmup=0, n=4)
    for r in pr.records:
        assert r.ok and r.n_reasoning == 2 and r.n_out == 5
        # turn 1 carries the answer's 3 content words, not the 2 reasoning tokens
        assert _emit(pr, emits, r)["prompt_tokens"] == r.n_in == (3 if r.turn == 0 else 3 + 3 + 3)


@pytest.mark.slow
def test_failed_turn_is_data_and_the_session_goes_on():
    wl = ChatSessions(turns=3, prompt_len=3, answer_len=2, seed=4)
    pr, _, counters = _run(wl, cfg=FakeServerConfig(ttft_s=0.005, itl_s=0.001, fail_http_every=4), n_warmup=0, n=9)
    assert len(pr.records) == 9 and all(r.t_send > 0 and r.t_done is not None for r in pr.records)
    failed = [r for r in pr.records if not r.ok]
    assert len(failed) == 2 and all(r.error.startswith("HTTP 500") for r in failed)
    assert counters["n_requests"] == 9


def test_sessions_need_a_concurrency_load_and_no_pre_encoded_requests():
    wl = ChatSessions(turns=2, prompt_len=3, answer_len=2)
    with pytest.raises(ConfigError, match="concurrency load"):
        _run(wl, load={"kind": "rate", "rate_rps": 10.0}, n_warmup=0, n=2)
    with pytest.raises(ConfigError, match="previous answers"):
        wl.prompts(4)  # client worker processes send pre-encoded bodies: refused, not single-turn chats


def test_session_fields_survive_parquet(tmp_path):
    recs = [RequestRecord(0, "measured", 3, 2, session=1, turn=0, n_reasoning=1, t_first_answer=2.0),
            RequestRecord(1, "measured", 3, 2)]
    path = tmp_path / "r.parquet"
    pd.DataFrame([r.to_row() for r in recs]).to_parquet(path, index=False)
    back = [RequestRecord.from_row(row) for row in pd.read_parquet(path).to_dict("records")]
    assert [(r.session, r.turn, r.n_reasoning, r.t_first_answer, r.t_first_reasoning) for r in back] == \
        [(1, 0, 1, 2.0, None), (None, None, 0, None, None)]
    assert type(back[0].session) is int


@pytest.mark.slow
@pytest.mark.parametrize("sync", [False, True], ids=["run_point", "run_point_sync"])
def test_run_point_keeps_sessions_in_its_own_loop(sync):
    import asyncio

    from bench.load.driver import run_point

    wl = ChatSessions(turns=2, prompt_len=3, answer_len=2, seed=5)
    with FakeServer(FAST, mode="thread") as srv:
        job = LoadJob(srv.base_url, FAST.model, wl, CONC, 0, 4, client=ClientConfig(endpoint="completions"),
                      workers=None if sync else 2)  # asked for worker processes: a session's turns need this loop
        pr = run_point_sync(job) if sync else asyncio.run(run_point(job))
    assert pr.client.n_workers == 0 and pr.client.options["endpoint"] == "chat"
    assert [r.turn for r in pr.records] == [0, 1, 0, 1] and all(r.ok for r in pr.records)
