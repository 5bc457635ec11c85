"""The streaming client: one request to an OpenAI-compatible API -> one RequestRecord.

Timing follows docs/measurement.md section 1. The client asks the server to count tokens
(`stream_options.continuous_usage_stats`: every chunk carries the cumulative
`usage.completion_tokens`; `return_token_ids` as the second source); bench.load.sse turns
the events into the record's token-bearing chunks.

HTTP/1.1 is spoken by an asyncio protocol per keep-alive connection, with httptools (the
llhttp parser uvicorn uses) for status, headers and chunked framing. The hot path of a
streamed token is then: the event loop reads the socket and calls `data_received`, which
stamps `perf_counter()` once for the read, the C parser de-chunks it and hands the body
bytes to the SSE parser. No task is woken and no future resolved per chunk (an aiohttp
stream costs both, plus its StreamReader, per read: 2-3x the CPU per token here).

- `t_send` is stamped immediately before the request bytes are handed to the socket, on a
  connection that is already open (connecting is not in the request's latency).
- Arrival is the stamp of the read that carried the bytes, taken in `data_received` before
  any parsing, so the parsing of other streams woken in the same loop iteration does not
  delay it. Every SSE event in one read gets that stamp.

Two limits end a request that would otherwise hang (the record gets a `timeout: ...`
error, a failed request like any other): the request limit (connect to last byte) and the
stall limit (no byte from the server for that long, headers included). The request limit
is one `asyncio.timeout`; the stall limit is a watchdog timer that fires once per
`stall_timeout_s` and reads the connection's last-read stamp, so no work is added per chunk.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import json
import resource
import secrets
import ssl
import time
from dataclasses import dataclass, field
from typing import Self
from urllib.parse import unquote, urlsplit

import httptools

from bench.errors import one_line
from bench.load.records import RequestRecord
from bench.load.sse import StreamParser
from bench.redact import redact_text

_StreamParser = StreamParser  # the name the tests and property tests know

ENDPOINTS = {"completions": "/v1/completions", "chat": "/v1/chat/completions"}
ERROR_BODY_BYTES = 4096  # of a non-200 answer, kept for its one-line error
DEFAULT_STALL_TIMEOUT_S = 300.0  # no byte for this long: queueing + prefill before a first token fits
# The request limit when none is given: generous per-token budgets over the expected lengths.
REQUEST_TIMEOUT_BASE_S = 300.0
REQUEST_TIMEOUT_PER_OUTPUT_TOKEN_S = 1.0
REQUEST_TIMEOUT_PER_INPUT_TOKEN_S = 0.01


@dataclass(frozen=True)
class ClientConfig:
    """Request options shared by every request of a load point."""

    endpoint: str = "completions"  # "completions" | "chat"
    timeout_s: float | None = None  # whole request, connect to last byte; None: default_request_timeout_s
    stall_timeout_s: float | None = DEFAULT_STALL_TIMEOUT_S  # no byte received for this long; None: off
    temperature: float = 0.0
    ignore_eos: bool = True
    return_token_ids: bool = True
    continuous_usage: bool = True
    # Extra request headers, (name, value) pairs: an endpoint's `Authorization`. They travel to the
    # client workers with the config (pickled through a pipe) and are never described or written.
    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    keep_answers: bool = False  # issue 21, lora: keep each answer's JSON text in its record (structured output)

    def describe(self) -> dict:
        auth = {"auth": ", ".join(name for name, _ in self.headers)} if self.headers else {}
        return auth | {
            "endpoint": self.endpoint,
            "timeout_s": self.timeout_s if self.timeout_s is not None else "from expected lengths",
            "stall_timeout_s": self.stall_timeout_s,
            "temperature": self.temperature,
            "ignore_eos": self.ignore_eos,
            "return_token_ids": self.return_token_ids,
            "continuous_usage_stats": self.continuous_usage,
        }

    def request_timeout_s(self, n_in_expected: int, n_out_expected: int) -> float:
        """The request limit in s for one request: `timeout_s`, or derived from its expected lengths."""
        if self.timeout_s is not None:
            return self.timeout_s
        return default_request_timeout_s(n_in_expected, n_out_expected)


def default_request_timeout_s(n_in_expected: int, n_out_expected: int) -> float:
    """300 s + 1 s per output token + 10 ms per prompt token (s): far above any healthy request."""
    return (REQUEST_TIMEOUT_BASE_S + REQUEST_TIMEOUT_PER_OUTPUT_TOKEN_S * max(n_out_expected, 0)
            + REQUEST_TIMEOUT_PER_INPUT_TOKEN_S * max(n_in_expected, 0))


def raise_fd_limit(wanted: int) -> int:
    """Raise the soft open-file limit toward `wanted` (capped by the hard limit); returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        return target
    return soft


