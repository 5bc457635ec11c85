"""Redaction over generated secrets of every shape (issue 17, defect 5): whatever surrounds
it (free text, JSON, a URL, a header), the secret never survives `redact_text`, and the
values bench writes itself (hashes, ids, model names, paths, numbers) are never touched.

The secrets are generated, not real: random alphabets and lengths within each format.
"""

from __future__ import annotations

import base64
import json
import string
from pathlib import Path
from urllib.parse import quote

import pytest
import yaml
from hypothesis import assume, given
from hypothesis import strategies as st

from bench.redact import REDACTED, redact, redact_text

ROOT = Path(__file__).resolve().parents[1]
ALNUM = string.ascii_letters + string.digits
B64 = ALNUM + "+/"
URLSAFE = ALNUM + "-_"
HEXDIGITS = "0123456789abcdef"


def chars(alphabet: str, n: int, m: int | None = None) -> st.SearchStrategy[str]:
    return st.text(alphabet=alphabet, min_size=n, max_size=n if m is None else m)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def aws_secret_like(s: str) -> bool:
    """A 40-character AWS secret access key is 30 bytes from a CSPRNG in base64: both
    letter cases and at least 16 distinct characters, except with probability < 2e-9
    (test_a_random_aws_secret_is_almost_surely_in_the_detected_class); hypothesis favours
    the degenerate draws ("AAAA..."), which no key generator makes."""
    return any(c.isupper() for c in s) and any(c.islower() for c in s) and len(set(s)) >= 16


jwt = st.builds(
    lambda alg, sub, sig: ".".join([b64url(json.dumps({"alg": alg, "typ": "JWT"}).encode()),
                                    b64url(json.dumps({"sub": sub, "iat": 1700000000}).encode()), b64url(sig)]),
    st.sampled_from(["HS256", "RS256", "ES256"]), chars(ALNUM, 1, 20), st.binary(min_size=32, max_size=64))
pem_body = st.lists(chars(B64, 64), min_size=2, max_size=6).map(lambda lines: [*lines, lines[-1][:20] + "=="])
pem_kind = st.sampled_from(["", "RSA ", "EC ", "OPENSSH ", "ENCRYPTED ", "DSA "])

# (secret text as written, the substrings that must not survive)
SHAPES: dict[str, st.SearchStrategy[tuple[str, list[str]]]] = {
    "hf": chars(ALNUM, 34).map(lambda s: ("hf_" + s, ["hf_" + s])),
    "openai": st.tuples(st.sampled_from(["", "proj-", "ant-api03-", "svcacct-"]), chars(URLSAFE, 20, 80)).map(
        lambda t: ("sk-" + t[0] + t[1], ["sk-" + t[0] + t[1]])),
    "github_pat": st.tuples(chars(ALNUM, 22), chars(ALNUM, 59)).map(
        lambda t: (f"github_pat_{t[0]}_{t[1]}", [t[0], t[1]])),
    "github_classic": st.tuples(st.sampled_from("pousr"), chars(ALNUM, 36)).map(
        lambda t: (f"gh{t[0]}_{t[1]}", [t[1]])),
    "aws_key_id": chars(string.ascii_uppercase + "234567", 16).map(lambda s: ("AKIA" + s, ["AKIA" + s])),
    "aws_secret_bare": chars(B64, 40).filter(aws_secret_like).map(lambda s: (s, [s])),
    "jwt": jwt.map(lambda t: (t, [t.split(".")[1], t.split(".")[2]])),
    "bearer": chars(ALNUM + "-._~+/", 16, 60).map(lambda s: (f"Authorization: Bearer {s}", [s])),
    "basic": st.tuples(chars(ALNUM, 3, 12), chars(ALNUM + "!#$%^*", 8, 24)).map(
        lambda t: (f"Authorization: Basic {base64.b64encode(f'{t[0]}:{t[1]}'.encode()).decode()}",
                   [base64.b64encode(f"{t[0]}:{t[1]}".encode()).decode()])),
    "token_url": chars(URLSAFE, 20, 40).map(lambda s: (f"https://{s}@git.example.com/org/repo.git", [s])),
    "password_url": st.tuples(chars(ALNUM, 3, 10), chars(ALNUM + "-._~!$&'()*+,;=%", 8, 24)).map(
        lambda t: (f"http://{t[0]}:{t[1]}@10.0.0.7:8000/v1", [t[1]])),
    "gcs_signed": chars(HEXDIGITS, 512).map(lambda s: (
        ("https://storage.googleapis.com/bkt/runs/x.tar?X-Goog-Algorithm=GOOG4-RSA-SHA256"
         "&X-Goog-Credential=sa%40proj.iam.gserviceaccount.com%2F20260101%2Fauto%2Fstorage%2Fgoog4_request"
         f"&X-Goog-Date=20260101T000000Z&X-Goog-Expires=900&X-Goog-SignedHeaders=host&X-Goog-Signature={s}"), [s])),
    "s3_presigned": st.tuples(chars(HEXDIGITS, 64), chars(B64, 120, 300)).map(lambda t: (
        ("https://bkt.s3.us-east-1.amazonaws.com/runs/x?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential="
         "AKIAIOSFODNN7EXAMPLE%2F20260101%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20260101T000000Z"
         f"&X-Amz-Expires=3600&X-Amz-Security-Token={quote(t[1], safe='')}&X-Amz-SignedHeaders=host"
         f"&X-Amz-Signature={t[0]}"), [t[0], quote(t[1], safe="")[:24]])),
    "azure_sas": st.binary(min_size=32, max_size=32).map(lambda b: (
        ("https://acct.blob.core.windows.net/runs/x.json?sv=2022-11-02&ss=b&srt=o&sp=r&se=2026-01-02T00:00:00Z"
         f"&spr=https&sig={quote(base64.b64encode(b).decode(), safe='')}"),
        [quote(base64.b64encode(b).decode(), safe="")])),
    "pem": st.tuples(pem_kind, pem_body).map(lambda t: (
        f"-----BEGIN {t[0]}PRIVATE KEY-----\n" + "\n".join(t[1]) + f"\n-----END {t[0]}PRIVATE KEY-----",
        [line for line in t[1] if len(line) >= 8])),
    "pem_cut": st.tuples(pem_kind, pem_body).map(lambda t: (  # a log cut off before the END line
        f"-----BEGIN {t[0]}PRIVATE KEY-----\n" + "\n".join(t[1]), [line for line in t[1] if len(line) >= 8])),
}

