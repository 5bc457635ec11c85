"""A streaming OpenAI-compatible server with known timing, framed exactly like vLLM's.

It answers `/v1/completions` and `/v1/chat/completions` with SSE (`data: {...}\\n\\n`,
`data: [DONE]\\n\\n`), honours `stream_options.include_usage/continuous_usage_stats`,
`return_token_ids`, `max_tokens` (always generated in full, as with `ignore_eos`), and
records the `time.perf_counter()` at which it wrote every chunk. perf_counter is
CLOCK_MONOTONIC on Linux, so a client in another process can compare its own stamps
with the server's. It also serves `/metrics` (Prometheus text, vLLM's counter names),
`/health`, `/v1/models` and `/fake/emits` (the recorded emit times as JSON).

Faults, for reliability tests (each on every k-th request, see FakeServerConfig): HTTP 500,
a connection closed mid-stream, a stream that stops half-way with the connection open
(stall), a request never answered (no status line), a garbage event half-way, a body
that is not SSE at all, and slow headers. Stalled and unanswered requests are released
(connection aborted) when the server stops, so a test never waits on them.

    with FakeServer(FakeServerConfig(ttft_s=0.05, itl_s=0.01)) as srv:   # thread
        ... srv.base_url ... srv.emits()
    with FakeServer(cfg, mode="process") as srv:  # own process: its CPU is not yours
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import asdict, dataclass
from typing import Self

from aiohttp import web


@dataclass
class FakeServerConfig:
    """Timing in seconds; every `*_every = k` fires on the k-th, 2k-th, ... request (1-based, arrival order)."""

    ttft_s: float = 0.02  # request arrival -> first token-bearing chunk
    itl_s: float = 0.005  # between token-bearing chunks
    tokens_per_chunk: int = 1  # > 1 imitates speculative decoding
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
    model: str = "fake-model"


def _hit(every: int, k: int) -> bool:
    return every > 0 and k % every == 0


def _prompt_tokens(body: dict) -> int:
    prompt = body.get("prompt")
    if isinstance(prompt, list):
        return len(prompt)
    if isinstance(prompt, str):
        return len(prompt.split())
    return sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))


class _App:
    """The aiohttp application and what it recorded."""

    def __init__(self, cfg: FakeServerConfig):
        self.cfg = cfg
        self.n_requests = 0
        self.generation_tokens = 0
        self.prompt_tokens = 0
        self.emits: dict[str, dict] = {}
        self.release: asyncio.Event | None = None  # set on shutdown: frees hung and stalled handlers

    async def _hold(self, request: web.Request) -> None:
        """Keep a request open until the server stops, then drop its connection."""
        if self.release is None:
            self.release = asyncio.Event()
        await self.release.wait()
        if request.transport is not None:
            request.transport.abort()

    def build(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/completions", self.handle)
        app.router.add_post("/v1/chat/completions", self.handle)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/health", self.health)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/fake/emits", self.emit_times)
        return app

    async def health(self, request: web.Request) -> web.Response:
        return web.Response(text="")

    async def emit_times(self, request: web.Request) -> web.Response:
        return web.json_response(self.emits)

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": self.cfg.model, "object": "model"}]})

    async def metrics(self, request: web.Request) -> web.Response:
        labels = f'{{engine="0",model_name="{self.cfg.model}"}}'
        lines = []
        for name, value, doc in (
            ("vllm:prompt_tokens_total", self.prompt_tokens, "Number of prefill tokens processed."),
            ("vllm:generation_tokens_total", self.generation_tokens, "Number of generation tokens processed."),
        ):
            lines += [f"# HELP {name} {doc}", f"# TYPE {name} counter", f"{name}{labels} {float(value)}"]
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")

    async def handle(self, request: web.Request) -> web.StreamResponse:
        t_recv = time.perf_counter()
        cfg = self.cfg
        self.n_requests += 1
        k = self.n_requests
        key = request.headers.get("X-Request-Id", f"fake-{k}")
        body = json.loads(await request.read())
        chat = request.path.endswith("chat/completions")
        if _hit(cfg.fail_http_every, k):
            return web.json_response({"error": {"message": "injected failure", "code": 500}}, status=500)
        if _hit(cfg.hang_every, k):
            await self._hold(request)
            return web.Response(status=500)  # never sent: the connection is gone
        if cfg.headers_delay_s > 0:
            await asyncio.sleep(cfg.headers_delay_s)
        if _hit(cfg.not_sse_every, k):
            return web.Response(text="<html><body>502 Bad Gateway</body></html>", content_type="text/html")
        n_prompt = _prompt_tokens(body)
        self.prompt_tokens += n_prompt
        n_out = int(body.get("max_tokens") or body.get("max_completion_tokens") or 16)
        if _hit(cfg.short_every, k):
            n_out -= 1
        cut_after = n_out // 2 if _hit(cfg.cut_stream_every, k) else None
        stall_after = n_out // 2 if _hit(cfg.stall_every, k) else None
        garbage_after = n_out // 2 if _hit(cfg.garbage_every, k) else None
        opts = body.get("stream_options") or {}
        usage_on = bool(opts.get("include_usage"))
        continuous = usage_on and bool(opts.get("continuous_usage_stats")) and cfg.continuous_usage
        ids_on = bool(body.get("return_token_ids")) and cfg.token_ids
        rid = ("chatcmpl-" if chat else "cmpl-") + key
        head = (
            f'{{"id":"{rid}","object":"{"chat.completion.chunk" if chat else "text_completion"}",'
            f'"created":{int(time.time())},"model":"{cfg.model}","choices":['
        )
        record = {"t_recv": t_recv, "chunks": []}  # chunks: [t_write, tokens carried]
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
            record["chunks"].append([time.perf_counter(), n_tok])
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
            if cfg.empty_chunks:
                await emit(self._choice(chat, "", None, None), done, 0)
            ids = list(range(1000 + done, 1000 + done + n_tok))
            done += n_tok
            text = "" if cfg.empty_text else "".join(f" t{i}" for i in ids)
            finish = '"length"' if done >= n_out else "null"
            self.generation_tokens += n_tok
            await emit(self._choice(chat, text, ids if ids_on else None, finish), done, n_tok)
        if usage_on:
            final = (
                f'data: {head}],"usage":{{"prompt_tokens":{n_prompt},"total_tokens":{n_prompt + done},'
                f'"completion_tokens":{done}}}}}\n\n'
            )
            record["chunks"].append([time.perf_counter(), 0])
            await resp.write(final.encode())
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    @staticmethod
    def _choice(chat: bool, text: str, ids: list[int] | None, finish: str | None) -> str:
        tid = f',"token_ids":{json.dumps(ids)}' if ids is not None else ""
        fin = finish or "null"
        if chat:
            delta = json.dumps({"content": text}) if text else "{}"
            return f'{{"index":0,"delta":{delta},"logprobs":null,"finish_reason":{fin}{tid}}}'
        return f'{{"index":0,"text":{json.dumps(text)},"logprobs":null,"finish_reason":{fin},"stop_reason":null{tid}}}'


class FakeServer:
    """Context manager: the fake server on 127.0.0.1 in a thread (default) or its own process."""

    def __init__(self, config: FakeServerConfig | None = None, mode: str = "thread", port: int = 0):
        self.config = config or FakeServerConfig()
        self.mode = mode
        self.port = port
        self._proc: subprocess.Popen | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._app: _App | None = None

    async def _release(self) -> None:
        if self._app.release is None:
            self._app.release = asyncio.Event()
        self._app.release.set()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Self:
        if self.mode == "process":
            self._start_process()
        elif self.mode == "thread":
            self._start_thread()
        else:
            raise ValueError(f"unknown fake server mode {self.mode!r} (thread or process)")
        return self

    def __exit__(self, *exc) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None
        if self._loop is not None:
            asyncio.run_coroutine_threadsafe(self._release(), self._loop).result(timeout=10)
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._loop = None

    def _start_process(self) -> None:
        cmd = [sys.executable, "-m", "bench.testing.fake_server", "--port", str(self.port),
               "--config", json.dumps(asdict(self.config))]
        self._proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        line = self._proc.stdout.readline()
        if not line.startswith("FAKE_SERVER_PORT "):
            self._proc.kill()
            raise RuntimeError(f"fake server did not start: {line!r}")
        self.port = int(line.split()[1])

    def _start_thread(self) -> None:
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        async def start() -> None:
            self._app = _App(self.config)
            self._runner = web.AppRunner(self._app.build(), access_log=None)
            await self._runner.setup()
            site = web.TCPSite(self._runner, "127.0.0.1", self.port, backlog=4096)
            await site.start()
            self.port = self._runner.addresses[0][1]

        def main() -> None:
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(start())
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=main, name="fake-server", daemon=True)
        self._thread.start()
        if not ready.wait(timeout=10):
            raise RuntimeError("fake server thread did not start in 10 s")

    def _get(self, path: str) -> bytes:
        with urllib.request.urlopen(self.base_url + path, timeout=30) as r:
            return r.read()

    def emits(self) -> dict[str, dict]:
        """X-Request-Id -> {"t_recv": s, "chunks": [[t_write_s, tokens], ...]} (perf_counter seconds)."""
        return json.loads(self._get("/fake/emits"))

    def metrics_text(self) -> str:
        return self._get("/metrics").decode()


def _serve(config: FakeServerConfig, port: int) -> None:
    async def main() -> None:
        runner = web.AppRunner(_App(config).build(), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port, backlog=4096).start()
        print(f"FAKE_SERVER_PORT {runner.addresses[0][1]}", flush=True)
        await asyncio.Event().wait()

    try:
        import uvloop

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="bench fake OpenAI-compatible streaming server")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--config", default="{}", help="FakeServerConfig fields as JSON")
    args = parser.parse_args()
    try:
        _serve(FakeServerConfig(**json.loads(args.config)), args.port)
    except KeyboardInterrupt:
        pass