class ResponseEnded(Exception):
    """The connection ended before the response did (a cut stream, a reset)."""


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection carrying one request at a time.

    `t_data_s` / `t_write_s`: perf_counter() s of the latest socket read and of the latest
    request write on this connection."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.t_data_s: float | None = None
        self.t_write_s: float | None = None
        self.open = False
        self._sse: StreamParser | None = None
        self._done: asyncio.Future | None = None
        self._t = 0.0
        self._status = 0
        self._error_body = b""
        self._headers_done = False
        self._framed = False  # the body has a length or chunked framing (else it ends at close)
        self._keep_alive = True

    # asyncio protocol
    def connection_made(self, transport) -> None:
        self.transport = transport
        self.open = True

    def data_received(self, data: bytes) -> None:
        self._t = self.t_data_s = time.perf_counter()
        if self._done is None:  # bytes nobody asked for: this connection cannot be trusted
            if self.transport is not None:
                self.transport.abort()
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as e:
            self._finish(ResponseEnded(one_line(f"bad HTTP response: {e}")))

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        if self._done is not None and not self._done.done():
            if exc is None and self._headers_done and not self._framed:
                self._finish(None)  # a body delimited by the connection's close
            else:
                why = f": {type(exc).__name__}: {exc}" if exc is not None else ""
                self._finish(ResponseEnded(one_line(f"connection closed before the response ended{why}")))

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        n = name.lower()
        if n == b"content-length" or (n == b"transfer-encoding" and b"chunked" in value.lower()):
            self._framed = True

    def on_headers_complete(self) -> None:
        self._headers_done = True
        self._status = self.parser.get_status_code()
        self._keep_alive = self.parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        if self._status == 200:
            if self._sse is not None:  # set by request() before any response can arrive
                self._sse.feed(body, self._t)
        elif len(self._error_body) < ERROR_BODY_BYTES:
            self._error_body += body[:ERROR_BODY_BYTES - len(self._error_body)]

    def on_message_complete(self) -> None:
        self._finish(None)

    # one request
    def request(self, head_and_body: bytes, sse: StreamParser, record: RequestRecord) -> asyncio.Future:
        """Write one request (stamping `record.t_send` just before); the future ends with the response."""
        if self.transport is None:  # only after connection_made (create_connection returns after it)
            raise ResponseEnded("the connection is not open")
        self._sse, self._status, self._error_body = sse, 0, b""
        self._headers_done = self._framed = False
        self._done = asyncio.get_running_loop().create_future()
        record.t_send = self.t_write_s = time.perf_counter()
        self.transport.write(head_and_body)
        return self._done

    def _finish(self, error: Exception | None) -> None:
        done, self._done = self._done, None
        if done is not None and not done.done():
            if error is None:
                done.set_result(None)
            else:
                done.set_exception(error)

    @property
    def reusable(self) -> bool:
        return self.open and self._keep_alive and self._done is None

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.abort()


