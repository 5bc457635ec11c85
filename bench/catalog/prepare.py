"""Dummy-weight model folders: config.json + a synthetic tokenizer, built offline.

vLLM serves any catalog architecture with random weights (`load_format="dummy"`) given
only this folder; nothing is downloaded. The tokenizer is a byte-level BPE (the family of
Llama 3, Qwen, DeepSeek and gpt-oss tokenizers, with Qwen2's pre-tokenizer, so that
transformers builds the same tokenizer whichever class it picks) whose vocabulary is
exactly the model's `vocab_size`:

    ids 0..6       <pad> <s> </s> <|system|> <|user|> <|assistant|> <|end|>  (special)
    ids 7..262     the 256 single bytes: any text encodes, nothing is unknown
    ids 263..V-1   " a", " b", ..., " z", " aa", " ab", ...: a space and 1+ letters

A word token decodes to " <letters>" and re-encodes to the same id, so a run of word ids
is a token-exact prompt (see `WORD_TOKEN_START`). No BOS is added automatically.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from bench.atomicio import atomic_folder
from bench.catalog import ModelSpec
from bench.errors import ConfigError

TOKENIZER_LAYOUT = 1  # bump when the synthetic tokenizer changes: new folders are built
SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
PAD_ID, BOS_ID, EOS_ID = 0, 1, 2
BYTE_TOKEN_START = len(SPECIAL_TOKENS)
WORD_TOKEN_START = BYTE_TOKEN_START + 256  # ids from here on round-trip through text
# Qwen2's split: letters with an optional leading space stay one piece, digits split.
PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"""
    r"""\s*[\r\n]+|\s+(?!\S)|\s+"""
)
CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|> {{ message['content'] }} <|end|> "
    "{% endfor %}{% if add_generation_prompt %}<|assistant|> {% endif %}"
)
MARKER_FILE = "bench-prepare.json"


def _byte_chars() -> list[str]:
    """GPT-2's printable stand-in for each byte value 0..255 (byte-level BPE alphabet)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    out, extra = {}, 0
    for b in range(256):
        if b in keep:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + extra)
            extra += 1
    return [out[b] for b in range(256)]


def _words(n: int) -> list[str]:
    """The first n letter strings in length-then-alphabetical order (a, ..., z, aa, ...)."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    out: list[str] = []
    level = [""]
    while len(out) < n:
        level = [w + c for w in level for c in letters]
        out.extend(level[: n - len(out)])
    return out


def build_tokenizer(vocab_size: int):
    """A `tokenizers.Tokenizer` with exactly `vocab_size` ids (layout in the module doc)."""
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
    )

    if vocab_size <= WORD_TOKEN_START + 26:
        raise ConfigError(f"vocab_size {vocab_size} is too small for the synthetic tokenizer (> {WORD_TOKEN_START + 26})")
    byte_chars = _byte_chars()
    space = byte_chars[ord(" ")]
    vocab = {t: i for i, t in enumerate(SPECIAL_TOKENS)}
    vocab.update({c: BYTE_TOKEN_START + i for i, c in enumerate(byte_chars)})
    merges = []
    for i, word in enumerate(_words(vocab_size - WORD_TOKEN_START)):
        token = space + word
        vocab[token] = WORD_TOKEN_START + i
        merges.append((token[:-1], token[-1]))  # every prefix is itself a token: one merge each
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    return tok


def model_config(spec: ModelSpec) -> dict[str, Any]:
    """config.json content: the catalog config with the synthetic tokenizer's token ids."""
    cfg = spec.config_json()
    cfg.update(bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID)
    return cfg


def folder_name(spec: ModelSpec) -> str:
    """`<key>-<12 hex>`: a hash of everything written, so a changed config gets a new folder."""
    payload = json.dumps(
        {"config": model_config(spec), "max_context": spec.max_context, "tokenizer": TOKENIZER_LAYOUT},
        sort_keys=True,
    )
    return f"{spec.key}-{hashlib.sha256(payload.encode()).hexdigest()[:12]}"


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def _transformers_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("transformers")
    except PackageNotFoundError:
        return None


def _write_folder(spec: ModelSpec, folder: Path) -> None:
    cfg = model_config(spec)
    # transformers >= 5 runs its old-Mistral-tokenizer check (and warns) on a config
    # without a version.
    cfg["transformers_version"] = _transformers_version() or "5.0.0"
    _write_json(folder / "config.json", cfg)
    _write_json(
        folder / "generation_config.json",
        {"bos_token_id": BOS_ID, "eos_token_id": EOS_ID, "pad_token_id": PAD_ID},
    )
    build_tokenizer(spec.config.vocab_size).save(str(folder / "tokenizer.json"))
    _write_json(
        folder / "tokenizer_config.json",
        {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "bos_token": SPECIAL_TOKENS[BOS_ID],
            "eos_token": SPECIAL_TOKENS[EOS_ID],
            "pad_token": SPECIAL_TOKENS[PAD_ID],
            "unk_token": None,  # byte-level: nothing is unknown (and no class adds its own)
            "model_max_length": spec.max_context,
            "clean_up_tokenization_spaces": False,
            "chat_template": CHAT_TEMPLATE,
        },
    )
    (folder / "chat_template.jinja").write_text(CHAT_TEMPLATE)
    _write_json(
        folder / MARKER_FILE,
        {
            "model": spec.key,
            "hf_repo": spec.hf_repo,
            "weights": "random (load_format=dummy)",
            "tokenizer": f"synthetic byte-level BPE, layout {TOKENIZER_LAYOUT}",
            "vocab_size": spec.config.vocab_size,
        },
    )


def prepare_model(spec: ModelSpec, cache_dir: str | Path) -> Path:
    """The dummy-weight folder of `spec` under `cache_dir`, built if absent.

    Idempotent: the folder name carries a hash of its content, and it is built in a
    temporary folder then renamed, so a crash never leaves a half-written folder.
    """
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    return atomic_folder(cache / folder_name(spec), MARKER_FILE, lambda tmp: _write_folder(spec, tmp))
