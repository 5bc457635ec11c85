"""Trace replay: the four formats on their synthetic samples, send times, Mooncake's shared
prefix blocks (token-exact, never colliding), determinism, one-line errors with file:line."""

from __future__ import annotations

import csv
import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.errors import ConfigError
from bench.load.traces import TraceReplay
from bench.load.workload import make_workload

DATA = Path(__file__).parent / "data" / "traces"
REPO = Path(__file__).resolve().parent.parent
VOCAB = 32000


def _mooncake_rows() -> list[dict]:
    return [json.loads(line) for line in (DATA / "mooncake_sample.jsonl").read_text().splitlines()]


def _csv_rows(name: str) -> list[dict]:
    with (DATA / name).open(newline="") as f:
        return list(csv.DictReader(f))


def _check_prompts(ps, lengths, times_s, speedup):
    assert [(p.n_in_expected, p.n_out_expected) for p in ps] == lengths
    assert all(len(p.token_ids) == p.n_in_expected and all(0 <= t < VOCAB for t in p.token_ids) for p in ps)
    assert ps[0].t_sched_s == 0.0
    assert [p.t_sched_s for p in ps] == pytest.approx([(t - times_s[0]) / speedup for t in times_s], abs=1e-6)
    assert all(a.t_sched_s <= b.t_sched_s for a, b in itertools.pairwise(ps))


def test_mooncake_sample_lengths_times_and_limit():
    rows = _mooncake_rows()
    wl = TraceReplay(DATA / "mooncake_sample.jsonl", "mooncake", VOCAB, seed=1, speedup=2.0)
    ps = wl.prompts(1000)  # more than the trace: what there is
    assert len(ps) == len(rows) == 45
    _check_prompts(ps, [(r["input_length"], r["output_length"]) for r in rows],
                   [r["timestamp"] / 1000 for r in rows], 2.0)
    d = wl.describe()
    assert d["kind"] == "trace" and d["n_requests"] == 45 and d["n_skipped_zero_output"] == 0
    assert d["span_s"] == pytest.approx(rows[-1]["timestamp"] / 1000 / 2.0)
    assert d["n_hash_ids"] == len({h for r in rows for h in r["hash_ids"]}) and d["hash_tokens"] == 5
    limited = TraceReplay(DATA / "mooncake_sample.jsonl", "mooncake", VOCAB, seed=1, speedup=2.0, limit=7)
    assert limited.prompts(100) == ps[:7] and limited.describe()["n_requests"] == 7
    assert wl.prompts(3) == ps[:3]


def test_mooncake_shared_hash_ids_share_exactly_their_block():
    rows, bs = _mooncake_rows(), 512
    ps = TraceReplay(DATA / "mooncake_sample.jsonl", "mooncake", VOCAB, seed=4).prompts(100)
    block: dict[int, list[int]] = {}  # each hash id's tokens where it is a full block
    for r, p in zip(rows, ps):
        for j, h in enumerate(r["hash_ids"]):
            chunk = p.token_ids[j * bs:(j + 1) * bs]
            if len(chunk) == bs:
                assert block.setdefault(h, chunk) == chunk  # every request with h: the same tokens
    users = {h: sum(h in r["hash_ids"] for r in rows) for h in block}
    assert sum(n > 1 for n in users.values()) >= 2
    assert sum(any(users.get(h, 0) > 1 for h in r["hash_ids"]) for r in rows) >= len(rows) / 3
    # different hash ids never give the same block, not even the same first tokens
    assert len({tuple(b[:5]) for b in block.values()}) == len(block)
    # a partial last block is a prefix of that hash id's full block
    partial = [(r, p) for r, p in zip(rows, ps) if r["input_length"] % bs and r["hash_ids"][-1] in block]
    assert partial
    for r, p in partial:
        j = len(r["hash_ids"]) - 1
        tail = p.token_ids[j * bs:]
        assert 0 < len(tail) < bs and block[r["hash_ids"][-1]][:len(tail)] == tail
    # requests with no hash id in common have no block in common
    for a in range(len(rows)):
        for b in range(a + 1, len(rows)):
            if not set(rows[a]["hash_ids"]) & set(rows[b]["hash_ids"]):
                blocks_a = {tuple(ps[a].token_ids[k:k + bs]) for k in range(0, ps[a].n_in_expected, bs)}
                blocks_b = {tuple(ps[b].token_ids[k:k + bs]) for k in range(0, ps[b].n_in_expected, bs)}
                assert not blocks_a & blocks_b and ps[a].token_ids[:5] != ps[b].token_ids[:5]