class StreamingClient:
    """The connections of one load point; `await client.send(record, prompt)` fills the record.

        async with StreamingClient(base_url, model, ClientConfig()) as client:
            await client.send(record, prompt)     # prompt: list[int] (completions) or str
    """

    def __init__(self, base_url: str, model: str, config: ClientConfig | None = None):
        self.config = config or ClientConfig()
        if self.config.endpoint not in ENDPOINTS:
            raise ValueError(f"unknown endpoint {self.config.endpoint!r} (known: {', '.join(ENDPOINTS)})")
        self.url = base_url.rstrip("/") + ENDPOINTS[self.config.endpoint]
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https"):
            raise ValueError(f"the client speaks http and https, not {parts.scheme!r} ({redact_text(self.url)})")
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._ssl = ssl.create_default_context() if parts.scheme == "https" else None
        headers = dict(self.config.headers)
        if parts.username is not None and "Authorization" not in headers:  # user:pass@ in the URL: basic auth
            userinfo = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            headers["Authorization"] = "Basic " + base64.b64encode(userinfo.encode()).decode()
        if any(c in f"{k}{v}" for k, v in headers.items() for c in "\r\n\0"):
            raise ValueError("a request header holds a line break (refused: it would start another header)")
        extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        host = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
        self._head = (f"POST {parts.path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                      f"Accept: text/event-stream\r\n{extra}").encode()
        self.model = model
        self.tag = secrets.token_hex(4)  # X-Request-Id prefix, unique per client
        self._idle: collections.deque[_Connection] = collections.deque()
        self._all: set[_Connection] = set()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc) -> None:
        for conn in self._all:
            conn.close()
        self._all.clear()
        self._idle.clear()

    @property
    def connections(self) -> list[_Connection]:
        """Open connections (idle or carrying a request)."""
        return [c for c in self._all if c.open]

    def body(self, prompt: list[int] | str, max_tokens: int, extra: dict | None = None) -> bytes:
        """The JSON request body, serialized before `t_send` is stamped; `extra` fields (a LoRA
        adapter's `model`, structured output's `response_format` or `tools`) replace or add to the
        defaults."""
        if self.config.endpoint == "chat":
            if not isinstance(prompt, str):
                raise ValueError("the chat endpoint needs a text prompt")
            return self.chat_body([{"role": "user", "content": prompt}], max_tokens, extra)
        return self._encode("prompt", prompt, max_tokens, extra)

    def chat_body(self, messages: list[dict], max_tokens: int, extra: dict | None = None) -> bytes:
        """The JSON body of a chat request with the whole conversation so far (`[{"role", "content"}, ...]`)."""
        if self.config.endpoint != "chat":
            raise ValueError(f"a conversation needs the chat endpoint, not {self.config.endpoint!r}")
        return self._encode("messages", messages, max_tokens, extra)

    def _encode(self, key: str, value, max_tokens: int, extra: dict | None = None) -> bytes:
        cfg = self.config
        payload: dict = {"model": self.model, "max_tokens": max_tokens, "temperature": cfg.temperature,
                         "stream": True, "ignore_eos": cfg.ignore_eos, key: value}
        payload["stream_options"] = {"include_usage": True, "continuous_usage_stats": cfg.continuous_usage}
        if cfg.return_token_ids:
            payload["return_token_ids"] = True
        if extra:
            payload.update(extra)
        return json.dumps(payload, separators=(",", ":")).encode()

    async def _connection(self) -> _Connection:
        while self._idle:
            conn = self._idle.pop()
            if conn.reusable:
                return conn
            self._all.discard(conn)
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(_Connection, self._host, self._port, ssl=self._ssl,
                                               server_hostname=self._host if self._ssl else None)
        self._all.add(conn)
        return conn

    def _release(self, conn: _Connection, ok: bool) -> None:
        if ok and conn.reusable:
            self._idle.append(conn)
        else:
            conn.close()
            self._all.discard(conn)

    async def send(self, record: RequestRecord, prompt: list[int] | str | None = None,
                   body: bytes | None = None, parser: StreamParser | None = None) -> RequestRecord:
        """Stream one request into `record`. Never raises for a failed request: sets `record.error`.

        `body`: the request already encoded by `self.body(prompt, record.n_out_expected)`
        (the load driver encodes every request before a point starts); `prompt` is then unused.
        `parser`: a `StreamParser(record, keep_text=True)` to read the answer's text from after.
        """
        if body is None:
            if prompt is None:
                raise ValueError("send needs a prompt or an encoded body")
            body = self.body(prompt, record.n_out_expected)
        message = b"".join((self._head, b"X-Request-Id: ", f"{self.tag}-{record.request_id}".encode(),
                            b"\r\nContent-Length: ", str(len(body)).encode(), b"\r\n\r\n", body))
        if parser is None:
            parser = StreamParser(record, keep_text=self.config.keep_answers)
        elif self.config.keep_answers and parser.text is None:
            raise ValueError("keep_answers needs a parser that keeps the text")
        limit_s = self.config.request_timeout_s(record.n_in_expected, record.n_out_expected)
        watch = _StallWatch(record, self.config.stall_timeout_s)
        conn: _Connection | None = None
        ok = False
        try:
            record.t_send = time.perf_counter()  # replaced by the write stamp once connected
            async with asyncio.timeout(limit_s) as deadline:
                watch.arm(deadline)
                conn = await self._connection()
                watch.proto = conn
                await conn.request(message, parser, record)
                ok = True
            if conn._status != 200:  # redacted before it is cut: a server may echo the credential it refused
                text = redact_text(conn._error_body.decode(errors="replace"))
                record.error = one_line(f"HTTP {conn._status}: {text}")
        except TimeoutError as e:
            if watch.reason is not None:
                record.error = watch.reason
            elif watch.deadline is not None and watch.deadline.expired():
                record.error = f"timeout: request took over {limit_s:g} s"
            else:  # an OS-level timeout (e.g. connect), not one of ours
                record.error = one_line(f"{type(e).__name__}: {e}") or type(e).__name__
        except ResponseEnded as e:
            record.error = str(e)
        except Exception as e:  # noqa: BLE001  a failed request is data: any cause ends up in record.error
            record.error = one_line(f"{type(e).__name__}: {e}") or type(e).__name__
        finally:
            watch.disarm()
            if conn is not None:
                self._release(conn, ok)
        if record.error is not None and conn is not None and conn._status not in (0, 200):
            return record  # an HTTP error: no stream to finish
        parser.finish()
        if self.config.keep_answers:
            record.answer, record.tool_name = parser.answer_json()
        return record


