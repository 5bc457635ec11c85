"""Secret redaction of configs, provenance and logs (bench.redact)."""

from __future__ import annotations

import pytest

from bench.redact import REDACTED, is_secret_name, redact, redact_text

HF = "hf_" + "Zx9" * 8
SK = "sk-" + "proj_" + "a1" * 12
AKIA = "AKIA" + "ABCDEFGHIJKLMNOP"


@pytest.mark.parametrize("name", ["hf_token", "HF_TOKEN", "api_key", "apiKey", "AWS_SECRET_ACCESS_KEY",
                                  "password", "db-passwd", "Authorization", "aws_session_token", "key"])
def test_secret_names(name):
    assert is_secret_name(name)


@pytest.mark.parametrize("name", ["max_num_batched_tokens", "tokenizer", "kv_cache_dtype", "max_tokens",
                                  "monkey", "keyboard_layout", "n_tokens"])
def test_names_that_are_not_secrets(name):
    assert not is_secret_name(name)


def test_redact_dict_by_name_keeps_numbers_and_booleans():
    src = {"engine_args": {"hf_token": "abc", "api_key": None, "max_num_batched_tokens": 8192,
                           "use_auth_token": True, "tokenizer": "/models/x"},
           "env": {"HF_TOKEN": "whatever", "PATH": "/usr/bin", "AWS_SECRET_ACCESS_KEY": "s3cr3t"}}
    out = redact(src)
    assert out["engine_args"] == {"hf_token": REDACTED, "api_key": None, "max_num_batched_tokens": 8192,
                                  "use_auth_token": True, "tokenizer": "/models/x"}
    assert out["env"] == {"HF_TOKEN": REDACTED, "PATH": "/usr/bin", "AWS_SECRET_ACCESS_KEY": REDACTED}
    assert src["env"]["HF_TOKEN"] == "whatever"  # the input is not modified


def test_redact_values_that_look_like_credentials_whatever_their_name():
    out = redact({"note": f"pulled with {HF}", "x": [SK, AKIA], "url": "https://bob:hunter22@example.com/x"})
    flat = repr(out)
    for secret in (HF, SK, AKIA, "hunter22"):
        assert secret not in flat
    assert out["note"] == f"pulled with {REDACTED}"
    assert out["url"] == f"https://{REDACTED}@example.com/x"


def test_redact_cli_argument_lists():
    argv = ["bench", "run", "--hf-token", "plainvalue", "--api-key=other", "--model", "tiny-llama", "--port", "8000"]
    assert redact(argv) == ["bench", "run", "--hf-token", REDACTED, f"--api-key={REDACTED}",
                            "--model", "tiny-llama", "--port", "8000"]


def test_redact_text_in_logs():
    log = (f"INFO non-default args: {{'api_key': 'plainsecret123', 'max_num_seqs': 256}}\n"
           f"INFO Avg generation token throughput: 12.3 tokens/s\n"
           f"DEBUG --hf-token plaintok999 HF_TOKEN={HF} Authorization: Bearer abc.def.ghi123\n")
    out = redact_text(log)
    for secret in ("plainsecret123", "plaintok999", HF, "abc.def.ghi123"):
        assert secret not in out
    assert "token throughput: 12.3" in out and "'max_num_seqs': 256" in out


def test_redact_is_idempotent():
    once = redact({"hf_token": HF, "argv": ["--api-key", "x" * 10], "log": f"key={SK}"})
    assert redact(once) == once


def test_units_and_references_are_not_secrets():
    assert not is_secret_name("j_per_token") and not is_secret_name("j_per_output_token_net")
    assert not is_secret_name("api_key_env") and not is_secret_name("HF_TOKEN_PATH")
    text = '"j_per_token": 0.0513, api_key_env=BENCH_API_KEY, "api_key": 12345678, password="p@ss w0rd!"'
    assert redact_text(text) == ('"j_per_token": 0.0513, api_key_env=BENCH_API_KEY, "api_key": <redacted>, '
                                 'password="<redacted>"')


def test_a_token_only_url_and_its_userinfo():
    from bench.redact import redact_text_of, url_userinfo

    url = "https://ghs_abcdefghijklmnop0123456789ABCD@github.com/org/repo.git"
    assert redact_text(url) == f"https://{REDACTED}@github.com/org/repo.git"
    assert url_userinfo("s3://AKIAX:pa@ss@bucket/p") == "AKIAX:pa@ss"
    assert redact_text_of("cannot reach AKIAX:pa@ss@bucket", "s3://AKIAX:pa@ss@bucket/p") == \
        f"cannot reach {REDACTED}@bucket"


def test_a_flag_shaped_value_is_no_flag():
    pem = "-----BEGIN PRIVATE KEY-----\n" + "A1b2" * 16 + "\n-----END PRIVATE KEY-----"
    assert redact(["--flag", pem, "--ssl-keyfile", "/etc/key.pem"]) == ["--flag", REDACTED, "--ssl-keyfile",
                                                                         "/etc/key.pem"]
