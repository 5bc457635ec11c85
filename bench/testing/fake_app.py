"""The fake server's application: what an OpenAI-compatible vLLM server answers, and when
(bench.testing.fake_server runs it in a thread or in processes). Timing in seconds, framing,
counters and gauges as vLLM's; see fake_server's docstring for the faults it injects."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web
from pydantic import BaseModel, ConfigDict

from bench.engines.vllm_metrics import METRICS, SPEC_POS_PREFIX, page_text

LISTEN_BACKLOG = 4096  # per listening socket; the kernel caps it at net.core.somaxconn
FD_LIMIT = 65536  # open files wanted by a server process (one per connection); capped by the hard limit
PREFIX_BLOCK_TOKENS = 16  # vLLM's default block size: the cache matches whole blocks


@dataclass
class FakeServerConfig:
    """Timing in seconds; every `*_every = k` fires on the k-th, 2k-th, ... request (1-based, arrival order)."""

    ttft_s: float = 0.02  # request arrival -> first token-bearing chunk
    itl_s: float = 0.005  # between token-bearing chunks
    tokens_per_chunk: int = 1  # > 1 imitates speculative decoding
    # > 0: serve vLLM's spec_decode counters as a server started with num_speculative_tokens = this: each
    # token-bearing chunk of n tokens is one draft of this many tokens, n - 1 of them accepted (the n-th is
    # the target model's bonus token), so tokens_per_chunk must not exceed this + 1
    spec_tokens: int = 0
    role_chunk: bool = True  # chat: a role-only first chunk, as vLLM sends
    role_chunk_lead_s: float = 0.0  # send the role chunk this long before the first token
    empty_chunks: bool = False  # a chunk with no token before every token-bearing one
    empty_text: bool = False  # token-bearing chunks carry text "" (random weights do that)
    continuous_usage: bool = True  # honour stream_options.continuous_usage_stats
    token_ids: bool = True  # honour return_token_ids
    fail_http_every: int = 0  # answer HTTP 500
    cut_stream_every: int = 0  # close the connection half-way through the stream
    short_every: int = 0  # generate one token fewer than asked, then end normally
    hang_every: int = 0  # never answer: no status line, connection left open
    stall_every: int = 0  # stop sending half-way through the stream, connection left open
    garbage_every: int = 0  # half-way through the stream, a `data:` line that is not JSON
    not_sse_every: int = 0  # answer 200 with a body that is not SSE (an HTML error page)
    headers_delay_s: float = 0.0  # wait this long before the response headers (slow headers)
    reasoning_tokens: int = 0  # chat: the first N generated tokens stream as reasoning deltas, then the answer
    reasoning_field: str = "reasoning"  # the delta key of reasoning text (vLLM >= 0.10); "reasoning_content" before
    model: str = "fake-model"
    adapters: tuple[str, ...] = ()  # LoRA adapters served beside `model` (vLLM --lora-modules); a request names one in `model`
    max_num_seqs: int = 0  # requests generating at once; the rest wait (0: no cap)
    preempt_every: int = 0  # count a preemption when the k-th request is admitted
    kv_capacity_tokens: int = 65536  # KV-cache size for the usage gauge (tokens)
    dev_mode: bool = True  # serve POST /reset_prefix_cache (vLLM: VLLM_SERVER_DEV_MODE=1)
    record_prompts: bool = False  # keep each token prompt's ids in its emit record ("prompt"), for replay tests
    # The Authorization header every /v1 request must carry (vLLM --api-key: "Bearer KEY"; a proxy's
    # basic auth: "Basic ..."); else 401, the credential given echoed in the body (OpenAI echoes part of it).
    require_authorization: str | None = None
    # accuracy (docs/accuracy.md): end every stream with finish "stop" after this share of the asked
    # tokens (0: never; a model that stops early), and answer a non-streaming completion with the
    # solution of bench.testing.arith_task's last question (a model that is right)
    stop_early_share: float = 0.0
    solve_arithmetic: bool = False


def _hit(every: int, k: int) -> bool:
    return every > 0 and k % every == 0


class _Message(BaseModel):
    content: Any = ""  # text, or a list of parts (read as its text)


class _StreamOptions(BaseModel):
    include_usage: bool = False
    continuous_usage_stats: bool = False


class Ask(BaseModel):
    """What a /v1 request asks for: the fields of its JSON body the fake reads (the rest ignored,
    as vLLM ignores what it does not use)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    prompt: list[int] | list[str] | str | None = None  # a list of texts: a batch (lm-eval sends one)
    messages: list[_Message] = []
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    stream_options: _StreamOptions | None = None
    return_token_ids: bool = False
    stream: bool = False  # vLLM's default; a non-streaming answer is bench.testing.fake_answers
    model: str | None = None  # the served model or LoRA adapter the request names

    @property
    def n_out(self) -> int:
        """Tokens asked for (vLLM's default 16 when neither limit is given)."""
        return self.max_tokens or self.max_completion_tokens or 16

    def texts(self) -> list[str]:
        """The prompts as texts: each of a batch, or the conversation joined (token ids as numbers)."""
        if self.messages:
            return [" ".join(str(m.content) for m in self.messages)]
        if isinstance(self.prompt, str):
            return [self.prompt]
        if self.prompt and all(isinstance(p, str) for p in self.prompt):
            return [str(p) for p in self.prompt]
        return [" ".join(map(str, self.prompt or []))]

    def units(self) -> list:
        """The prompt as the units the fake counts as prompt tokens and its prefix cache matches:
        token ids, else words (of the prompt, or of every message)."""
        if isinstance(self.prompt, list):
            return self.prompt
        if isinstance(self.prompt, str):
            return self.prompt.split()
        return [w for m in self.messages for w in str(m.content).split()]


