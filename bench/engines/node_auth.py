"""The shared secret between the head and its node agents, and the request signatures built on it.

Every request to a `bench node serve` agent carries three headers: the sender's wall-clock
time (s since the epoch), a random nonce, and an HMAC-SHA256 under the shared secret of
method, path, time, nonce and the SHA-256 of the body. The agent refuses a request whose time
is more than `WINDOW_S` off its own clock, whose signature does not verify, or whose nonce it
has already seen within the window (a replay). Every answer to an authenticated request is
signed too, bound to the request's nonce, so the head never believes energy figures or a
started process from anything but an agent holding the secret.

The secret comes from the environment, never from a command line (argv is readable by every
user of a machine): `BENCH_NODE_SECRET`, or a file named by `BENCH_NODE_SECRET_FILE` that only
its owner may read (mode 600).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Protocol

from bench.errors import ConfigError

SECRET_ENV = "BENCH_NODE_SECRET"
SECRET_FILE_ENV = "BENCH_NODE_SECRET_FILE"
MIN_SECRET_CHARS = 16
MAX_SECRET_FILE_BYTES = 4096
WINDOW_S = 60.0  # largest accepted |sender time - agent time|; clocks of the nodes must agree within it (NTP)
TIME_HEADER = "X-Bench-Time"
NONCE_HEADER = "X-Bench-Nonce"
SIGNATURE_HEADER = "X-Bench-Signature"
_PROTOCOL = b"bench-node-v1"
_MAX_NONCES = 100_000  # an authenticated head sends ~20 requests/s at most: far under this per window

_HOW = (f"set {SECRET_ENV} (or {SECRET_FILE_ENV}, a file of mode 600) to the same value on the head and every node, "
        "e.g. `python3 -c 'import secrets; print(secrets.token_hex(32))'`")


def load_secret(environ: Mapping[str, str] | None = None) -> bytes:
    """The shared secret from `environ` (default os.environ); ConfigError (one line) when it is
    absent, short, ambiguous, or in a file others can read."""
    env = os.environ if environ is None else environ
    value, path = env.get(SECRET_ENV), env.get(SECRET_FILE_ENV)
    if value and path:
        raise ConfigError(f"both {SECRET_ENV} and {SECRET_FILE_ENV} are set: set one of them")
    if path:
        value = _read_secret_file(Path(path))
    if not value or not value.strip():
        raise ConfigError(f"no node secret: {_HOW}")
    value = value.strip()
    if len(value) < MIN_SECRET_CHARS:
        raise ConfigError(f"the node secret has {len(value)} characters: use at least {MIN_SECRET_CHARS} ({_HOW})")
    return value.encode()


def take_secret() -> bytes:
    """load_secret(), then the secret's variable removed from this process's environment so the
    processes it starts (a node's vLLM) never inherit it."""
    secret = load_secret()
    os.environ.pop(SECRET_ENV, None)
    return secret


def _read_secret_file(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            mode = os.fstat(f.fileno()).st_mode
            data = f.read(MAX_SECRET_FILE_BYTES + 1)
    except OSError as e:
        raise ConfigError(f"{SECRET_FILE_ENV}: cannot read {path}: {e.strerror or e}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"{SECRET_FILE_ENV}: {path} is readable by others (mode {stat.S_IMODE(mode):o}): chmod 600 {path}")
    if len(data) > MAX_SECRET_FILE_BYTES:
        raise ConfigError(f"{SECRET_FILE_ENV}: {path} is larger than {MAX_SECRET_FILE_BYTES} bytes: not a secret")
    try:
        return data.decode()
    except UnicodeDecodeError:
        raise ConfigError(f"{SECRET_FILE_ENV}: {path} is not text") from None


def _request_mac(secret: bytes, method: str, path: str, time_text: str, nonce: str, body: bytes) -> str:
    message = b"\n".join([_PROTOCOL, method.encode(), path.encode(), time_text.encode(), nonce.encode(),
                          hashlib.sha256(body).hexdigest().encode()])
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def sign_request(secret: bytes, method: str, path: str, body: bytes, *, now_s: float | None = None,
                 nonce: str | None = None) -> dict[str, str]:
    """The headers that authenticate one request (`path` exactly as sent, query included)."""
    time_text = f"{time.time() if now_s is None else now_s:.3f}"
    nonce = nonce or secrets.token_hex(16)
    return {TIME_HEADER: time_text, NONCE_HEADER: nonce,
            SIGNATURE_HEADER: _request_mac(secret, method, path, time_text, nonce, body)}


def sign_answer(secret: bytes, nonce: str, status: int, body: bytes) -> str:
    """The signature of an answer to the request that carried `nonce`."""
    message = b"\n".join([_PROTOCOL + b"-answer", nonce.encode(), str(status).encode(),
                          hashlib.sha256(body).hexdigest().encode()])
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def answer_is_signed(secret: bytes, nonce: str, status: int, body: bytes, signature: str | None) -> bool:
    return signature is not None and bool(signature) and hmac.compare_digest(
        sign_answer(secret, nonce, status, body), signature)


class Unauthenticated(Exception):
    """A request the agent refuses as unauthenticated (HTTP 401); the message is one line."""


class Headers(Protocol):
    """A request's headers as the agent reads them: a dict, or http.server's message."""

    def get(self, name: str, /) -> str | None: ...


class RequestVerifier:
    """The agent's side: fresh time first (before any body is read), then signature, then replay."""

    def __init__(self, secret: bytes, window_s: float = WINDOW_S, clock: Callable[[], float] = time.time):
        self.secret = secret
        self.window_s = window_s
        self.clock = clock
        self._seen: dict[str, float] = {}  # nonce -> when it leaves the window (s, agent clock)
        self._pruned_at = clock()
        self._lock = threading.Lock()

    def check_fresh(self, headers: Headers) -> tuple[str, str, str]:
        """Unauthenticated unless the three headers are present and well formed and the sender's
        time is within the window of this clock; else (time, nonce, signature) as sent."""
        time_text, nonce, signature = (headers.get(h) for h in (TIME_HEADER, NONCE_HEADER, SIGNATURE_HEADER))
        if not (time_text and nonce and signature):
            raise Unauthenticated(f"not signed: every request needs {TIME_HEADER}, {NONCE_HEADER} and {SIGNATURE_HEADER} "
                                  f"(a head with the shared secret, {SECRET_ENV})")
        if not (8 <= len(nonce) <= 64 and nonce.isalnum()) or len(signature) != 64:
            raise Unauthenticated("malformed nonce or signature")
        try:
            sent_s = float(time_text)
        except ValueError:
            raise Unauthenticated(f"malformed {TIME_HEADER}") from None
        off_s = sent_s - self.clock()
        if not abs(off_s) <= self.window_s:  # also refuses nan
            raise Unauthenticated(f"request time is {off_s:+.0f} s off this node's clock (window {self.window_s:.0f} s): "
                                  "synchronise the clocks (NTP)")
        return time_text, nonce, signature

    def verify(self, method: str, path: str, headers: Headers, body: bytes) -> str:
        """The request's nonce once its signature verifies and the nonce is new; Unauthenticated otherwise."""
        time_text, nonce, signature = self.check_fresh(headers)
        if not hmac.compare_digest(_request_mac(self.secret, method, path, time_text, nonce, body), signature):
            raise Unauthenticated("bad signature: the head and this node hold different secrets, or the request was altered")
        now = self.clock()
        with self._lock:
            if now - self._pruned_at > self.window_s:  # nonces out of the window can never be accepted again
                self._seen = {n: until for n, until in self._seen.items() if until >= now}
                self._pruned_at = now
            if nonce in self._seen:
                raise Unauthenticated("replayed request (its nonce was seen already)")
            if len(self._seen) >= _MAX_NONCES:
                raise Unauthenticated("too many requests in the replay window")
            self._seen[nonce] = float(time_text) + self.window_s
        return nonce
