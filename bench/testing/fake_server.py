"""A streaming OpenAI-compatible server with known timing, framed exactly like vLLM's.

It answers `/v1/completions` and `/v1/chat/completions` with SSE (`data: {...}\\n\\n`,
`data: [DONE]\\n\\n`), honours `stream_options.include_usage/continuous_usage_stats`,
`return_token_ids`, `max_tokens` (always generated in full, as with `ignore_eos`), and
records the `time.perf_counter()` at which it wrote every chunk. perf_counter is
CLOCK_MONOTONIC on Linux, so a client in another process can compare its own stamps
with the server's. It also serves `/metrics` (Prometheus text, vLLM's counter names),
`/health`, `/v1/models` and `/fake/emits` (the recorded emit times as JSON).
With `reasoning_tokens=N` a chat stream's first N tokens go out as `delta.reasoning` (or
`reasoning_field`, e.g. the older `reasoning_content`), as vLLM's reasoning parsers stream them.

`/metrics` also carries vLLM's scheduler gauges and prefix-cache counters, from a simple
model: requests running (at most `max_num_seqs`, the rest waiting), KV-cache usage (their
prompt + output tokens / `kv_capacity_tokens`), preemptions (one per `preempt_every`-th
request), and a prefix cache of 16-token blocks: each admitted prompt adds its length to
`prefix_cache_queries` and the tokens of its leading blocks already seen to
`prefix_cache_hits`. `POST /reset_prefix_cache` empties that cache (`{"success": true}`),
as vLLM does with VLLM_SERVER_DEV_MODE=1; `dev_mode=False` answers 404 as vLLM does without.

Faults, for reliability tests (each on every k-th request, see FakeServerConfig): HTTP 500,
a connection closed mid-stream, a stream that stops half-way with the connection open
(stall), a request never answered (no status line), a garbage event half-way, a body
that is not SSE at all, and slow headers. Stalled and unanswered requests are released
(connection aborted) when the server stops, so a test never waits on them.

    with FakeServer(FakeServerConfig(ttft_s=0.05, itl_s=0.01)) as srv:   # thread
        ... srv.base_url ... srv.emits()
    with FakeServer(cfg, mode="process") as srv:  # own process: its CPU is not yours
    with FakeServer(cfg, mode="process", processes=4) as srv:  # 4 processes, one port

With `processes=N > 1` the N processes listen on one port with SO_REUSEPORT (the kernel
spreads connections over them), so the server side writes more tokens/s than one Python
process can. Each also listens on a control port of its own: `emits()` merges the
processes' records (each tagged `"proc": index`) and `metrics_text()` sums their counters;
`/metrics` on the shared port sums them too, as vLLM's does across its API servers.
`/fake/emits` and `/fake/counters` on the shared port answer for the one process reached,
and the `*_every` faults count each process's own requests. The processes exit when the
server stops or when the process that started them is gone (their stdin closes).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import urllib.request
from dataclasses import asdict
from typing import Self

from aiohttp import web

from bench.testing.fake_app import (
    FD_LIMIT,
    LISTEN_BACKLOG,
    FakeServerConfig,
    _App,
    _metrics_text,
    _sum_counters,
)

PORT_FROM_STDIN = -1  # a process of a multi-process server started before the first one has its port


class FakeServer:
    """Context manager: the fake server on 127.0.0.1 in a thread (default) or its own process(es)."""

    def __init__(self, config: FakeServerConfig | None = None, mode: str = "thread", port: int = 0,
                 processes: int = 1):
        if processes < 1 or (processes > 1 and mode != "process"):
            raise ValueError(f"processes={processes}: need >= 1, and mode='process' for more than one")
        self.config = config or FakeServerConfig()
        self.mode = mode
        self.port = port
        self.processes = processes
        self._procs: list[subprocess.Popen] = []
        self._control_ports: list[int] = []  # processes > 1: one per process
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._app: _App | None = None

    async def _release(self) -> None:
        app = self._app
        if app is None:  # the thread never made its app
            return
        if app.release is None:
            app.release = asyncio.Event()
        app.release.set()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pids(self) -> list[int]:
        """The server's process ids (none in thread mode)."""
        return [proc.pid for proc in self._procs]

    def __enter__(self) -> Self:
        if self.mode == "process":
            self._start_process()
        elif self.mode == "thread":
            self._start_thread()
        else:
            raise ValueError(f"unknown fake server mode {self.mode!r} (thread or process)")
        return self

    def __exit__(self, *exc) -> None:
        for proc in self._procs:
            proc.terminate()
        for proc in self._procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            for pipe in (proc.stdin, proc.stdout):
                if pipe is not None:
                    pipe.close()
        self._procs, self._control_ports = [], []
        loop, runner, thread = self._loop, self._runner, self._thread
        if loop is not None:
            asyncio.run_coroutine_threadsafe(self._release(), loop).result(timeout=10)
            if runner is not None:  # None: the thread failed before its runner was made
                asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=10)
            loop.call_soon_threadsafe(loop.stop)
            if thread is not None:
                thread.join(timeout=10)
            self._loop = None

    def _spawn(self, port: int, index: int | None = None) -> subprocess.Popen:
        cmd = [sys.executable, "-m", "bench.testing.fake_server", "--port", str(port),
               "--config", json.dumps(asdict(self.config))]
        if index is not None:
            cmd += ["--index", str(index)]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stdin=subprocess.PIPE if index is not None else None,
                                text=True)
        self._procs.append(proc)
        return proc

    @staticmethod
    def _ports(proc: subprocess.Popen) -> list[int]:
        """The ports a starting server process reports: the one it serves on, then its control port."""
        if proc.stdout is None:  # _spawn always pipes it
            raise RuntimeError("fake server process started without a stdout pipe")
        line = proc.stdout.readline()
        if not line.startswith("FAKE_SERVER_PORT "):
            raise RuntimeError(f"fake server did not start: {line!r}")
        return [int(p) for p in line.split()[1:]]

    def _start_process(self) -> None:
        try:
            if self.processes == 1:
                self.port = self._ports(self._spawn(self.port))[0]
                return
            # the first process picks the port (when 0); the others, started at once (their imports
            # overlap its), are told it on stdin and bind the same one
            first = self._spawn(self.port, 0)
            rest = [self._spawn(PORT_FROM_STDIN, i) for i in range(1, self.processes)]
            self.port, first_control = self._ports(first)
            for proc in rest:
                if proc.stdin is None:  # _spawn pipes it when given an index
                    raise RuntimeError("fake server process started without a stdin pipe")
                proc.stdin.write(f"PORT {self.port}\n")
                proc.stdin.flush()
            self._control_ports = [first_control] + [self._ports(proc)[1] for proc in rest]
            for proc in self._procs:  # each learns the others' control ports, for /metrics on the shared port
                if proc.stdin is None or proc.stdout is None:  # _spawn pipes both when given an index
                    raise RuntimeError("fake server process started without its pipes")
                proc.stdin.write("PEERS " + " ".join(map(str, self._control_ports)) + "\n")
                proc.stdin.flush()
            for proc in self._procs:
                if proc.stdout is None:
                    raise RuntimeError("fake server process started without a stdout pipe")
                if (line := proc.stdout.readline()) != "FAKE_SERVER_READY\n":
                    raise RuntimeError(f"fake server process did not get ready: {line!r}")
        except BaseException:
            self.__exit__()
            raise

    def _start_thread(self) -> None:
        ready = threading.Event()
        loop = self._loop = asyncio.new_event_loop()

        async def start() -> None:
            self._app = _App(self.config)
            self._runner = web.AppRunner(self._app.build(), access_log=None)
            await self._runner.setup()
            site = web.TCPSite(self._runner, "127.0.0.1", self.port, backlog=LISTEN_BACKLOG)
            await site.start()
            self.port = self._runner.addresses[0][1]

        def main() -> None:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(start())
            ready.set()
            loop.run_forever()

        self._thread = threading.Thread(target=main, name="fake-server", daemon=True)
        self._thread.start()
        if not ready.wait(timeout=10):
            raise RuntimeError("fake server thread did not start in 10 s")

    def _urls(self) -> list[str]:
        """One URL per server process that answers for that process alone."""
        return [f"http://127.0.0.1:{p}" for p in self._control_ports] or [self.base_url]

    @staticmethod
    def _get(url: str) -> bytes:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.read()

    def emits(self) -> dict[str, dict]:
        """X-Request-Id -> {"t_recv": s, "chunks": [[t_write_s, tokens], ...]} (perf_counter seconds),
        "prompt_tokens" (counted as in /metrics), "reasoning_tokens" (the first generated tokens that
        went out as reasoning) and, for chat, "n_messages"; merged over the processes (then each
        record also has "proc": the process's index)."""
        merged: dict[str, dict] = {}
        for url in self._urls():
            part = json.loads(self._get(url + "/fake/emits"))
            if both := merged.keys() & part.keys():
                raise RuntimeError(f"X-Request-Id {min(both)!r} reached two fake server processes")
            merged.update(part)
        return merged

    def counters(self) -> dict:
        """Summed over the processes: n_requests, prompt_tokens, generation_tokens, and cpu_s (CPU
        seconds of the threads that serve, since they started)."""
        return _sum_counters([json.loads(self._get(url + "/fake/counters")) for url in self._urls()])

    def metrics_text(self) -> str:
        """/metrics as vLLM writes it: the token counters, summed over the processes."""
        if not self._control_ports:
            return self._get(self.base_url + "/metrics").decode()
        return _metrics_text(self.config.model, self.counters(), self.config.kv_capacity_tokens)