def test_blocks_fill_and_determinism(tmp_path):
    path = tmp_path / "t.jsonl"  # 8-token blocks: 7 shared by all, 8 and 9 partial, request 3 past its blocks
    path.write_text('{"timestamp": 0, "input_length": 10, "output_length": 1, "hash_ids": [7, 8]}\n'
                    '{"timestamp": 5, "input_length": 12, "output_length": 2, "hash_ids": [7, 9]}\n'
                    '{"timestamp": 9, "input_length": 11, "output_length": 3, "hash_ids": [7]}\n')
    avoid = [0, 1, 2]
    wl = TraceReplay(path, "mooncake", vocab_size=1000, seed=3, block_size=8, special_ids_to_avoid=avoid)
    a = wl.prompts(3)
    assert a == TraceReplay(path, "mooncake", 1000, seed=3, block_size=8, special_ids_to_avoid=avoid).prompts(3)
    assert a != TraceReplay(path, "mooncake", 1000, seed=4, block_size=8, special_ids_to_avoid=avoid).prompts(3)
    assert wl.hash_tokens == 7  # 997 usable ids: 7 base-997 digits spell any 64-bit mix
    assert [len(p.token_ids) for p in a] == [10, 12, 11]
    assert a[0].token_ids[:8] == a[1].token_ids[:8] == a[2].token_ids[:8]
    assert len({tuple(p.token_ids[8:10]) for p in a}) == 3  # blocks 8, 9 and the fill differ
    assert all(3 <= t < 1000 for p in a for t in p.token_ids)
    assert [p.t_sched_s for p in a] == pytest.approx([0.0, 0.005, 0.009])
    with pytest.raises(ConfigError, match="block_size 4 is shorter than the 7 tokens"):
        TraceReplay(path, "mooncake", 1000, block_size=4, special_ids_to_avoid=avoid).prompts(1)
    path.write_text('{"timestamp": 0, "input_length": 3, "output_length": 1}\n'
                    '{"timestamp": 1, "input_length": 3, "output_length": 1}\n')
    unique = TraceReplay(path, "mooncake", VOCAB, seed=0).prompts(2)
    assert unique[0].token_ids != unique[1].token_ids  # no hash ids: tokens of that request alone


def test_azure_sample_datetimes_to_seconds_from_the_first():
    rows = _csv_rows("azure_sample.csv")
    wl = TraceReplay(DATA / "azure_sample.csv", "azure", VOCAB, seed=0, speedup=0.5)
    ps = wl.prompts(100)
    assert len(ps) == len(rows) == 40
    from datetime import datetime
    t = [datetime.fromisoformat(r["TIMESTAMP"][:26]).timestamp() for r in rows]  # 6 of the 7 digits
    _check_prompts(ps, [(int(r["ContextTokens"]), int(r["GeneratedTokens"])) for r in rows], t, 0.5)
    assert rows[0]["TIMESTAMP"] == "2023-11-16 18:15:46.6805900"
    assert 2 < ps[-1].t_sched_s < 30  # a few seconds, slowed down twice
    assert len({tuple(p.token_ids) for p in ps}) == 40
    assert TraceReplay(DATA / "azure_sample.csv", "azure", VOCAB, seed=0, speedup=0.5, limit=5).prompts(100) == wl.prompts(5)


def test_azure_utc_offsets(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n2024-05-10 00:00:00.009930+00:00,4,5\n"
                    "2024-05-10 02:00:01.509930+02:00,6,7\n")
    assert [p.t_sched_s for p in TraceReplay(path, "azure", VOCAB).prompts(2)] == pytest.approx([0.0, 1.5])


