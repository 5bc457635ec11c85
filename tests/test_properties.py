"""Property tests for the parsers of untrusted input (issue 11): the SSE stream parser of the
client, run.json (results.parse_summary), request Parquet files (store.integrity) and
prompt files (the file workload). Whatever the input: no exception other than the
parser's own one-line error, and a record that stays well-formed."""

from __future__ import annotations

import itertools
import json

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from bench.errors import BenchError, ResultError, StoreError
from bench.load.client import _StreamParser
from bench.load.records import RequestRecord
from bench.results import PointResult, parse_summary

SETTINGS = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _vllm_stream(n_out: int, tokens_per_chunk: int, usage: bool, ids: bool) -> bytes:
    """A completions stream framed as vLLM frames it (see bench.testing.fake_server)."""
    head = '{"id":"cmpl-1","object":"text_completion","created":1,"model":"m","choices":['
    out, done = [], 0
    while done < n_out:
        k = min(tokens_per_chunk, n_out - done)
        tid = f',"token_ids":{list(range(done, done + k))}' if ids else ""
        done += k
        u = f',"usage":{{"prompt_tokens":4,"total_tokens":{4 + done},"completion_tokens":{done}}}' if usage else ""
        out.append(f'data: {head}{{"index":0,"text":"x","finish_reason":null{tid}}}]{u}}}\n\n')
    out.append(f'data: {head}],"usage":{{"prompt_tokens":4,"total_tokens":{4 + done},"completion_tokens":{done}}}}}\n\n')
    out.append("data: [DONE]\n\n")
    return "".join(out).encode()


def _feed(data: bytes, cuts: list[int], n_out_expected: int = 1) -> RequestRecord:
    rec = RequestRecord(0, "measured", 4, n_out_expected)
    parser = _StreamParser(rec)
    bounds = sorted({min(c, len(data)) for c in cuts} | {0, len(data)})
    for i, (a, b) in enumerate(itertools.pairwise(bounds)):
        parser.feed(data[a:b], float(i + 1))
    parser.finish()
    return rec


def _well_formed(rec: RequestRecord) -> None:
    assert type(rec.n_out) is int and rec.n_out >= 0
    assert rec.n_in is None or (type(rec.n_in) is int and rec.n_in >= 0)
    assert len(rec.chunk_t) == len(rec.chunk_tokens)
    assert all(type(n) is int and n > 0 for n in rec.chunk_tokens)
    assert rec.chunk_t == sorted(rec.chunk_t)
    assert (rec.t_first is None) == (not rec.chunk_t)
    assert rec.error is None or (isinstance(rec.error, str) and "\n" not in rec.error)


cuts = st.lists(st.integers(min_value=0, max_value=4000), max_size=30)


@SETTINGS
@given(n_out=st.integers(1, 40), per=st.integers(1, 5), usage=st.booleans(), ids=st.booleans(), cuts=cuts)
def test_any_chunk_boundaries_give_the_same_tokens(n_out, per, usage, ids, cuts):
    data = _vllm_stream(n_out, per, usage, ids)
    whole = _feed(data, [], n_out)
    split = _feed(data, cuts, n_out)
    assert whole.ok and split.ok, (whole.error, split.error)
    assert split.n_out == whole.n_out == n_out
    assert split.chunk_tokens == whole.chunk_tokens
    if usage or ids:  # without either, a chunk counts one token (the labelled text_chunks fallback)
        assert sum(split.chunk_tokens) == n_out
    _well_formed(split)


@SETTINGS
@given(n_out=st.integers(1, 20), usage=st.booleans(), at=st.integers(0, 10_000), cuts=cuts)
def test_a_truncated_stream_is_a_failed_request(n_out, usage, at, cuts):
    data = _vllm_stream(n_out, 1, usage, True)
    assume(at < data.rindex(b"[DONE]"))
    rec = _feed(data[:at], cuts, n_out)
    assert rec.error is not None
    _well_formed(rec)


