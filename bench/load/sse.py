"""Server-sent events of an OpenAI-compatible stream -> the token-bearing chunks of one RequestRecord.

Token counts come from the server (docs/measurement.md section 1): the cumulative
`usage.completion_tokens` of each chunk (continuous usage stats), else the chunk's
`token_ids`, else one token per chunk with text (labelled `text_chunks`). Role-only, empty
and usage-only chunks carry no token and never stamp `t_first`. After a request's first
event, a token chunk with usage is read by a bytes search for its `"completion_tokens"`
instead of a full decode (the hot path: one such chunk per streamed token or few).
Every other event is decoded once, by msgspec, into a typed `StreamEvent`; the code after
reads its attributes. A server's garbage (not JSON, or a named key of another JSON type) is
a failed request (`record.error`), never an exception.

Reasoning. A chat chunk whose delta carries `reasoning` (vLLM >= 0.10; `reasoning_content`
before) and no `content` is a reasoning chunk: its tokens count in `n_reasoning` and its
arrival can stamp `t_first_reasoning`; any other token chunk is the answer (`t_first_answer`).
Both stamp `t_first`. In a chat stream a chunk that names reasoning always takes the full
parse (a bytes check, skipped for completions, which carry no delta), so the fast path is only
ever taken by answer chunks.
"""

from __future__ import annotations

import re

import msgspec

from bench.errors import one_line
from bench.load.records import RequestRecord

# The fast path of a token chunk with continuous usage. A '"' inside a JSON string is always
# escaped, so these byte patterns only ever match the keys themselves.
_COMPLETION_TOKENS = re.compile(rb'"completion_tokens"\s*:\s*(\d+)')
_NONEMPTY_CHOICES = re.compile(rb'"choices"\s*:\s*\[\s*\{')
_REASONING = b'"reasoning'  # "reasoning" and "reasoning_content" keys (or that word quoted in a text: parsed in full)
_FULL, _FAST, _FAST_CHAT = 0, 1, 2  # StreamParser.fast: parse in full; bytes search; bytes search unless reasoning


# One streamed event of the OpenAI completions / chat API, as vLLM and SGLang send it. Keys
# not named here are ignored; a named key of another JSON type makes the event malformed.
class Usage(msgspec.Struct):
    """A chunk's token counts (continuous usage stats: cumulative over the request)."""
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


class ToolFunction(msgspec.Struct):
    """The function part of a streamed tool call: its name (first piece) and an argument piece."""
    name: str | None = None
    arguments: str | None = None


class ToolCall(msgspec.Struct):
    """One streamed tool-call piece of a chat delta; `index` says which call it extends."""
    index: int = 0
    function: ToolFunction | None = None


class Delta(msgspec.Struct):
    """A chat chunk's delta: answer text, reasoning text (`reasoning`, vLLM >= 0.10;
    `reasoning_content` before) and tool-call pieces."""
    content: str | None = None
    reasoning: str | None = None
    reasoning_content: str | None = None
    tool_calls: list[ToolCall] | None = None

    @property
    def reasoning_text(self) -> str | None:
        """The reasoning text (`reasoning`, else the older `reasoning_content`), or None."""
        return self.reasoning if self.reasoning is not None else self.reasoning_content


class Choice(msgspec.Struct):
    """One choice of a chunk: a completion's `text` or a chat `delta`; vLLM's `token_ids` when asked."""
    text: str | None = None
    delta: Delta | None = None
    token_ids: list[int] | None = None


class ErrorBody(msgspec.Struct):
    """The `error` object of a server's error event."""
    message: str | None = None
    code: int | str | None = None

    @property
    def text(self) -> str:
        return self.message if self.message is not None else f"no message (code {self.code})"


class StreamEvent(msgspec.Struct):
    """One `data:` event: choices and/or usage, or an error (`{"error": ...}`, or vLLM's older
    top-level `{"object": "error", "message": ...}`)."""
    choices: list[Choice] | None = None
    usage: Usage | None = None
    error: ErrorBody | str | None | msgspec.UnsetType = msgspec.UNSET
    object: str | None = None
    message: str | None = None


_DECODE = msgspec.json.Decoder(StreamEvent).decode


def _count(value: int | None) -> int | None:
    """A server's token count if it is non-negative, else None (read as absent)."""
    return value if value is not None and value >= 0 else None