def test_burstgpt_sample_skips_failed_requests():
    rows = _csv_rows("burstgpt_sample.csv")
    assert list(rows[0]) == ["Timestamp", "Model", "Request tokens", "Response tokens", "Total tokens", "Log Type"]
    ok = [r for r in rows if r["Response tokens"] != "0"]
    assert len(rows) == 40 and len(ok) == 37
    wl = TraceReplay(DATA / "burstgpt_sample.csv", "burstgpt", VOCAB, seed=2, speedup=4)
    ps = wl.prompts(100)
    _check_prompts(ps, [(int(r["Request tokens"]), int(r["Response tokens"])) for r in ok],
                   [float(r["Timestamp"]) for r in ok], 4)
    d = wl.describe()
    assert d["n_requests"] == 37 and d["n_skipped_zero_output"] == 3
    assert TraceReplay(DATA / "burstgpt_sample.csv", "burstgpt", VOCAB, seed=2, speedup=4, limit=10).prompts(99) == ps[:10]


def test_bench_jsonl_sample():
    rows = [json.loads(line) for line in (DATA / "sample.jsonl").read_text().splitlines()]
    ps = TraceReplay(DATA / "sample.jsonl", "jsonl", VOCAB, seed=5).prompts(100)
    assert len(ps) == len(rows) == 30
    _check_prompts(ps, [(r["input_len"], r["output_len"]) for r in rows], [r["timestamp_s"] for r in rows], 1.0)
    with_block = [p for r, p in zip(rows, ps) if r.get("hash_ids") == [0]]
    shortest = min(with_block, key=lambda p: p.n_in_expected)
    assert len(with_block) == 10
    assert all(p.token_ids[:shortest.n_in_expected] == shortest.token_ids for p in with_block)


def test_make_workload_dispatches_the_trace_kind(monkeypatch):
    monkeypatch.chdir(DATA)  # the path is relative to the current directory
    spec = {"kind": "trace", "format": "burstgpt", "path": "burstgpt_sample.csv", "speedup": 2.0, "limit": 4}
    wl = make_workload(spec, vocab_size=VOCAB, seed=9)
    assert isinstance(wl, TraceReplay) and wl.seed == 9 and wl.speedup == 2.0 and wl.limit == 4
    assert len(wl.prompts(10)) == 4
    assert wl.prompts(4) == TraceReplay(DATA / "burstgpt_sample.csv", "burstgpt", VOCAB, 9, 2.0, 4).prompts(4)
    assert make_workload({**spec, "seed": 1, "block_size": 64}, VOCAB, 9).seed == 1
    desc = wl.describe()
    assert desc["format"] == "burstgpt" and desc["limit"] == 4 and json.loads(json.dumps(desc)) == desc


@pytest.mark.parametrize(("fmt", "content", "line", "message"), [
    ("mooncake", ('{"timestamp": 0, "input_length": 5, "output_length": 1}\n{"timestamp": 1, "input_length": 0, '
                  '"output_length": 1}\n'), 2, "input length must be >= 1 token, got 0"),
    ("mooncake", '{"timestamp": 0, "input_length": 5, "output_length": -3}\n', 1, "output length must be >= 0"),
    ("mooncake", '\n{"timestamp": 0, "input_length": 5}\n', 2, "no 'output_length'"),
    ("mooncake", '{"timestamp": 0, "input_length": "x", "output_length": 1}\n', 1, "input_length must be an integer"),
    ("mooncake", '{"timestamp": 0, "input_length": 5, "output_length": true}\n', 1, "output_length must be an integer"),
    ("mooncake", '{"timestamp": 0, "input_length": 5, "output_length": 1, "hash_ids": [1, -2]}\n', 1, "hash_ids"),
    ("mooncake", '{"timestamp": 0, "input_length": 512, "output_length": 1, "hash_ids": [1, 2]}\n', 1,
     "2 hash_ids of 512 tokens need more than 512 input tokens"),
    ("mooncake", ('{"timestamp": 5, "input_length": 5, "output_length": 1}\n{"timestamp": 4, "input_length": 5, '
                  '"output_length": 1}\n'), 2, "timestamp goes back in time"),
    ("mooncake", '[1]\n', 1, "expected a JSON object per line"),
    ("mooncake", '{"timestamp": 1e300, "input_length": 5, "output_length": 1}\n', 1,
     "timestamp 1e+297 s is out of range"),  # was a replay that waited until killed
    ("jsonl", '{"timestamp_s": -2e11, "input_len": 5, "output_len": 1}\n', 1, "out of range"),
    ("jsonl", ('{"timestamp_s": 0, "input_len": 5, "output_len": 1}\n{"timestamp_s": "soon", "input_len": 5, '
               '"output_len": 1}\n'), 2, "timestamp_s must be a finite number"),
    ("jsonl", '{"timestamp": 0, "input_len": 5, "output_len": 1}\n', 1, "no 'timestamp_s'"),
    ("azure", "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.6805900,5,1\nyesterday,5,1\n", 3,
     "TIMESTAMP is not a datetime"),
    ("azure", "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.6805900,-1,1\n", 2,
     "input length must be >= 1 token, got -1"),
    ("azure", "TIMESTAMP,ContextTokens\n2023-11-16 18:15:46.6805900,5\n", 1, "no column 'GeneratedTokens'"),
    ("burstgpt", "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n1,ChatGPT,5\n", 2,
     "3 fields, the header has 6"),
    ("burstgpt", "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n1,ChatGPT,5.5,1,6,API log\n",
     2, "Request tokens must be an integer"),
])
def test_bad_rows_are_one_config_error_line_with_file_and_line(tmp_path, fmt, content, line, message):
    path = tmp_path / "trace.txt"
    path.write_text(content)
    with pytest.raises(ConfigError) as e:
        TraceReplay(path, fmt, VOCAB).prompts(10)
    assert str(e.value).startswith(f"{path}:{line}: ") and message in str(e.value) and "\n" not in str(e.value)