def _metrics_text(model: str, counts: dict, kv_capacity_tokens: int = 65536) -> str:
    """Prometheus text of `counts` (the short names of bench.engines.vllm_metrics, "kv_tokens"),
    vLLM's names and labels."""
    usage = min(1.0, counts["kv_tokens"] / kv_capacity_tokens)
    values = {m.short: counts[m.short] for m in METRICS if m.short in counts} | {"kv_cache_usage": usage}
    values |= {k: v for k, v in counts.items() if k.startswith(SPEC_POS_PREFIX)}  # one sample per draft position
    return page_text(values, {"engine": "0", "model_name": model})


def _sum_counters(counts: list[dict]) -> dict:
    return {k: sum(c[k] for c in counts) for k in counts[0]}


class _App:
    """The aiohttp application and what it recorded."""

    def __init__(self, cfg: FakeServerConfig, index: int | None = None):
        self.cfg = cfg
        self.index = index  # this process's place in a multi-process server, else None
        self.n_requests = 0
        self.generation_tokens = 0
        self.prompt_tokens = 0
        self.emits: dict[str, dict] = {}
        self.release: asyncio.Event | None = None  # set on shutdown: frees hung and stalled handlers
        self.shared_port: int | None = None  # multi-process: the port all processes listen on
        self.peers: list[int] = []  # multi-process: the other processes' control ports
        self.running = self.waiting = self.kv_tokens = self.admitted = 0
        self.preemptions = self.prefix_cache_queries = self.prefix_cache_hits = 0
        self.blocks: set[int] = set()  # chained hashes of the prompt blocks seen
        self.slots: asyncio.Semaphore | None = None  # max_num_seqs, made on the serving loop
        self.spec = {"spec_drafts": 0, "spec_draft_tokens": 0, "spec_accepted_tokens": 0,
                     **{f"{SPEC_POS_PREFIX}{k}": 0 for k in range(cfg.spec_tokens)}} if cfg.spec_tokens else {}

    async def _hold(self, request: web.Request) -> None:
        """Keep a request open until the server stops, then drop its connection."""
        if self.release is None:
            self.release = asyncio.Event()
        await self.release.wait()
        if request.transport is not None:
            request.transport.abort()

    @web.middleware
    async def _auth(self, request: web.Request, handler):
        given = request.headers.get("Authorization")
        if request.path.startswith("/v1/") and given != self.cfg.require_authorization:
            return web.json_response({"error": {"message": f"Incorrect API key provided: {given}",
                                                "code": "invalid_api_key"}}, status=401)
        return await handler(request)

    def build(self) -> web.Application:
        app = web.Application(middlewares=[self._auth] if self.cfg.require_authorization else [])
        app.router.add_post("/v1/completions", self.handle)
        app.router.add_post("/v1/chat/completions", self.handle)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/health", self.health)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/fake/emits", self.emit_times)
        app.router.add_get("/fake/counters", self.local_counters)
        if self.cfg.dev_mode:
            app.router.add_post("/reset_prefix_cache", self.reset_prefix_cache)
        return app

    def _lookup(self, units: list) -> None:
        """Count a prompt's prefix-cache queries and hits (leading whole blocks seen before), then cache it."""
        self.prefix_cache_queries += len(units)
        h, matching = 0, True
        for i in range(0, len(units) - PREFIX_BLOCK_TOKENS + 1, PREFIX_BLOCK_TOKENS):
            h = hash((h, tuple(units[i:i + PREFIX_BLOCK_TOKENS])))
            if matching and h in self.blocks:
                self.prefix_cache_hits += PREFIX_BLOCK_TOKENS
            else:
                matching = False
                self.blocks.add(h)
        if len(self.blocks) > 1_000_000:  # a bounded cache: forget everything, as an eviction would
            self.blocks.clear()

    async def reset_prefix_cache(self, request: web.Request) -> web.Response:
        self.blocks.clear()
        return web.json_response({"success": True})

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Admission as a scheduler sees it (waiting, then running; prefix cache, KV usage), then `_handle`."""
        ask = Ask.model_validate_json(await request.read())
        n_out = ask.n_out
        if self.cfg.max_num_seqs and self.slots is None:
            self.slots = asyncio.Semaphore(self.cfg.max_num_seqs)
        self.waiting += 1
        try:
            if self.slots is not None:
                await self.slots.acquire()
        finally:
            self.waiting -= 1
        units = ask.units()
        self.admitted += 1
        self.running += 1
        self.kv_tokens += len(units) + n_out
        self.preemptions += _hit(self.cfg.preempt_every, self.admitted)
        self._lookup(units)
        try:
            return await self._handle(request, ask)
        finally:
            self.running -= 1
            self.kv_tokens -= len(units) + n_out
            if self.slots is not None:
                self.slots.release()

    def counters(self) -> dict:
        """This process's counts, and the CPU seconds of the thread that serves (all of its work)."""
        return {"n_requests": self.n_requests, "prompt_tokens": self.prompt_tokens,
                "generation_tokens": self.generation_tokens, "cpu_s": time.thread_time(),
                "running_requests": self.running, "waiting_requests": self.waiting, "kv_tokens": self.kv_tokens,
                "preemptions": self.preemptions, "prefix_cache_queries": self.prefix_cache_queries,
                "prefix_cache_hits": self.prefix_cache_hits, **self.spec}

    async def local_counters(self, request: web.Request) -> web.Response:
        return web.json_response(self.counters())

    async def health(self, request: web.Request) -> web.Response:
        return web.Response(text="")

    async def emit_times(self, request: web.Request) -> web.Response:
        return web.json_response(self.emits)

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": self.cfg.model, "object": "model"}]})

    async def metrics(self, request: web.Request) -> web.Response:
        counts = [self.counters()]
        transport = request.transport  # None only once the connection is gone
        if self.peers and transport is not None and transport.get_extra_info("sockname")[1] == self.shared_port:
            async with aiohttp.ClientSession() as session:  # the server's total, not this process's share
                for port in self.peers:
                    async with session.get(f"http://127.0.0.1:{port}/fake/counters") as r:
                        counts.append(await r.json())
        return web.Response(text=_metrics_text(self.cfg.model, _sum_counters(counts), self.cfg.kv_capacity_tokens),
                            content_type="text/plain")

    async def _handle(self, request: web.Request, ask: Ask) -> web.StreamResponse:
        t_recv = time.perf_counter()
        cfg = self.cfg
        self.n_requests += 1
        k = self.n_requests
        key = request.headers.get("X-Request-Id", f"fake-{k}" if self.index is None else f"fake-{self.index}.{k}")
        chat = request.path.endswith("chat/completions")
        if _hit(cfg.fail_http_every, k):
            return web.json_response({"error": {"message": "injected failure", "code": 500}}, status=500)
        # Serving adapters, the fake checks the name as vLLM does (without, it answers any name: older tests
        # name their own model).
        if cfg.adapters and ask.model is not None and ask.model not in (cfg.model, *cfg.adapters):
            return web.json_response({"error": {"message": f"The model `{ask.model}` does not exist.",
                                                "type": "NotFoundError", "param": "model", "code": 404}}, status=404)
        if _hit(cfg.hang_every, k):
            await self._hold(request)
            return web.Response(status=500)  # never sent: the connection is gone
        if cfg.headers_delay_s > 0:
            await asyncio.sleep(cfg.headers_delay_s)
        if _hit(cfg.not_sse_every, k):
            return web.Response(text="<html><body>502 Bad Gateway</body></html>", content_type="text/html")
        n_prompt = len(ask.units())
        self.prompt_tokens += n_prompt
        if not ask.stream:
            from bench.testing.fake_answers import answer

            return answer(ask.texts(), bool(ask.messages), cfg.model, cfg.solve_arithmetic, n_prompt)
        n_out = ask.n_out
        if cfg.stop_early_share:
            n_out = int(n_out * (1 - cfg.stop_early_share))
        if _hit(cfg.short_every, k):
            n_out -= 1
        cut_after = n_out // 2 if _hit(cfg.cut_stream_every, k) else None
        stall_after = n_out // 2 if _hit(cfg.stall_every, k) else None
        garbage_after = n_out // 2 if _hit(cfg.garbage_every, k) else None
        opts = ask.stream_options or _StreamOptions()
        usage_on = opts.include_usage
        continuous = usage_on and opts.continuous_usage_stats and cfg.continuous_usage
        ids_on = ask.return_token_ids and cfg.token_ids
        rid = ("chatcmpl-" if chat else "cmpl-") + key
        head = (
            f'{{"id":"{rid}","object":"{"chat.completion.chunk" if chat else "text_completion"}",'
            f'"created":{int(time.time())},"model":"{cfg.model}","choices":['
        )
        n_think = min(cfg.reasoning_tokens, n_out) if chat else 0
        # chunks: [t_write, tokens carried]; the first `reasoning_tokens` generated tokens were reasoning
        chunks: list[list[float]] = []
        record = {"t_recv": t_recv, "chunks": chunks, "prompt_tokens": n_prompt, "reasoning_tokens": n_think}
        if cfg.record_prompts and isinstance(ask.prompt, list):
            record["prompt"] = ask.prompt
        if chat:
            record["n_messages"] = len(ask.messages)
        record["model"] = ask.model
        if self.index is not None:
            record["proc"] = self.index
        self.emits[key] = record
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)

        async def emit(choice: str | None, done: int, n_tok: int) -> None:
            usage = (
                f',"usage":{{"prompt_tokens":{n_prompt},"total_tokens":{n_prompt + done},'
                f'"completion_tokens":{done}}}'
                if continuous
                else ""
            )
            data = f"data: {head}{choice or ''}]{usage}}}\n\n".encode()
            chunks.append([time.perf_counter(), n_tok])
            await resp.write(data)

        if chat and cfg.role_chunk:
            lead = min(cfg.role_chunk_lead_s, cfg.ttft_s)
            await asyncio.sleep(cfg.ttft_s - lead)
            await emit('{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}', 0, 0)
            await asyncio.sleep(lead)
        else:
            await asyncio.sleep(cfg.ttft_s)
        done = 0
        while done < n_out:
            if done and cut_after is not None and done >= cut_after:
                if request.transport is not None:  # None: the client has gone already
                    request.transport.abort()  # a broken stream: no [DONE], no chunked terminator
                return resp
            if done and stall_after is not None and done >= stall_after:
                await self._hold(request)
                return resp
            if garbage_after is not None and done == garbage_after:
                await resp.write(b'data: {"id": "cmpl-x", "choices": [{"text": "\xff\n\n')
            if done:
                await asyncio.sleep(cfg.itl_s)
            n_tok = min(cfg.tokens_per_chunk, n_out - done)
            field = "content"
            if done < n_think:  # a chunk is all reasoning or all answer
                n_tok, field = min(n_tok, n_think - done), cfg.reasoning_field
            if cfg.empty_chunks:
                await emit(self._choice(chat, "", None, None), done, 0)
            ids = list(range(1000 + done, 1000 + done + n_tok))
            done += n_tok
            text = "" if cfg.empty_text else "".join(f" t{i}" for i in ids)
            finish = ('"stop"' if cfg.stop_early_share else '"length"') if done >= n_out else "null"
            self.generation_tokens += n_tok
            self._count_draft(n_tok)
            await emit(self._choice(chat, text, ids if ids_on else None, finish, field), done, n_tok)
        if usage_on:
            final = (
                f'data: {head}],"usage":{{"prompt_tokens":{n_prompt},"total_tokens":{n_prompt + done},'
                f'"completion_tokens":{done}}}}}\n\n'
            )
            chunks.append([time.perf_counter(), 0])
            await resp.write(final.encode())
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    def _count_draft(self, n_tok: int) -> None:
        """vLLM's SpecDecodingStats.observe_draft for a step that produced `n_tok` tokens."""
        if self.spec:
            accepted = min(n_tok - 1, self.cfg.spec_tokens)
            self.spec["spec_drafts"] += 1
            self.spec["spec_draft_tokens"] += self.cfg.spec_tokens
            self.spec["spec_accepted_tokens"] += accepted
            for k in range(accepted):
                self.spec[f"{SPEC_POS_PREFIX}{k}"] += 1

    @staticmethod
    def _choice(chat: bool, text: str, ids: list[int] | None, finish: str | None, field: str = "content") -> str:
        tid = f',"token_ids":{json.dumps(ids)}' if ids is not None else ""
        fin = finish or "null"
        if chat:
            delta = json.dumps({field: text}) if text or field != "content" else "{}"
            return f'{{"index":0,"delta":{delta},"logprobs":null,"finish_reason":{fin}{tid}}}'
        return f'{{"index":0,"text":{json.dumps(text)},"logprobs":null,"finish_reason":{fin},"stop_reason":null{tid}}}'
