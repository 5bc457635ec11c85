"""Remove secrets from configs, provenance and logs before they are stored or shared.

Two rules, applied everywhere:
- a value whose *name* says it is secret (a key or CLI flag containing token, key, secret,
  password, credential or auth as a word) is replaced when it is a string;
- a string that *looks* like a credential (hf_..., sk-..., AKIA..., ghp_..., a bearer token,
  `user:password@` in a URL) has that part replaced, whatever its name.

Numbers and booleans are kept (`max_num_batched_tokens: 8192` is not a secret), and so is
`tokenizer`: names are matched by word, not by substring.
"""

from __future__ import annotations

import re
from typing import Any

REDACTED = "<redacted>"

_SECRET_WORDS = {
    "token", "key", "secret", "password", "passwd", "pwd", "credential", "credentials",
    "auth", "authorization", "apikey", "accesskey", "secretkey", "sessiontoken",
}

_VALUE_PATTERNS = [
    re.compile(r"\bhf_[A-Za-z0-9]{16,}"),  # Hugging Face
    re.compile(r"\bsk-[A-Za-z0-9_\-]{16,}"),  # OpenAI-style API keys
    re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),  # AWS access key ids
    re.compile(r"\bgh[pousr]_[A-Za-z0-9]{20,}"),  # GitHub tokens
    re.compile(r"\bxox[abposr]-[A-Za-z0-9\-]{10,}"),  # Slack tokens
    re.compile(r"(?i)(?<=bearer )[A-Za-z0-9._~+/\-]{8,}=*"),  # Authorization: Bearer x
]
_URL_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.\-]*://)[^/@\s:]+:[^/@\s]+@")
# `api_key=abc`, `"hf_token": "abc"`, `--api-key abc` inside free text such as engine.log.
_NAMED_IN_TEXT = re.compile(
    r"(?P<name>--[A-Za-z0-9_\-]+|[A-Za-z0-9_\-]*(?:token|key|secret|password|passwd)[A-Za-z0-9_\-]*)"
    r"(?P<sep>(?<=[A-Za-z0-9_\-])['\"]?\s*[=:]\s*['\"]?|(?<=[A-Za-z0-9_\-])\s+(?=\S))"
    r"(?P<value>[A-Za-z0-9_\-./+=]{8,})",
    re.IGNORECASE,
)


def is_secret_name(name: str) -> bool:
    """True when a key or CLI flag names a secret: one of its words is token, key, secret..."""
    words = [w for w in re.split(r"[^a-z0-9]+", _split_camel(name).lower()) if w]
    if any(w in _SECRET_WORDS for w in words):
        return True
    joined = "".join(words)
    return joined in _SECRET_WORDS


def redact_text(text: str) -> str:
    """Replace credential-looking substrings and `name=value` secrets in free text."""
    out = _URL_USERINFO.sub(lambda m: f"{m.group('scheme')}{REDACTED}@", text)
    for pattern in _VALUE_PATTERNS:
        out = pattern.sub(REDACTED, out)

    def named(m: re.Match) -> str:
        name, sep = m.group("name"), m.group("sep")
        if not name.startswith("--") and not sep.strip():
            return m.group(0)  # "token throughput" in a log line is prose, not a secret
        if not is_secret_name(name.lstrip("-")) or m.group("value") == REDACTED:
            return m.group(0)
        if m.group("value").lower() in {"none", "null", "false", "true"}:
            return m.group(0)
        return f"{m.group('name')}{m.group('sep')}{REDACTED}"

    return _NAMED_IN_TEXT.sub(named, out)


def url_userinfo(url: str) -> str | None:
    """The `user:password` of `scheme://user:password@host/...`, or None: a literal to scrub
    from messages that quote the URL without its scheme (as a backend's error may)."""
    m = _URL_USERINFO.match(url.strip())
    return m.group(0)[len(m.group("scheme")):-1] if m else None


def redact_text_of(text: str, url: str) -> str:
    """`redact_text`, and the userinfo of `url` removed wherever it appears, scheme or not."""
    info = url_userinfo(url)
    if info:
        text = text.replace(info, REDACTED)
    return redact_text(text)


def redact(obj: Any) -> Any:
    """A copy of a JSON-like object (dicts, lists, strings, numbers) with secrets replaced.

    Dict values under secret names become "<redacted>" when they are strings (or lists of
    strings); in lists of CLI arguments the value after a secret flag (`--hf-token X`) and
    `--api-key=X` forms are redacted; every string is also scanned by `redact_text`.
    """
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if isinstance(k, str) and is_secret_name(k) and _is_secret_value(v):
                out[k] = REDACTED if isinstance(v, str) else [REDACTED for _ in v]
            else:
                out[k] = redact(v)
        return out
    if isinstance(obj, (list, tuple)):
        return _redact_args(list(obj))
    if isinstance(obj, str):
        return redact_text(obj)
    return obj


def _redact_args(items: list) -> list:
    out: list = []
    hide_next = False
    for item in items:
        if hide_next and isinstance(item, str) and not item.startswith("--"):
            out.append(REDACTED)
            hide_next = False
            continue
        hide_next = False
        if isinstance(item, str) and item.startswith("--"):
            flag, eq, _ = item.partition("=")
            if is_secret_name(flag[2:]):
                if eq:
                    out.append(f"{flag}={REDACTED}")
                    continue
                hide_next = True
        out.append(redact(item))
    return out


def _is_secret_value(value: Any) -> bool:
    if isinstance(value, str):
        return value != "" and value.lower() not in {"none", "null"}
    if isinstance(value, (list, tuple)):
        return bool(value) and all(isinstance(v, str) for v in value)
    return False


def _split_camel(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name)