def test_missing_empty_and_all_failed_traces(tmp_path):
    with pytest.raises(ConfigError, match=r"nope\.jsonl: no such trace file$"):
        TraceReplay(tmp_path / "nope.jsonl", "mooncake", VOCAB).describe()
    path = tmp_path / "b.csv"
    path.write_text("Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n1,ChatGPT,5,0,5,API log\n")
    with pytest.raises(ConfigError, match=r"no requests in trace \(1 rows with output length 0 skipped\)$"):
        TraceReplay(path, "burstgpt", VOCAB).prompts(1)
    path.write_bytes(b'{"timestamp": 0, "input_length": 5, "output_length": 1}\n\x80\n')
    with pytest.raises(ConfigError, match="not UTF-8 text"):
        TraceReplay(path, "mooncake", VOCAB).prompts(1)
    with pytest.raises(ConfigError, match="unknown trace format 'sharegpt'"):
        TraceReplay(path, "sharegpt", VOCAB)


def test_a_limit_stops_reading_before_a_bad_row(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text('{"timestamp_s": 0, "input_len": 5, "output_len": 1}\nnot json\n')
    assert len(TraceReplay(path, "jsonl", VOCAB, limit=1).prompts(5)) == 1
    with pytest.raises(ConfigError, match=":2: not valid JSON"):
        TraceReplay(path, "jsonl", VOCAB).prompts(5)


def test_samples_are_labelled_synthetic_and_remade_byte_for_byte(tmp_path):
    assert "Synthetic, generated by scripts/make_trace_samples.py, not a real trace" in (DATA / "README.md").read_text()
    subprocess.run([sys.executable, str(REPO / "scripts" / "make_trace_samples.py"), "--out", str(tmp_path)],
                   check=True, capture_output=True)
    for name in ("mooncake_sample.jsonl", "azure_sample.csv", "burstgpt_sample.csv", "sample.jsonl", "README.md"):
        assert (tmp_path / name).read_bytes() == (DATA / name).read_bytes(), name


@pytest.mark.slow
def test_distinct_hash_ids_never_share_a_block_even_at_a_tiny_vocab(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text("".join(f'{{"timestamp_s": {i}, "input_len": 64, "output_len": 1, "hash_ids": [{i * 7919}]}}\n'
                            for i in range(2000)))
    binary = TraceReplay(path, "jsonl", vocab_size=2, block_size=64).prompts(2000)
    assert {len(p.token_ids) for p in binary} == {64} and len({tuple(p.token_ids) for p in binary}) == 2000
    wide = TraceReplay(path, "jsonl", vocab_size=VOCAB, block_size=64).prompts(2000)
    assert len({p.token_ids[0] for p in wide}) > 1800  # heads look random: no common leading token