@SETTINGS
@given(data=st.binary(max_size=600), cuts=cuts)
def test_garbage_bytes_never_raise(data, cuts):
    _well_formed(_feed(data, cuts))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["choices", "usage", "completion_tokens", "prompt_tokens", "token_ids", "text",
                         "delta", "content", "error", "object", "message"]), inner, max_size=5),
    max_leaves=20,
)


@SETTINGS
@given(events=st.lists(json_values, max_size=6), cuts=cuts, done=st.booleans())
def test_events_of_any_shape_never_raise(events, cuts, done):
    data = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + (b"data: [DONE]\n\n" if done else b"")
    _well_formed(_feed(data, cuts))


@SETTINGS
@given(n_out=st.integers(2, 10), noise=st.lists(st.sampled_from([b": ping\n\n", b"event: x\n", b"id: 7\n", b"\n"]),
                                                max_size=5), cuts=cuts)
def test_sse_comments_and_fields_are_ignored(n_out, noise, cuts):
    data = b"".join(noise) + _vllm_stream(n_out, 1, True, True)
    rec = _feed(data, cuts, n_out)
    assert rec.ok and rec.n_out == n_out


# ---------------------------------------------------------------- run.json


@pytest.mark.slow
@settings(deadline=None)
@given(data=st.dictionaries(st.sampled_from(["schema_version", "run_id", "status", "created_utc", "harness",
                                             "config", "points", "extra", "error"]), json_values, max_size=9))
def test_parse_summary_raises_only_result_errors(data):
    try:
        parse_summary(data, "x/run.json")
    except ResultError as e:
        assert "\n" not in str(e)


@settings(deadline=None)
@given(data=st.one_of(st.binary(max_size=200), json_values.map(lambda v: json.dumps(v).encode()),
                      st.dictionaries(st.sampled_from(["schema_version", "run_id", "status", "created_utc",
                                                       "harness", "config", "points", "extra"]), json_values,
                                      max_size=8).map(lambda d: json.dumps(d).encode())))
def test_a_published_run_json_of_any_content_is_read_or_refused_with_a_store_error(data):
    from bench.store.store import _parse_untrusted

    try:
        _parse_untrusted(data, "s3://bucket/runs/x/run.json")
    except StoreError as e:
        assert "\n" not in str(e)


@settings(deadline=None)
@given(rel=st.text(max_size=30))
def test_a_run_json_requests_file_is_a_plain_path_or_refused(rel):
    try:
        point = PointResult(point_id="p", load={"kind": "concurrency", "concurrency": 1}, requests_file=rel)
    except ValueError:
        return
    parts = point.requests_file.split("/")
    assert not point.requests_file.startswith("/") and ".." not in parts and "\\" not in point.requests_file


# ---------------------------------------------------------------- request Parquet


@settings(deadline=None)
@given(data=st.binary(max_size=400), flip=st.integers(0, 10_000))
def test_requests_check_raises_only_store_errors(data, flip):
    from bench.store.integrity import check_requests

    point = PointResult(point_id="p", load={"kind": "concurrency", "concurrency": 1}, requests_file="requests/p.parquet", n_requests=1)
    try:
        check_requests(data, point, "x")
    except StoreError as e:
        assert "\n" not in str(e)


# ---------------------------------------------------------------- prompt files


line = st.one_of(
    json_values.map(json.dumps),
    st.text(max_size=30),
    st.builds(lambda p, o: json.dumps({"prompt": p, "output_len": o}), json_values, json_values),
    st.builds(lambda turns: json.dumps({"conversations": turns}), json_values),
)


@pytest.mark.slow
@settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(line, max_size=5), raw=st.binary(max_size=40))
def test_a_prompt_file_of_any_content_is_read_or_refused_in_one_line(tmp_path_factory, lines, raw):
    from bench.load.workload import FilePrompts

    path = tmp_path_factory.mktemp("wl") / "prompts.jsonl"
    path.write_bytes("\n".join(lines).encode() + b"\n" + raw)
    try:
        prompts = FilePrompts(path, output_len=None).prompts(3)
    except BenchError as e:
        assert "\n" not in str(e)
        return
    assert len(prompts) == 3
    assert all(isinstance(p.text, str) and p.text and p.n_out_expected >= 1 for p in prompts)