class StreamParser:
    """SSE bytes -> the record's token-bearing chunks. `feed(data, t_arrival)` per network read.

    `keep_text=True` also keeps the answer's text (chat `content`, a completion's `text`; never
    reasoning) for `answer_text`: every event is then parsed in full, so only callers that need
    the text (multi-turn sessions, bench.load.sessions) ask for it."""

    __slots__ = ("buf", "cum", "done", "fast", "final_usage", "rec", "source", "text", "tool_args", "tool_name")

    def __init__(self, record: RequestRecord, keep_text: bool = False):
        self.rec = record
        self.buf = b""
        self.cum = 0  # cumulative completion tokens seen in chunks
        self.final_usage: int | None = None
        self.done = False
        self.source: str | None = None
        self.text: list[str] | None = [] if keep_text else None
        self.tool_args: list[str] = []  # with keep_text: the first tool call's arguments, as streamed
        self.tool_name: str | None = None
        self.fast = _FULL  # how the next token chunk may be read; set by each fully parsed token event

    @property
    def answer_text(self) -> str:
        """The answer's text so far (with `keep_text`; "" without)."""
        return "".join(self.text or ())

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
                        event = _DECODE(payload)
                    except (msgspec.DecodeError, RecursionError):
                        self._malformed(payload)  # a server's garbage is a failed request, not a crash
                    else:
                        self._event(event, t)
                elif n > 0:
                    self._add(n, t)

    def _malformed(self, payload: bytes) -> None:
        if self.rec.error is None:
            self.rec.error = one_line(f"malformed stream event: {payload[:80].decode(errors='replace')}")

    def _usage_tokens(self, payload: bytes) -> int | None:
        """Tokens in a token chunk read from its cumulative usage by a bytes search, without
        decoding it; None (decode it in full) for the first event, a chunk with no choice or
        no integer usage.completion_tokens, one before which a chunk lacked usage, a chunk that
        names reasoning, or any chunk when the text is kept (`self.fast`, from the last full parse)."""
        fast = self.fast
        if fast == _FULL:
            return None
        m = _COMPLETION_TOKENS.search(payload)
        if m is None or (c := _NONEMPTY_CHOICES.search(payload)) is None:
            return None
        if fast == _FAST_CHAT:  # the choice runs from c.end() to the usage after it (vLLM's order) or the end
            start, end = c.end(), m.start()
            if payload.find(_REASONING, start, end if end > start else len(payload)) >= 0:
                return None
        self.source = "usage"
        return int(m.group(1)) - self.cum

    def _event(self, ev: StreamEvent, t: float) -> None:
        rec = self.rec
        usage = ev.usage
        completion = None
        if usage is not None:
            if _count(usage.prompt_tokens) is not None:
                rec.n_in = usage.prompt_tokens
            completion = _count(usage.completion_tokens)
        if not ev.choices:
            if completion is not None:
                self.final_usage = completion  # usage-only chunk: no token in it
            elif ev.error is not msgspec.UNSET or ev.object == "error":
                err = ev.error if ev.error is not msgspec.UNSET else ErrorBody(ev.message)
                rec.error = one_line(f"server error: {err.text if isinstance(err, ErrorBody) else err}")
            return
        choice = ev.choices[0]
        delta = choice.delta
        if delta is not None:
            text, reasoning = delta.content, delta.reasoning_text
            if self.text is not None and delta.tool_calls:
                self._tool_call(delta.tool_calls)
        else:
            text, reasoning = choice.text, None
        if self.text is not None and text is not None:
            self.text.append(text)
        if completion is not None:
            n = completion - self.cum
            self.source = "usage"
        elif choice.token_ids is not None:
            n = len(choice.token_ids)
            self.source = "token_ids"
        else:
            n = 1 if text or reasoning else 0
            self.source = self.source or "text_chunks"
        if rec.n_in is None or self.source not in (None, "usage") or self.text is not None:
            self.fast = _FULL
        else:
            self.fast = _FAST_CHAT if delta is not None else _FAST
        if n > 0:
            self._add(n, t, reasoning=reasoning is not None and not text)

    def _tool_call(self, calls: list[ToolCall]) -> None:
        """The first tool call's name and argument pieces of a chat delta (OpenAI's streamed shape)."""
        for call in calls:
            fn = call.function
            if call.index != 0 or fn is None:
                continue
            if fn.name is not None:
                self.tool_name = fn.name
            if fn.arguments is not None:
                self.tool_args.append(fn.arguments)

    def answer_json(self) -> tuple[str, str | None]:
        """(the answer's JSON text, the tool it called): a tool call's arguments when the answer
        was one, else the content (with `keep_text`)."""
        if self.tool_name is not None or self.tool_args:
            return "".join(self.tool_args), self.tool_name
        return self.answer_text, None

    def _add(self, n: int, t: float, reasoning: bool = False) -> None:
        """A chunk that carried `n` >= 1 generated tokens, arrived at `t`: of the answer, or
        `reasoning` ones (counted in n_out too, and apart in n_reasoning)."""
        rec = self.rec
        self.cum += n
        if reasoning:
            rec.n_reasoning += n
            if rec.t_first_reasoning is None:
                rec.t_first_reasoning = t
        elif rec.t_first_answer is None:
            rec.t_first_answer = t
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
        elif rec.n_out < rec.n_out_expected and rec.ignore_eos:
            rec.error = f"fewer tokens than asked: {rec.n_out} of {rec.n_out_expected}"
