"""Dummy-weight model folders: content, tokenizer size, idempotency, crash safety."""

from __future__ import annotations

import json
import random
import time

import pytest
from tokenizers import Tokenizer

import bench.catalog.prepare
from bench.catalog import get_model, load_models
from bench.catalog.prepare import (
    BOS_ID,
    EOS_ID,
    WORD_TOKEN_START,
    build_tokenizer,
    model_config,
    prepare_model,
)

TINY = ["tiny-llama", "tiny-qwen3-moe", "tiny-deepseek-v2"]


@pytest.mark.parametrize("key", TINY)
def test_tiny_folder_tokenizer_matches_vocab(key, tmp_path):
    spec = get_model(key)
    path = prepare_model(spec, tmp_path)
    config = json.loads((path / "config.json").read_text())
    tok = Tokenizer.from_file(str(path / "tokenizer.json"))
    assert tok.get_vocab_size() == config["vocab_size"] == spec.config.vocab_size
    assert config["architectures"] == spec.config.architectures
    assert (config["bos_token_id"], config["eos_token_id"]) == (BOS_ID, EOS_ID)
    assert tok.id_to_token(BOS_ID) == "<s>" and tok.id_to_token(EOS_ID) == "</s>"
    generation = json.loads((path / "generation_config.json").read_text())
    assert generation["eos_token_id"] == EOS_ID
    tok_config = json.loads((path / "tokenizer_config.json").read_text())
    assert tok_config["tokenizer_class"] == "PreTrainedTokenizerFast" and "chat_template" in tok_config


def test_word_tokens_round_trip_and_any_text_encodes():
    tok = build_tokenizer(4096)
    rng = random.Random(0)
    ids = [rng.randrange(WORD_TOKEN_START, 4096) for _ in range(500)]
    assert tok.encode(tok.decode(ids)).ids == ids
    encoded = tok.encode("Grüße, 123 <|user|>!").ids
    assert encoded and max(encoded) < 4096 and 4 in encoded  # <|user|> is one special token


@pytest.mark.slow
def test_large_vocab_builds_fast():
    t0 = time.perf_counter()
    tok = build_tokenizer(201088)  # gpt-oss
    elapsed_s = time.perf_counter() - t0
    assert tok.get_vocab_size() == 201088
    assert elapsed_s < 5.0  # about 0.5 s on 2 cores; a quadratic build would take minutes


def test_idempotent_and_atomic(tmp_path):
    spec = get_model("tiny-llama")
    first = prepare_model(spec, tmp_path)
    stamp = (first / "tokenizer.json").stat().st_mtime_ns
    second = prepare_model(spec, tmp_path)
    assert second == first and (first / "tokenizer.json").stat().st_mtime_ns == stamp
    assert [p.name for p in tmp_path.iterdir()] == [first.name]  # no temp folder left
    changed = spec.model_copy(update={"config": spec.config.model_copy(update={"vocab_size": 1024})})
    other = prepare_model(changed, tmp_path)
    assert other != first and Tokenizer.from_file(str(other / "tokenizer.json")).get_vocab_size() == 1024


def test_crash_leaves_no_folder(tmp_path, monkeypatch):
    def boom(vocab_size):
        raise RuntimeError("disk full")

    monkeypatch.setattr(bench.catalog.prepare, "build_tokenizer", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        prepare_model(get_model("tiny-llama"), tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.torch
def test_transformers_loads_the_folders(tmp_path):
    from transformers import AutoTokenizer

    llama = get_model("tiny-llama")
    # model_type qwen2 makes transformers rebuild the tokenizer as Qwen2Tokenizer: it must
    # come out the same
    qwen2 = llama.model_copy(
        update={"key": "tiny-qwen2", "config": llama.config.model_copy(update={"model_type": "qwen2"})}
    )
    for spec in [llama, qwen2]:
        tok = AutoTokenizer.from_pretrained(prepare_model(spec, tmp_path))
        assert len(tok) == spec.config.vocab_size
        assert (tok.bos_token_id, tok.eos_token_id) == (BOS_ID, EOS_ID)
        ids = list(range(WORD_TOKEN_START, WORD_TOKEN_START + 50))
        assert tok(tok.decode(ids), add_special_tokens=False)["input_ids"] == ids
        chat = tok.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False)
        assert chat == "<|user|> hi <|end|> <|assistant|> "


@pytest.mark.torch
def test_transformers_accepts_every_catalog_config(tmp_path):
    from transformers import AutoConfig

    for key, spec in load_models().items():
        folder = tmp_path / key
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps(model_config(spec)))
        cfg = AutoConfig.from_pretrained(folder)
        assert cfg.model_type == spec.config.model_type, key
        assert (cfg.num_hidden_layers, cfg.vocab_size) == (spec.config.num_hidden_layers, spec.config.vocab_size)
        if spec.config.is_mla:
            assert cfg.q_lora_rank == spec.config.q_lora_rank, key
