"""Workloads: token-exact, seeded, deterministic, special ids avoided; the prompt-file formats."""

from __future__ import annotations

import json

import pytest

from bench.errors import ConfigError
from bench.load.workload import (
    FilePrompts,
    Prompt,
    RandomPrompts,
    SharedPrefixPrompts,
)


def test_random_prompts_are_token_exact_and_seeded():
    wl = RandomPrompts(input_len=64, output_len=16, vocab_size=50, seed=7, special_ids_to_avoid=[0, 1, 2, 49])
    a, b = wl.prompts(20), wl.prompts(20)
    assert a == b  # same seed, same prompts, every call
    assert a != RandomPrompts(64, 16, 50, seed=8).prompts(20)
    for p in a:
        assert len(p.token_ids) == p.n_in_expected == 64 and p.n_out_expected == 16
        assert all(3 <= t <= 48 for t in p.token_ids)
    assert len({tuple(p.token_ids) for p in a}) == 20  # no accidental prefix-cache hits between requests
    seen = {t for p in a for t in p.token_ids}
    assert seen == set(range(3, 49))  # uniform over the allowed ids: all of them show up in 1280 draws
    assert a[0].for_endpoint("completions") == a[0].token_ids
    d = wl.describe()
    assert d["kind"] == "random" and d["seed"] == 7 and d["special_ids_avoided"] == 4


def test_random_length_ranges_are_inclusive_and_bounded():
    wl = RandomPrompts(100, 10, 1000, seed=1, input_len_range=(5, 9), output_len_range=(3, 4))
    ps = wl.prompts(300)
    assert {len(p.token_ids) for p in ps} == {5, 6, 7, 8, 9}
    assert all(len(p.token_ids) == p.n_in_expected for p in ps)
    assert {p.n_out_expected for p in ps} == {3, 4}
    with pytest.raises(ConfigError):
        RandomPrompts(10, 10, 100, input_len_range=(5, 2)).prompts(1)


def test_text_variant_for_chat():
    ps = RandomPrompts(30, 5, 1000, seed=2, as_text=True).prompts(3)
    assert all(len(p.text.split()) == 30 and p.token_ids is None for p in ps)
    assert ps[0].for_endpoint("chat") == ps[0].text
    with pytest.raises(ConfigError, match="chat endpoint needs a text workload"):
        Prompt(3, 3, token_ids=[1, 2, 3]).for_endpoint("chat")


def test_shared_prefix():
    wl = SharedPrefixPrompts(n_prefixes=3, prefix_len=16, suffix_len=4, output_len=8, vocab_size=1000, seed=5)
    ps = wl.prompts(30)
    assert ps == wl.prompts(30)
    assert all(len(p.token_ids) == p.n_in_expected == 20 for p in ps)
    prefixes = {tuple(p.token_ids[:16]) for p in ps}
    assert len(prefixes) == 3
    assert len({tuple(p.token_ids[16:]) for p in ps}) == 30
    assert wl.describe()["n_prefixes"] == 3


def test_file_workload_formats(tmp_path):
    path = tmp_path / "prompts.jsonl"
    lines = [
        {"conversations": [{"from": "human", "value": "hello there you"}, {"from": "gpt", "value": "a b c d"}]},
        {"prompt": "tell me a story", "output_len": 7},
    ]
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    encode = lambda text: [len(w) for w in text.split()]
    wl = FilePrompts(path, seed=1, encode=encode)
    ps = wl.prompts(5)  # cycles over the 2 prompts
    assert ps == wl.prompts(5)
    by_text = {p.text: p for p in ps}
    assert by_text["hello there you"].token_ids == [5, 5, 3] and by_text["hello there you"].n_out_expected == 4
    assert by_text["tell me a story"].n_out_expected == 7 and by_text["tell me a story"].n_in_expected == 4
    assert sum(p.text == "tell me a story" for p in ps) in (2, 3)
    plain = FilePrompts(path, seed=1, output_len=3).prompts(2)
    assert {(p.text, p.n_out_expected, p.token_ids) for p in plain} == {
        ("hello there you", 3, None), ("tell me a story", 7, None)}
    assert wl.describe()["n_prompts"] == 2 and wl.describe()["token_exact"] is True


def test_file_workload_errors_name_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "ok", "output_len": 2}\n{"conversations": [{"from": "human", "value": "x"}]}\n')
    with pytest.raises(ConfigError, match=r"bad.jsonl:2: no output length"):
        FilePrompts(path).prompts(1)
    path.write_text("{not json\n")
    with pytest.raises(ConfigError, match=r"bad.jsonl:1: not valid JSON"):
        FilePrompts(path, output_len=2).prompts(1)
    with pytest.raises(ConfigError, match="no such prompt file"):
        FilePrompts(tmp_path / "missing.jsonl").prompts(1)


def test_make_workload_builds_the_generator_of_a_typed_spec(tmp_path):
    from bench.load.workload import make_workload
    from bench.plan.points import (  # the specs; the generators are *Prompts
        RandomWorkload,
        SharedPrefixWorkload,
    )

    spec = RandomWorkload(input_len=8, output_len=4, input_len_range=(2, 5))
    wl = make_workload(spec, vocab_size=100, seed=3)
    assert isinstance(wl, RandomPrompts) and wl.seed == 3 and wl.input_len_range == (2, 5)
    assert wl.prompts(5) == RandomPrompts(8, 4, 100, seed=3, input_len_range=(2, 5)).prompts(5)
    assert make_workload(RandomWorkload(input_len=8, output_len=4, seed=9), 100, seed=3).seed == 9  # its own seed wins
    sp = make_workload(SharedPrefixWorkload(kind="shared_prefix", prefix_len=4, suffix_len=2, output_len=3), 100, 1)
    assert isinstance(sp, SharedPrefixPrompts) and sp.n_prefixes == 1
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "a b", "output_len": 2}\n')
    assert isinstance(make_workload({"kind": "file", "path": str(path)}, 100, 0), FilePrompts)


def test_make_workload_refuses_bad_dicts_with_one_line():
    from bench.load.workload import make_workload

    with pytest.raises(ConfigError, match="^bad workload input_len: Input should be greater than or equal to 1$"):
        make_workload({"kind": "random", "input_len": 0, "output_len": 4}, 100, 0)
    with pytest.raises(ConfigError, match="^bad workload"):
        make_workload({"kind": "trace"}, 100, 0)


@pytest.mark.parametrize(("content", "message"), [
    (b'[1, 2]\n', "expected a JSON object per line, got list"),  # was AttributeError
    (b'{"conversations": null}\n', "no prompt"),  # was TypeError
    (b'{"conversations": [1, {"from": "human", "value": "hi"}]}\n', "no output length"),
    (b'{"prompt": "hi", "output_len": "many"}\n', "output_len must be an integer >= 1"),  # was ValueError
    (b'{"prompt": "hi", "output_len": true}\n', "output_len must be an integer >= 1"),  # was read as 1
    (b'{"prompt": "hi", "output_len": 2}\n\x80\n', "not UTF-8 text"),  # was UnicodeDecodeError
])
def test_malformed_prompt_files_are_one_config_error_line(tmp_path, content, message):
    path = tmp_path / "p.jsonl"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=message) as e:
        FilePrompts(path).prompts(1)
    assert "\n" not in str(e.value)
