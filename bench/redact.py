"""Remove secrets from configs, provenance, logs and error lines before they are written.

Two rules, applied everywhere:
- a value whose *name* says it is secret (a key or CLI flag containing token, key, secret,
  password, credential or auth as a word) is replaced when it is a string;
- a string that *looks* like a credential is replaced whatever its name: provider tokens
  (hf_, sk-, github_pat_, ghp_, glpat-, xox?-, AKIA, AIza, npm_, pypi-), JWTs, a URL's
  userinfo (`user:pass@` and a token alone, `TOKEN@`), signed-URL parameters (S3/GCS
  `X-*-Signature`/`Credential`, Azure `sig=`), `Authorization:` values (Basic, Bearer, ...),
  whole PEM private-key blocks, and bare 40-character AWS secret access keys.

Numbers and booleans are kept (`max_num_batched_tokens: 8192` is not a secret), and so is
`tokenizer`: names are matched by word, not by substring; words after "per" are a unit
(`j_per_output_token`), and a name ending in env/file/path/dir names where a secret is, not the
secret (`api_key_env: BENCH_API_KEY`). A 40-character hex string is a git sha, never an
AWS key: only base64-looking strings with both letter cases are taken for one.

Why hand-written patterns and not Yelp's detect-secrets (1.5.0, measured with
scripts/redact_eval.py on the committed run.json files and engine logs, 1.04 MB): its regex
plugins report 1 of the 11 shapes above whole (user:pass@ URLs); they miss token-only URLs,
signed URLs, Authorization values, github_pat_ and bare AWS keys, flag a PEM key by its
BEGIN line only and cut a JWT before its signature. Its hex entropy plugin flags 30 values
that must survive (git shas, manifest sha256s). It reports values per line, not spans,
needs global settings and `requests`, and its 27 plugins took 9.5 s on that text where
redact_text takes about 1 s (same 2-core box, same minute).
"""

from __future__ import annotations

import re
from typing import Any

REDACTED = "<redacted>"

_SECRET_WORDS = {
    "token", "key", "secret", "password", "passwd", "pwd", "credential", "credentials",
    "auth", "authorization", "apikey", "accesskey", "secretkey", "sessiontoken",
}
# A name ending in one of these holds where a secret is (a variable name, a path), not the secret.
_REFERENCE_WORDS = {"env", "file", "path", "dir"}
_KEEP_VALUES = {"none", "null", "false", "true", "", REDACTED}
_AUTH_SCHEMES = {"basic", "bearer", "digest", "token", "negotiate", "ntlm", "aws4-hmac-sha256", "apikey"}


def _nocase(word: str) -> str:
    """`word` as a case-insensitive pattern of plain character classes (sre scans for those
    far faster than for an IGNORECASE alternation)."""
    return "".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else re.escape(c) for c in word)


# Each shape starts with its literal and checks the character before it afterwards: sre
# skips to a literal prefix quickly, a leading look-behind costs 30-100x more.
_TOKEN_SHAPES = [re.compile(p) for p in (
    r"hf_(?<![A-Za-z0-9]hf_)[A-Za-z0-9]{16,}",  # Hugging Face
    r"sk-(?<![A-Za-z0-9]sk-)[A-Za-z0-9_\-]{16,}",  # OpenAI / Anthropic style API keys
    r"[sr]k_(?:live|test)_(?<![A-Za-z0-9].k_...._)[A-Za-z0-9]{16,}",  # Stripe
    r"(?:AKIA|ASIA|ABIA|ACCA)(?<![A-Z0-9]....)[0-9A-Z]{16}(?![A-Z0-9])",  # AWS access key ids
    r"github_pat_(?<![A-Za-z0-9]github_pat_)[A-Za-z0-9_]{20,}",  # GitHub fine-grained tokens
    r"gh[pousr]_(?<![A-Za-z0-9]gh._)[A-Za-z0-9]{20,}",  # GitHub classic tokens
    r"glpat-(?<![A-Za-z0-9]glpat-)[A-Za-z0-9_\-]{20,}",  # GitLab
    r"xox[abposr]-(?<![A-Za-z0-9]xox.-)[A-Za-z0-9\-]{10,}",  # Slack
    r"AIza(?<![A-Za-z0-9]AIza)[0-9A-Za-z_\-]{35}",  # Google API keys
    r"npm_(?<![A-Za-z0-9]npm_)[A-Za-z0-9]{36}",  # npm
    r"pypi-(?<![A-Za-z0-9]pypi-)[A-Za-z0-9_\-]{50,}",  # PyPI upload tokens
    r"eyJ(?<![A-Za-z0-9_\-]eyJ)[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}(?:\.[A-Za-z0-9_\-]+)?",  # JWT: {"... . ... [. sig]
)]
_BEARER = re.compile("(?P<word>" + _nocase("bearer") + r"[ \t]+)[A-Za-z0-9._~+/\-]{8,}=*")  # without "Authorization"
# Everything from BEGIN to END; a key cut off before its END line loses its whole base64 body.
_PEM = re.compile(
    r"-----BEGIN (?P<kind>[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?)-----"
    r"(?:[\s\S]{0,65536}?-----END (?P=kind)-----|(?:\\[nrt]|[A-Za-z0-9+/=\s:,\-])*)")