class _StallWatch:
    """Ends a request (through its asyncio.timeout) once no byte has arrived for `stall_s`.

    A timer fires every `stall_s` at most, not per chunk: progress is the later of the
    record's send stamp and the connection's last-read stamp."""

    __slots__ = ("deadline", "handle", "proto", "reason", "rec", "stall_s")

    def __init__(self, record: RequestRecord, stall_s: float | None):
        self.rec, self.stall_s = record, stall_s
        self.proto: _Connection | None = None
        self.deadline: asyncio.Timeout | None = None
        self.handle: asyncio.TimerHandle | None = None
        self.reason: str | None = None

    def arm(self, deadline: asyncio.Timeout) -> None:
        self.deadline = deadline
        if self.stall_s is None or self.stall_s <= 0:
            return
        self.handle = asyncio.get_running_loop().call_later(self.stall_s, self._check)

    def _check(self) -> None:
        stall_s = self.stall_s
        if stall_s is None:  # arm() schedules no check without a stall limit
            return
        last = self.rec.t_send
        proto = self.proto
        if proto is not None and proto.t_data_s is not None and proto.t_write_s is not None \
                and proto.t_data_s >= proto.t_write_s:
            last = max(last, proto.t_data_s)  # a read of this request, not of the connection's previous one
        quiet_s = time.perf_counter() - last
        loop = asyncio.get_running_loop()
        if quiet_s >= stall_s:
            got_headers = proto is not None and proto._headers_done and proto._sse is not None
            phase = "the next bytes" if got_headers else "a response"
            self.reason = f"timeout: stalled, no bytes for {stall_s:g} s while waiting for {phase}"
            self.handle = None
            if self.deadline is not None:  # set by arm() before the first check is scheduled
                self.deadline.reschedule(loop.time())
        else:
            self.handle = loop.call_later(stall_s - quiet_s, self._check)

    def disarm(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None
