"""The streaming client: one request to vLLM's OpenAI-compatible API -> one RequestRecord.

Timing follows measurement.md section 1. The client asks the server to count tokens
(`stream_options.continuous_usage_stats`: every chunk carries the cumulative
`usage.completion_tokens`, so the tokens in a chunk are the delta; `return_token_ids`
as the second source). Role-only, empty and usage-only chunks carry no token and
never stamp `t_first`. Text is never used to count tokens unless the server gives
neither usage nor token ids (then each chunk with text counts one token, labelled
`token_source="text_chunks"`).

`t_send` is stamped where the request is written: aiohttp writes a request body from
its own `write_bytes` step (a separate task before Python 3.12, so after every other
request launched in the same loop iteration); the request class records `perf_counter()`
on the connection as that step starts, microseconds before the bytes go to the socket,
and the record's early stamp (taken before `session.post`) is replaced by it. Arrival
is stamped where the bytes arrive: the connection's protocol records
`perf_counter()` in `data_received`, as the event loop reads the socket, before any task
runs. The request's task later takes that stamp for everything it reads, so the parsing
done by the other streams woken in the same loop iteration does not delay it. Every SSE
event in one read gets that stamp. Nothing is logged per chunk, and after a request's
first event a token chunk with usage is read by a bytes search for its
`"completion_tokens"` instead of a full `json.loads`; any other chunk is parsed in full.

Two limits end a request that would otherwise hang (the record gets a `timeout: ...`
error, a failed request like any other): the request limit (connect to last byte) and
the stall limit (no byte from the server for that long, headers included). Both are one
`asyncio.timeout` per request; the stall limit is enforced by a watchdog timer that fires
once per `stall_timeout_s` and reads the connection's last-read stamp, so no work is added
per chunk.
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
import resource
import secrets
import time
from dataclasses import dataclass
from typing import Self

import aiohttp
from aiohttp.client_proto import ResponseHandler

from bench.load.records import RequestRecord

ENDPOINTS = {"completions": "/v1/completions", "chat": "/v1/chat/completions"}
READ_BUFSIZE = 1 << 20  # bytes per connection read buffer
DEFAULT_STALL_TIMEOUT_S = 300.0  # no byte for this long: queueing + prefill before a first token fits
# The request limit when none is given: generous per-token budgets over the expected lengths.
REQUEST_TIMEOUT_BASE_S = 300.0
REQUEST_TIMEOUT_PER_OUTPUT_TOKEN_S = 1.0
REQUEST_TIMEOUT_PER_INPUT_TOKEN_S = 0.01
# The fast path of a token chunk with continuous usage. A '"' inside a JSON string is always
# escaped, so these byte patterns only ever match the keys themselves.
_COMPLETION_TOKENS = re.compile(rb'"completion_tokens"\s*:\s*(\d+)')
_NONEMPTY_CHOICES = re.compile(rb'"choices"\s*:\s*\[\s*\{')


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

    def describe(self) -> dict:
        return {
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


class _StampingProtocol(ResponseHandler):
    """aiohttp's connection protocol, also keeping perf_counter() s of the latest socket read
    and of the start of the latest request write on this connection."""

    t_data_s: float | None = None
    t_write_s: float | None = None

    def data_received(self, data: bytes) -> None:
        if data:
            self.t_data_s = time.perf_counter()
        super().data_received(data)


class _StampingConnector(aiohttp.TCPConnector):
    """A TCPConnector whose connections are `_StampingProtocol`s (aiohttp keeps the factory in `_factory`)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        if isinstance(getattr(self, "_factory", None), functools.partial):
            self._factory = functools.partial(_StampingProtocol, loop=self._loop)


class _StampingRequest(aiohttp.ClientRequest):
    """aiohttp's request, stamping the connection just before the request bytes are written."""

    async def write_bytes(self, writer, conn, *args, **kwargs) -> None:
        proto = conn.protocol
        if isinstance(proto, _StampingProtocol):
            proto.t_write_s = time.perf_counter()
        await super().write_bytes(writer, conn, *args, **kwargs)


def _count(value) -> int | None:
    """A token count from a server's JSON: a non-negative int (not a bool), else None."""
    return value if type(value) is int and value >= 0 else None


def _one_line(text: str, limit: int = 200) -> str:
    return " ".join(str(text).split())[:limit]