_AUTH_HEADER = re.compile(
    r"(?P<head>" + _nocase("authorization") + r"['\"]?\s*[:=]\s*['\"]?)"
    r"(?P<scheme>(?i:" + "|".join(re.escape(s) for s in sorted(_AUTH_SCHEMES)) + r")[ \t]+)?"
    r"(?P<cred>[^'\"\r\n]+)")
# Up to the authority's last "@", as urlsplit reads it (`user:p@ss@host`: the password is p@ss).
_USERINFO = r"(?P<info>[^/\s?#\"<>]+)@"
_URL_USERINFO = re.compile(r"://" + _USERINFO)
_URL_START = re.compile(r"[a-zA-Z][a-zA-Z0-9+.\-]*://" + _USERINFO)
_QUERY_PARAM = re.compile(r"(?P<lead>[?&;])(?P<name>[A-Za-z0-9_.\-]+)=(?P<value>[^&#\s'\"<>]+)")
_QUERY_SECRET_NAMES = {
    "sig", "signature", "x-amz-signature", "x-amz-credential", "x-amz-security-token", "x-goog-signature",
    "x-goog-credential", "googleaccessid", "awsaccesskeyid", "code",
}
# A bare AWS secret access key: 40 base64 characters (30 random bytes), alone.
_AWS_SECRET = re.compile(r"(?<![A-Za-z0-9/+])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])")
_HEX = re.compile(r"[0-9a-fA-F]+")
# `api_key=abc`, `"hf_token": "abc"`, `--api-key abc` inside free text such as engine.log: found
# from the secret word on; the name's start is found by looking back (`_named_in_text`).
_NAMED_IN_TEXT = re.compile(
    r"(?:" + "|".join(_nocase(w) for w in ("token", "key", "secret", "passw", "pwd", "credential", "auth")) + r")"
    r"[A-Za-z0-9_\-]*(?P<sep>['\"]?[ \t]*[=:][ \t]*|[ \t]+)"
    r"(?P<value>\"[^\"\r\n]*\"|'[^'\r\n]*'|(?![\[({<])[^\s'\",;&)}\]]+)")  # a list or dict is no secret
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")
# After a bare "token:"/"password:", a value is taken for a secret when it is long or not a plain word.
_PROSE_SECRET = re.compile(r"[0-9+/=_\-]|^.{12}")
_FLAG = re.compile(r"--[A-Za-z0-9][A-Za-z0-9_.\-]*")
_FLOAT = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+(?:\.\d*)?[eE][-+]?\d+)")


def is_secret_name(name: str) -> bool:
    """True when a key or CLI flag names a secret: one of its words is token, key, secret...
    (not after "per": `j_per_output_token` is a unit), and its last word is not env/file/path/dir."""
    words = [w for w in re.split(r"[^a-z0-9]+", _split_camel(name).lower()) if w]
    if not words or words[-1] in _REFERENCE_WORDS:
        return False
    if "per" in words:  # a unit: what comes after "per" is counted, not held
        words = words[:words.index("per")]
    if any(w in _SECRET_WORDS for w in words):
        return True
    return "".join(words) in _SECRET_WORDS


