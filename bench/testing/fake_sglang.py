"""A fake SGLang server, launched as SGLang is: `python -m bench.testing.fake_sglang <SGLang's argv>`.

What bench.engines.sglang_server talks to, as SGLang 0.5.23 answers it
(sglang/srt/entrypoints/http_server.py, sglang/srt/observability/metrics_collector.py):

- `/health` and `/health_generate`: 503 while the server starts (`--fake-startup-s`, not SGLang's,
  else `BENCH_FAKE_SGLANG_STARTUP_S`, default 0.5 s), then 200.
- `/server_info` (and the deprecated `/get_server_info`): the server args by field name
  (`tp_size`, `dtype`, ...) and `version`; also `fake_health_503s` (not SGLang's): how many
  health checks were answered 503, so a test can see how often a start polled.
- `/flush_cache` (GET or POST): 200 "Cache flushed." when idle; 400 while requests run or wait
  ("the operation will not be performed"), as SGLang's radix cache refuses then.
- `/metrics`: SGLang's names and labels: `sglang:prompt_tokens_total`,
  `sglang:generation_tokens_total` (labels model_name, engine_type, is_streaming),
  `sglang:cached_tokens_total` (cache_source), `sglang:num_retracted_requests_total`, the
  gauges `sglang:num_running_reqs`, `sglang:num_queue_reqs`, `sglang:token_usage` (tp_rank,
  pp_rank, moe_ep_rank labels). No vLLM name, and no `/reset_prefix_cache`.
- `/v1/completions`, `/v1/chat/completions`: the vLLM fake's streaming (bench.testing.fake_app),
  whose SSE framing SGLang's OpenAI server shares.

`--model-path` names no file that is read; the other flags are recorded, never acted on, except
`--fake-startup-s` (above) and `--fake-fail-start` (not SGLang's): the server exits with code 1
after its startup time, as a start that fails (for the runner's start-failure paths). Both come
from a configuration's `extra_args`, so two engines of one run can start at different speeds.
"""

from __future__ import annotations

import asyncio
import gc
import os
import sys
import time

from aiohttp import web

from bench.testing.fake_app import FakeServerConfig, _App

VERSION = "0.5.23"


def server_args(argv: list[str]) -> dict[str, object]:
    """SGLang-style `--flag value` / `--switch` argv -> {field name: value} (values as given)."""
    out: dict[str, object] = {}
    i = 0
    while i < len(argv):
        key = argv[i].removeprefix("--").replace("-", "_")
        if i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            out[key], i = argv[i + 1], i + 2
        else:
            out[key], i = True, i + 1
    return out


class _SglangApp(_App):
    def __init__(self, cfg: FakeServerConfig, args: dict[str, object], startup_s: float):
        super().__init__(cfg)
        self.args = args
        self.ready_at = time.monotonic() + startup_s
        self.flushes = 0
        self.health_503s = 0

    def build(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/completions", self.handle)
        app.router.add_post("/v1/chat/completions", self.handle)
        app.router.add_get("/metrics", self.sglang_metrics)
        for path in ("/health", "/health_generate"):
            app.router.add_get(path, self.sglang_health)
        for path in ("/server_info", "/get_server_info"):
            app.router.add_get(path, self.server_info)
        app.router.add_route("GET", "/flush_cache", self.flush_cache)
        app.router.add_route("POST", "/flush_cache", self.flush_cache)
        app.router.add_get("/v1/models", self.models)
        return app

    async def sglang_health(self, request: web.Request) -> web.Response:
        if time.monotonic() < self.ready_at:
            self.health_503s += 1
            return web.Response(status=503)
        return web.Response(status=200)

    async def server_info(self, request: web.Request) -> web.Response:
        return web.json_response({**self.args, "version": VERSION, "frontend": "python", "internal_states": [{}],
                                  "fake_health_503s": self.health_503s})

    async def flush_cache(self, request: web.Request) -> web.Response:
        if self.running or self.waiting:
            return web.Response(status=400, text="Flush cache failed: requests are running or waiting.\n")
        self.blocks.clear()
        self.flushes += 1
        return web.Response(text="Cache flushed.\nPlease check backend logs for more details. "
                                 "(When there are running or waiting requests, the operation will not be performed.)\n")

    async def sglang_metrics(self, request: web.Request) -> web.Response:
        model = str(self.args.get("served_model_name", self.cfg.model))
        base = f'model_name="{model}",engine_type="unified"'
        rank = f'{base},tp_rank="0",pp_rank="0",moe_ep_rank="0"'
        usage = min(1.0, self.kv_tokens / self.cfg.kv_capacity_tokens)
        lines = [
            ("sglang:prompt_tokens_total", "counter", f'{base},is_streaming="true"', self.prompt_tokens),
            ("sglang:generation_tokens_total", "counter", f'{base},is_streaming="true"', self.generation_tokens),
            ("sglang:cached_tokens_total", "counter", f'{base},cache_source="device"', self.prefix_cache_hits),
            ("sglang:num_retracted_requests_total", "counter", rank, self.preemptions),
            ("sglang:num_running_reqs", "gauge", rank, self.running),
            ("sglang:num_queue_reqs", "gauge", rank, self.waiting),
            ("sglang:token_usage", "gauge", rank, usage),
        ]
        text = "".join(f"# HELP {n} {n}\n# TYPE {n} {k}\n{n}{{{labels}}} {float(v)}\n" for n, k, labels, v in lines)
        return web.Response(text=text, content_type="text/plain")


def main(argv: list[str]) -> None:
    # Everything imported is kept for the process's life: out of the collector's sight, the exit
    # on SIGINT (an engine stop) takes ~0.02 s instead of ~0.45 s on 2 busy cores (the final
    # collections walked every object of aiohttp, pydantic and bench's catalog).
    gc.freeze()
    args = server_args(argv)
    cfg = FakeServerConfig(ttft_s=0.01, itl_s=0.002, model=str(args.get("served_model_name", "fake-model")),
                           dev_mode=False)
    startup_s = float(str(args.get("fake_startup_s", os.environ.get("BENCH_FAKE_SGLANG_STARTUP_S", "0.5"))))
    if args.get("fake_fail_start"):
        time.sleep(startup_s)
        print("RuntimeError: fake SGLang failed its start (--fake-fail-start)", flush=True)
        sys.exit(1)

    async def serve() -> None:
        app = _SglangApp(cfg, args, startup_s)
        runner = web.AppRunner(app.build(), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, str(args.get("host", "127.0.0.1")), int(str(args.get("port", 30000)))).start()
        print(f"fake SGLang {VERSION} serving {args.get('model_path')}", flush=True)
        await asyncio.Event().wait()

    asyncio.run(serve())


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except KeyboardInterrupt:
        pass