class StreamingClient:
    """An aiohttp session for one load point; `await client.send(record, prompt)` fills the record.

        async with StreamingClient(base_url, model, ClientConfig()) as client:
            await client.send(record, prompt)     # prompt: list[int] (completions) or str
    """

    def __init__(self, base_url: str, model: str, config: ClientConfig | None = None):
        self.config = config or ClientConfig()
        if self.config.endpoint not in ENDPOINTS:
            raise ValueError(f"unknown endpoint {self.config.endpoint!r} (known: {', '.join(ENDPOINTS)})")
        self.url = base_url.rstrip("/") + ENDPOINTS[self.config.endpoint]
        self.model = model
        self.tag = secrets.token_hex(4)  # X-Request-Id prefix, unique per client
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Self:
        connector = _StampingConnector(limit=0, limit_per_host=0, force_close=False, keepalive_timeout=60)
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=None, connect=None, sock_read=None, sock_connect=None),
            read_bufsize=READ_BUFSIZE,
            request_class=_StampingRequest,
            auto_decompress=False,
        )
        return self

    async def __aexit__(self, *exc) -> None:
        await self._session.close()

    def body(self, prompt: list[int] | str, max_tokens: int) -> bytes:
        """The JSON request body, serialized before `t_send` is stamped."""
        cfg = self.config
        payload: dict = {"model": self.model, "max_tokens": max_tokens, "temperature": cfg.temperature,
                         "stream": True, "ignore_eos": cfg.ignore_eos}
        if cfg.endpoint == "chat":
            if not isinstance(prompt, str):
                raise ValueError("the chat endpoint needs a text prompt")
            payload["messages"] = [{"role": "user", "content": prompt}]
        else:
            payload["prompt"] = prompt
        payload["stream_options"] = {"include_usage": True, "continuous_usage_stats": cfg.continuous_usage}
        if cfg.return_token_ids:
            payload["return_token_ids"] = True
        return json.dumps(payload, separators=(",", ":")).encode()

    async def send(self, record: RequestRecord, prompt: list[int] | str | None = None,
                   body: bytes | None = None) -> RequestRecord:
        """Stream one request into `record`. Never raises for a failed request: sets `record.error`.

        `body`: the request already encoded by `self.body(prompt, record.n_out_expected)`
        (the load driver encodes every request before a point starts); `prompt` is then unused.
        """
        if body is None:
            body = self.body(prompt, record.n_out_expected)
        headers = {"Content-Type": "application/json", "X-Request-Id": f"{self.tag}-{record.request_id}"}
        parser = _StreamParser(record)
        limit_s = self.config.request_timeout_s(record.n_in_expected, record.n_out_expected)
        watch = _StallWatch(record, self.config.stall_timeout_s)
        try:
            record.t_send = time.perf_counter()  # replaced by the write stamp once the response starts
            async with asyncio.timeout(limit_s) as deadline:
                watch.arm(deadline)
                async with self._session.post(self.url, data=body, headers=headers) as resp:
                    if resp.status != 200:
                        text = await resp.text(errors="replace")
                        record.error = _one_line(f"HTTP {resp.status}: {text}")
                        return record
                    proto = resp.connection.protocol if resp.connection is not None else None
                    stamped = isinstance(proto, _StampingProtocol)
                    if stamped:
                        watch.proto = proto
                        if proto.t_write_s is not None and proto.t_write_s >= record.t_send:
                            record.t_send = proto.t_write_s
                    async for data in resp.content.iter_any():
                        t = proto.t_data_s if stamped else None
                        parser.feed(data, t if t is not None else time.perf_counter())
        except TimeoutError as e:
            if watch.reason is not None:
                record.error = watch.reason
            elif watch.deadline is not None and watch.deadline.expired():
                record.error = f"timeout: request took over {limit_s:g} s"
            else:  # an OS-level timeout (e.g. connect), not one of ours
                record.error = _one_line(f"{type(e).__name__}: {e}") or type(e).__name__
        except Exception as e:  # noqa: BLE001  a failed request is data: any cause ends up in record.error
            record.error = _one_line(f"{type(e).__name__}: {e}") or type(e).__name__
        finally:
            watch.disarm()
        parser.finish()
        return record