def redact_text(text: str) -> str:
    """Replace credential-looking substrings and `name=value` secrets in free text."""
    out = _PEM.sub(REDACTED, text)
    out = _AUTH_HEADER.sub(_auth_header, out)
    out = _URL_USERINFO.sub(f"://{REDACTED}@", out)
    out = _QUERY_PARAM.sub(_query_param, out)
    for pattern in _TOKEN_SHAPES:
        out = pattern.sub(REDACTED, out)
    out = _BEARER.sub(lambda m: m.group("word") + REDACTED, out)
    out = _AWS_SECRET.sub(_aws_secret, out)
    return _named_in_text(out)


def url_userinfo(url: str) -> str | None:
    """The userinfo of `scheme://userinfo@host/...` (`user:password`, or a token alone), or
    None: a literal to scrub from messages that quote the URL without its scheme."""
    m = _URL_START.match(url.strip())
    return m.group("info") if m else None


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


def _auth_header(m: re.Match) -> str:
    head, scheme, cred = m.group("head"), m.group("scheme") or "", m.group("cred")
    if scheme:  # everything after the scheme (Digest and AWS4 carry several parameters)
        tail = cred.rstrip()
        return m.group(0) if tail == REDACTED else f"{head}{scheme}{REDACTED}{cred[len(tail):]}"
    first = re.match(r"[^\s'\",;]+", cred)
    if first is None or first.group(0) == REDACTED or first.group(0).lower() in _KEEP_VALUES:
        return m.group(0)
    return f"{head}{REDACTED}{cred[first.end():]}"


def _query_param(m: re.Match) -> str:
    name = m.group("name")
    if name.lower() in _QUERY_SECRET_NAMES or is_secret_name(name):
        return f"{m.group('lead')}{name}={REDACTED}"
    return m.group(0)


def _aws_secret(m: re.Match) -> str:
    s = m.group(0)
    looks_random = (not _HEX.fullmatch(s) and any(c.isupper() for c in s) and any(c.islower() for c in s)
                    and len(set(s)) >= 16)
    return REDACTED if looks_random else s


def _named_in_text(text: str) -> str:
    """Each `name<sep>value` whose name is a secret's gets its value replaced. A candidate
    turned down is left from its separator on, so a secret inside its value is still seen."""
    out: list[str] = []
    done = pos = 0
    while (m := _NAMED_IN_TEXT.search(text, pos)) is not None:
        start = m.start()
        while start > 0 and m.start() - start < 200 and text[start - 1] in _NAME_CHARS:
            start -= 1
        value = _named_value(text[start:m.start("sep")], m.group("sep"), m.group("value"))
        if value is None:
            pos = m.end("sep")
            continue
        out += [text[done:m.start("value")], value]
        done = pos = m.end()
    return "".join(out) + text[done:]


def _named_value(name: str, sep: str, value: str) -> str | None:
    """The replacement of `value` after `name` and `sep`, or None where it is no secret."""
    flag = name.startswith("--")
    if not flag and not sep.strip():
        return None  # "token throughput" in a log line is prose, not a secret
    if not is_secret_name(name.lstrip("-")):
        return None
    quoted = value[:1] in "\"'" and len(value) >= 2
    inner = value[1:-1] if quoted else value
    if inner.lower() in _KEEP_VALUES or inner.lower() in _AUTH_SCHEMES or _FLOAT.fullmatch(inner):
        return None
    if not quoted and flag and not sep.strip() and inner.startswith("-"):
        return None  # `--api-key --next-flag`
    if not quoted and ":" in sep and name.lower() in _SECRET_WORDS and not _PROSE_SECRET.search(inner):
        return None  # "invalid token: expired": after a bare word and a colon, a word is prose
    return f"{value[0]}{REDACTED}{value[-1]}" if quoted else REDACTED


def _redact_args(items: list) -> list:
    out: list = []
    hide_next = False
    for item in items:
        if hide_next and isinstance(item, str) and not item.startswith("--"):
            out.append(REDACTED)
            hide_next = False
            continue
        hide_next = False
        flag, eq, _ = item.partition("=") if isinstance(item, str) else ("", "", "")
        if _FLAG.fullmatch(flag) and is_secret_name(flag[2:]):  # `--api-key=X` or `--api-key X`
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
