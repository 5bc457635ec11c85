"""Dummy-weight model folders: config.json + a synthetic tokenizer, built offline.

vLLM serves any catalog architecture with random weights (`load_format="dummy"`) given
only this folder; nothing is downloaded. The tokenizer is a word-level one whose vocabulary
is exactly the model's `vocab_size`:

    id 0..7   <unk> <s> </s> <pad> <|system|> <|user|> <|assistant|> <|end|>
    id i >= 8 "t<i>"  (so decode(ids) re-encodes to the same ids: token-exact prompts)

Words are split on whitespace; any word not in the vocabulary becomes <unk>. No BOS is
added automatically, so a prompt of N token ids is N tokens to the server too.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from bench.catalog import ModelSpec
from bench.errors import ConfigError

TOKENIZER_LAYOUT = 1  # bump when the synthetic tokenizer changes: new folders are built
SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
UNK_ID, BOS_ID, EOS_ID, PAD_ID = 0, 1, 2, 3
CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|> {{ message['content'] }} <|end|> "
    "{% endfor %}{% if add_generation_prompt %}<|assistant|> {% endif %}"
)
MARKER_FILE = "bench-prepare.json"


def synthetic_token(token_id: int) -> str:
    """The text of a token id in the synthetic vocabulary."""
    return SPECIAL_TOKENS[token_id] if token_id < len(SPECIAL_TOKENS) else f"t{token_id}"


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


def build_tokenizer(vocab_size: int):
    """A `tokenizers.Tokenizer` with exactly `vocab_size` ids (layout in the module doc)."""
    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers

    if vocab_size <= len(SPECIAL_TOKENS):
        raise ConfigError(f"vocab_size {vocab_size} leaves no room beside {len(SPECIAL_TOKENS)} special tokens")
    vocab = {synthetic_token(i): i for i in range(vocab_size)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    return tok


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def _write_folder(spec: ModelSpec, folder: Path) -> None:
    cfg = model_config(spec)
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
            "unk_token": SPECIAL_TOKENS[UNK_ID],
            "pad_token": SPECIAL_TOKENS[PAD_ID],
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
            "tokenizer": f"synthetic word-level, layout {TOKENIZER_LAYOUT}",
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
    final = cache / folder_name(spec)
    if (final / MARKER_FILE).is_file():
        return final
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=cache))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private; the cache may be shared
        _write_folder(spec, tmp)
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / MARKER_FILE).is_file():  # not a concurrent twin: a real failure
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final