class _StallWatch:
    """Ends a request (through its asyncio.timeout) once no byte has arrived for `stall_s`.

    A timer fires every `stall_s` at most, not per chunk: progress is the later of the
    record's send stamp and the connection's last-read stamp (set once headers are in)."""

    __slots__ = ("deadline", "handle", "proto", "reason", "rec", "stall_s")

    def __init__(self, record: RequestRecord, stall_s: float | None):
        self.rec, self.stall_s = record, stall_s
        self.proto: _StampingProtocol | None = None
        self.deadline: asyncio.Timeout | None = None
        self.handle: asyncio.TimerHandle | None = None
        self.reason: str | None = None

    def arm(self, deadline: asyncio.Timeout) -> None:
        self.deadline = deadline
        if self.stall_s is None or self.stall_s <= 0:
            return
        self.handle = asyncio.get_running_loop().call_later(self.stall_s, self._check)

    def _check(self) -> None:
        last = self.rec.t_send
        if self.proto is not None and self.proto.t_data_s is not None:
            last = max(last, self.proto.t_data_s)
        quiet_s = time.perf_counter() - last
        loop = asyncio.get_running_loop()
        if quiet_s >= self.stall_s:
            phase = "a response" if self.proto is None else "the next bytes"
            self.reason = f"timeout: stalled, no bytes for {self.stall_s:g} s while waiting for {phase}"
            self.handle = None
            self.deadline.reschedule(loop.time())
        else:
            self.handle = loop.call_later(self.stall_s - quiet_s, self._check)

    def disarm(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None



class _StreamParser:
    """SSE bytes -> the record's token-bearing chunks. `feed(data, t_arrival)` per network read."""

    __slots__ = ("buf", "cum", "done", "final_usage", "rec", "source")

    def __init__(self, record: RequestRecord):
        self.rec = record
        self.buf = b""
        self.cum = 0  # cumulative completion tokens seen in chunks
        self.final_usage: int | None = None
        self.done = False
        self.source: str | None = None

    def feed(self, data: bytes, t: float) -> None:
        buf = self.buf + data
        if b"\n" not in data:
            self.buf = buf
            return
        lines = buf.split(b"\n")
        self.buf = lines.pop()
        for line in lines:
            if line[:5] != b"data:":
                continue  # blank separators, SSE comments (":ping"), event/id fields
            payload = line[5:].strip()
            if payload == b"[DONE]":
                self.done = True
            elif payload:
                n = self._usage_tokens(payload)
                if n is None:
                    try:
                        self._event(json.loads(payload), t)
                    except (ValueError, TypeError, AttributeError, KeyError, IndexError, RecursionError):
                        self._malformed(payload)  # a server's garbage is a failed request, not a crash
                elif n > 0:
                    self._add(n, t)

    def _malformed(self, payload: bytes) -> None:
        if self.rec.error is None:
            self.rec.error = _one_line(f"malformed stream event: {payload[:80].decode(errors='replace')}")

    def _usage_tokens(self, payload: bytes) -> int | None:
        """Tokens in a token chunk read from its cumulative usage by a bytes search, without
        json.loads; None (parse it in full) for the first event, a chunk with no choice or
        no integer usage.completion_tokens, or one before which a chunk lacked usage."""
        if self.rec.n_in is None or self.source not in (None, "usage"):
            return None
        m = _COMPLETION_TOKENS.search(payload)
        if m is None or _NONEMPTY_CHOICES.search(payload) is None:
            return None
        self.source = "usage"
        return int(m.group(1)) - self.cum

    def _event(self, obj: dict, t: float) -> None:
        rec = self.rec
        if not isinstance(obj, dict):
            raise TypeError("not a JSON object")
        usage = obj.get("usage")
        if not isinstance(usage, dict):
            usage = None
        choices = obj.get("choices")
        if usage is not None and _count(usage.get("prompt_tokens")) is not None:
            rec.n_in = _count(usage["prompt_tokens"])
        completion = _count(usage.get("completion_tokens")) if usage is not None else None
        if not choices or not isinstance(choices, list):
            if completion is not None:
                self.final_usage = completion  # usage-only chunk: no token in it
            elif "error" in obj or obj.get("object") == "error":
                err = obj.get("error", obj)
                rec.error = _one_line(f"server error: {err.get('message', err) if isinstance(err, dict) else err}")
            return
        if completion is not None:
            n = completion - self.cum
            self.source = "usage"
        else:
            choice = choices[0] if isinstance(choices[0], dict) else {}
            ids = choice.get("token_ids")
            if isinstance(ids, list):
                n = len(ids)
                self.source = "token_ids"
            else:
                delta = choice.get("delta")
                text = delta.get("content") if isinstance(delta, dict) else choice.get("text")
                n = 1 if text else 0
                self.source = self.source or "text_chunks"
        if n > 0:
            self._add(n, t)

    def _add(self, n: int, t: float) -> None:
        """A chunk that carried `n` >= 1 generated tokens, arrived at `t`."""
        rec = self.rec
        self.cum += n
        if rec.t_first is None:
            rec.t_first = t
        rec.t_last = t
        rec.chunk_t.append(t)
        rec.chunk_tokens.append(n)

    def finish(self) -> None:
        rec = self.rec
        rec.n_out = self.final_usage if self.final_usage is not None else self.cum
        if self.source is not None:
            rec.token_source = self.source
        if rec.error is not None:
            return
        if not self.done:
            rec.error = "stream ended before [DONE]"
        elif rec.n_out < rec.n_out_expected:
            rec.error = f"fewer tokens than asked: {rec.n_out} of {rec.n_out_expected}"