def _serve(config: FakeServerConfig, port: int, index: int | None) -> None:
    """Serve until killed; as process `index` of a multi-process server, until stdin closes
    (port PORT_FROM_STDIN: the first line of stdin, `PORT p`, names it)."""
    from bench.load.client import raise_fd_limit  # here: a server process has no use for the client's parser

    raise_fd_limit(FD_LIMIT)
    if port == PORT_FROM_STDIN:
        port = int(sys.stdin.readline().split()[1])

    async def main() -> None:
        app = _App(config, index)
        runner = web.AppRunner(app.build(), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port, backlog=LISTEN_BACKLOG, reuse_port=index is not None).start()
        if index is None:
            print(f"FAKE_SERVER_PORT {runner.addresses[0][1]}", flush=True)
            await asyncio.Event().wait()
        await web.TCPSite(runner, "127.0.0.1", 0).start()  # the control port: this process alone
        app.shared_port, control_port = runner.addresses[0][1], runner.addresses[-1][1]
        print(f"FAKE_SERVER_PORT {app.shared_port} {control_port}", flush=True)
        loop = asyncio.get_running_loop()
        line = await loop.run_in_executor(None, sys.stdin.readline)
        app.peers = [int(p) for p in line.split()[1:] if int(p) != control_port]
        print("FAKE_SERVER_READY", flush=True)
        await loop.run_in_executor(None, sys.stdin.read)  # returns at EOF: the parent stopped us or is gone

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
    parser.add_argument("--index", type=int, default=None, help="this process's index in a multi-process server")
    args = parser.parse_args()
    try:
        _serve(FakeServerConfig(**json.loads(args.config)), args.port, args.index)
    except KeyboardInterrupt:
        pass