# Characters that end a token in real text: a secret is never glued to other letters.
DELIMS = " \n\t\"',;()[]{}<>|"
filler = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\r"), max_size=40)
prefix = st.tuples(filler, st.sampled_from(DELIMS)).map("".join)
suffix = st.tuples(st.sampled_from(DELIMS), filler).map("".join)


def _contexts(secret: str) -> list[str]:
    """The secret in free text, in JSON (escaped as a log line would carry it), and as a value."""
    return [secret, json.dumps({"note": secret, "n": 1}), f"value={secret}\nnext line", f"[{secret}]"]


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_no_generated_secret_survives(shape):
    @given(SHAPES[shape], prefix, suffix)
    def check(secret, before, after):
        text, parts = secret
        assume(not any(part in before + after for part in parts))  # the filler is not the secret
        for context in _contexts(text):
            out = redact_text(before + context + after)
            for part in parts:
                assert part not in out, (shape, part, out)
            assert redact_text(out) == out  # idempotent: a second pass changes nothing
        out = redact({"k": text, "argv": ["--flag", text]})
        assert all(part not in json.dumps(out) for part in parts)

    check()


def test_a_random_aws_secret_is_almost_surely_in_the_detected_class():
    """P(40 random base64 characters lack a case or have < 16 distinct ones) < 2e-9: exact,
    by the occupancy distribution and the binomial bound of a missing case."""
    probs = {0: 1.0}
    for _ in range(40):
        nxt: dict[int, float] = {}
        for d, p in probs.items():
            nxt[d] = nxt.get(d, 0.0) + p * d / 64
            nxt[d + 1] = nxt.get(d + 1, 0.0) + p * (64 - d) / 64
        probs = nxt
    few_distinct = sum(p for d, p in probs.items() if d < 16)
    one_case_missing = 2 * (38 / 64) ** 40
    assert few_distinct + one_case_missing < 2e-9


# --- what must survive ------------------------------------------------------------------

def _bench_values() -> list[str]:
    models = yaml.safe_load((ROOT / "models.yaml").read_text())
    values = list(models)
    for spec in models.values():
        values += [str(spec.get(k)) for k in ("hf_repo", "fp8_repo") if spec.get(k)]
    values += [p.stem for p in (ROOT / "hardware").glob("*.yaml")]
    return values + [
        "20260115-tiny-llama-h100-sxm-889f8f287210", "tiny-llama-0b6920c2", "p_c16_in128_out64_r2",
        "/home/user/.cache/bench/models/tiny-llama-dummy", "requests/p_c2.parquet", "s3://bench-results/store",
        "https://huggingface.co/meta-llama/Llama-3.1-8B-Instruct", "vllm==0.32.0", "torch 2.13.0+cpu",
        "max_num_batched_tokens=8192", "--max-num-seqs 256", "'max_num_seqs': 256", '"j_per_token": 0.0513766',
        "j_per_output_token_net: 1.7146683236292177", "tokenizer=/models/x", "Avg generation token throughput",
        "X-Request-Id: 3f9a1c2e-17", "api_key_env: BENCH_API_KEY", "hf_token: null", "NVIDIA H100 80GB HBM3",
    ]


git_sha = chars(HEXDIGITS, 40) | chars(HEXDIGITS.upper(), 40)
sha256 = chars(HEXDIGITS, 64)
uuid = st.uuids().map(str)
number = st.floats(allow_nan=False, allow_infinity=False).map(repr) | st.integers().map(str)


@pytest.mark.parametrize("value", _bench_values())
def test_bench_values_survive(value):
    assert redact_text(value) == value
    assert redact({"value": value, "list": [value]}) == {"value": value, "list": [value]}


@pytest.mark.slow
@given(st.lists(git_sha | sha256 | uuid | number, min_size=1, max_size=6), st.sampled_from([" ", "\n", ", ", "/"]))
def test_hashes_ids_and_numbers_survive(values, sep):
    text = sep.join(values)
    assert redact_text(text) == text
    keyed = {"git_sha": values[0], "content_sha256": values[-1], "j_per_token": 0.5, "sha": values}
    assert redact(keyed) == keyed


def test_committed_results_are_unchanged_by_redaction():
    """The measured false-positive rate on real output: every run.json and engine log
    committed under results/ (about 1 MB) comes through byte for byte."""
    files = [p for p in (ROOT / "results").rglob("*") if p.suffix in (".json", ".log")]
    assert len(files) >= 20
    changed = [str(p.relative_to(ROOT)) for p in files if redact_text(p.read_text()) != p.read_text()]
    assert changed == []


def test_redacted_marker_is_stable():
    assert redact_text(REDACTED) == REDACTED
