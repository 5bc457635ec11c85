"""bench.redact against the text bench uploads: speed, and what it changes, on every run.json
and engine log committed under results/ (all of it must come through unchanged); and,
when detect-secrets is importable, the same for its plugins, plus which of the secret
shapes bench redacts each one finds (the comparison quoted in bench/redact.py).

    python3 scripts/redact_eval.py
    pip install --target /tmp/ds detect-secrets && PYTHONPATH=/tmp/ds python3 scripts/redact_eval.py

Figures on the 2-core box (2026-12-07, load average about 15, 1.04 MB): redact_text
0.8-1.4 s, 0 lines changed, 11 of 11 shapes (the base commit's: 3.0-4.2 s in the same
minutes, 106 lines changed, 2 of 11); detect-secrets 1.5.0, 27 plugins, analyze_string per
line: 9.5 s, 1 of 11 shapes reported whole, its hex entropy plugin flagging 30 git shas and
sha256s.
"""

from __future__ import annotations

import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# shape: (text as written, the secret part that must not survive)
SHAPES = {
    "token-only url": ("https://Zk3xQ9mP2vR7tY1wB4nCqq@git.example.com/x", "Zk3xQ9mP2vR7tY1wB4nCqq"),
    "gcs signed url": ("https://storage.googleapis.com/b/o?X-Goog-Algorithm=GOOG4-RSA-SHA256&X-Goog-Signature="
                       + "ab12" * 64, "ab12" * 64),
    "azure sas": ("https://acct.blob.core.windows.net/c/b?sv=2022-11-02&sig=AbCdEf%2BGhIjKl%2FmnOpQrStUvWxYz0123%3D",
                  "AbCdEf%2BGhIjKl%2FmnOpQrStUvWxYz0123%3D"),
    "s3 presigned": ("https://b.s3.amazonaws.com/k?X-Amz-Date=20260101T000000Z&X-Amz-Signature=" + "0f1e" * 16,
                     "0f1e" * 16),
    "basic header": ("Authorization: Basic dXNlcjpodW50ZXIyLXNlY3JldA==", "dXNlcjpodW50ZXIyLXNlY3JldA=="),
    "bearer header": ("Authorization: Bearer abcDEF123456ghiJKL", "abcDEF123456ghiJKL"),
    "pem body": (("-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj\n"
                  "-----END PRIVATE KEY-----"), "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj"),
    "jwt": ("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
            "dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"),
    "github_pat": ("github_pat_11ABCDEFG0123456789abc_" + "A1b2C3d4E5" * 5 + "f6G7h8I9j", "A1b2C3d4E5" * 5),
    "bare aws secret": ("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
    "user:pass url": ("http://bench:hunter2-secret@10.0.0.7:8000/v1", "hunter2-secret"),
}


def corpus() -> list[str]:
    return [p.read_text() for p in sorted((ROOT / "results").rglob("*")) if p.suffix in (".json", ".log")]


def bench_redact(texts: list[str]) -> None:
    from bench.redact import redact_text

    n = sum(map(len, texts))
    t0 = time.perf_counter()
    changed = sum(sum(a != b for a, b in zip(t.splitlines(), redact_text(t).splitlines())) for t in texts)
    dt = time.perf_counter() - t0
    print(f"bench.redact: {n / 1e6:.2f} MB in {dt:.2f} s ({n / dt / 1e6:.2f} MB/s), {changed} lines changed")
    found = [name for name, (text, secret) in SHAPES.items() if secret not in redact_text(f"value {text} end")]
    print(f"  shapes redacted: {len(found)} of {len(SHAPES)}" + (f" (not: {set(SHAPES) - set(found)})"
                                                               if len(found) < len(SHAPES) else ""))


def detect_secrets(texts: list[str]) -> None:
    try:
        from detect_secrets.core.plugins.util import (
            get_mapping_from_secret_type_to_class,
        )
        from detect_secrets.plugins.high_entropy_strings import (
            Base64HighEntropyString,
            HexHighEntropyString,
        )
    except ImportError:
        print("detect-secrets: not importable (see the module docstring to compare)")
        return
    entropy = (Base64HighEntropyString, HexHighEntropyString)
    plugins = [cls(limit=4.5) if cls is Base64HighEntropyString else cls(limit=3.0) if cls is HexHighEntropyString
               else cls() for cls in get_mapping_from_secret_type_to_class().values()]
    lines = [line for t in texts for line in t.splitlines()]
    n = sum(map(len, lines))
    t0 = time.perf_counter()  # analyze_string: the cheapest call, values only, no filters
    for line in lines:
        for p in plugins:
            list(p.analyze_string(line))
    dt = time.perf_counter() - t0
    flagged = [s.secret_value for line in lines for p in plugins if isinstance(p, entropy)
               for s in p.analyze_line(filename="run.json", line=line)]
    print(f"detect-secrets ({len(plugins)} plugins, analyze_string per line): {n / 1e6:.2f} MB in {dt:.2f} s "
          f"({n / dt / 1e6:.2f} MB/s); its entropy plugins (analyze_line, limits 4.5 / 3.0) flag {len(flagged)} "
          f"values that must survive, e.g. {flagged[:2]}")
    found = [name for name, (text, secret) in SHAPES.items()
             if any(secret in v for p in plugins if not isinstance(p, entropy)
                    for v in p.analyze_string(f"value {text} end"))]
    print(f"  shapes whose secret its regex plugins report whole: {len(found)} of {len(SHAPES)}: {found}")

if __name__ == "__main__":
    texts = corpus()
    bench_redact(texts)
    detect_secrets(texts)
