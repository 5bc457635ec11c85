"""Is the load generator ever the bottleneck? bench's driver (in 1 and 2 worker processes)
and vLLM's own bench client against the fake server, side by side in one run.

One table, a row per concurrency level (64, 256, 1024, 4096 streams by default), a column
group per client: "bench wK" is bench's `run_point` with K client worker processes (w0:
in-process), "vllm" is vLLM's `async_request_openai_completions` driven the same way. Each
group shows:
  tok/s     streamed tokens per second the client received (first send to last token)
  cpu/1k    client CPU seconds per 1k tokens: this process's `time.process_time` over the
            run, plus for bench's worker runs the CPU seconds each worker reports
  TTFT err  client first-token stamp - the server's write time of that chunk, mean/p99 ms
  ITL err   |client gap - server gap| between token chunks, mean/p99 ms
  fail      failed requests
  box%      client + server CPU over the run / (its wall time x the CPUs): near 100 the box
            itself is the bottleneck, and the errors are the box's, not the client's
Every run also prints a detail line as it ends (server tok/s, send lag, server CPU, and for bench
the worst worker's event-loop lag p99: the self-check that marks a point invalid above 10 ms).

What a row means: the server is paced to an aggregate rate (`--rate`, default 10k tok/s:
inter-token gap = concurrency / rate, so every row carries about the same tokens/s and only
the number of streams changes), for `waves x concurrency` requests of `--out-len` tokens
(4 waves at 64 and 256, 2 at 1024, 1 at 4096; `--scale` multiplies them, at least one
request per stream). On 2 cores client and server share the cores: the fake server costs
about 0.025 CPU s per 1k tokens (a quarter core at 10k tok/s), bench's client about half
that, so the default rate leaves the box well below saturation and an error above a
millisecond or two is the client's. The box is shared with whatever else runs on it: the
load average is printed at the start and the end.

Fairness: a fresh fake server (same config) per client, level and repeat; the same request
count, prompts and output length; no warm-up and fresh connections for either client; the
same uvloop event loop; errors computed by the same code against the server's emit times
(perf_counter is CLOCK_MONOTONIC on Linux, so stamps compare across processes). One untimed
round per client comes first (imports, first-call paths, worker start-up code), and the GC
heap (vLLM and torch imports included) is frozen before the first measured run, as `vllm
bench serve` does and as bench's driver does per point. Each client sends its own request:
bench asks for per-chunk usage and token ids, so its chunks are about twice vLLM's bytes.

`--server-processes` (default: a quarter of the CPUs, at least 1, at most 8): the fake
server's processes, sharing one port (SO_REUSEPORT). One process writes about 40k tok/s on
a full core; on 2 cores a second one would only take CPU from the client under test.

    python scripts/bench_client.py                       # ~3 min on 2 cores
    python scripts/bench_client.py --levels 64 256 --scale 0.5 --workers 0 --no-vllm
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import resource
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.load.client import ClientConfig, raise_fd_limit
from bench.load.driver import run_point
from bench.load.types import LoadJob
from bench.load.workload import RandomPrompts
from bench.testing.fake_server import FakeServer, FakeServerConfig

LEVELS = [64, 256, 1024, 4096]
WAVES = {64: 4, 256: 4, 1024: 2, 4096: 1}  # requests = waves x concurrency; other levels: 2
RATE_TOK_S = 10_000.0
TTFT_S = 0.05
TIMEOUT_S = 120.0  # per request


@dataclass(frozen=True)
class Column:
    label: str
    workers: int | None  # bench: worker processes (0: in-process); None for vLLM's client
    vllm: bool = False


def _errors(rows, emits, keys):
    """TTFT error per request and |ITL error| per gap, seconds, against the server's write times;
    also the tokens matched and the span from the first send to the last token."""
    ttft_err, itl_err, n_tok, t_lo, t_hi = [], [], 0, np.inf, -np.inf
    for key, (t_send, chunk_t) in zip(keys, rows):
        e = emits.get(key)
        if e is None or not chunk_t:
            continue
        s_t = np.asarray([t for t, n in e["chunks"] if n > 0])
        c_t = np.asarray(chunk_t)
        if len(s_t) != len(c_t):
            continue
        ttft_err.append(c_t[0] - s_t[0])
        itl_err.extend(np.diff(c_t) - np.diff(s_t))
        n_tok += len(c_t)
        t_lo, t_hi = min(t_lo, t_send), max(t_hi, c_t[-1])
    return np.asarray(ttft_err), np.abs(np.asarray(itl_err)), n_tok, t_hi - t_lo


def _send_lag_s(rows, emits, keys) -> np.ndarray:
    """Server receipt - client t_send per request, seconds."""
    return np.asarray([emits[k]["t_recv"] - t_send for k, (t_send, _) in zip(keys, rows) if k in emits])


def _server_rate(emits, keys, t0: float) -> float:
    """Tokens the server wrote per second, from the client's first send to the server's last write."""
    ts = [t for k in keys if k in emits for t, n in emits[k]["chunks"] if n > 0]
    return len(ts) / (max(ts) - t0) if ts else float("nan")


async def _bench(base_url, model, wl, conc, n, workers):
    """bench's driver; returns (rows, keys, failed, CPU seconds of its worker processes, its worst loop lag p99 ms)."""
    pr = await run_point(LoadJob(base_url, model, wl, {"kind": "concurrency", "concurrency": conc}, 0, n,
                                 client=ClientConfig(timeout_s=TIMEOUT_S), workers=workers))
    keys = [f"{pr.client['request_id_prefix']}-{r.request_id}" for r in pr.records]
    rows = [(r.t_send, r.chunk_t if r.ok else []) for r in pr.records]
    # in-process runs report their loop's stats as a "worker" too: this process, counted by the caller
    worker_cpu_s = sum(s.cpu_s for s in pr.loops) if workers else 0.0
    lag_s = max((s.loop_lag_s_p99 for s in pr.loops if s.loop_lag_s_p99 is not None), default=None)
    return rows, keys, sum(not r.ok for r in pr.records), worker_cpu_s, 1e3 * lag_s if lag_s is not None else float("nan")


async def _vllm(base_url, model, wl, conc, n):
    import aiohttp
    from vllm.benchmarks.lib.endpoint_request_func import (
        RequestFuncInput,
        async_request_openai_completions,
    )

    prompts = wl.prompts(n)
    connector = aiohttp.TCPConnector(limit=conc, limit_per_host=conc, ttl_dns_cache=300, use_dns_cache=True,
                                     keepalive_timeout=60, enable_cleanup_closed=True, force_close=False)
    outputs = [None] * n
    async with aiohttp.ClientSession(connector=connector, trust_env=True,
                                     timeout=aiohttp.ClientTimeout(total=TIMEOUT_S)) as session:
        work = iter(range(n))

        async def worker():
            for i in work:
                inp = RequestFuncInput(prompt=prompts[i].token_ids, api_url=base_url + "/v1/completions",
                                       prompt_len=prompts[i].n_in_expected, output_len=prompts[i].n_out_expected,
                                       model=model, ignore_eos=True, request_id=f"vllm-{i}")
                outputs[i] = await async_request_openai_completions(inp, session)

        await asyncio.gather(*(worker() for _ in range(conc)))
    rows = []
    for o in outputs:
        chunk_t = list(o.start_time + o.ttft + np.concatenate([[0.0], np.cumsum(o.itl)])) if o.success else []
        rows.append((o.start_time, chunk_t))
    return rows, [f"vllm-{i}" for i in range(n)], sum(not o.success for o in outputs), 0.0, float("nan")


def _ms(x: np.ndarray, q: float | None = None) -> float:
    if not len(x):
        return float("nan")
    return 1e3 * (float(x.mean()) if q is None else float(np.percentile(x, q)))


def _measure(col: Column, srv: FakeServer, conc: int, n: int, out_len: int, runner) -> dict:
    wl = RandomPrompts(32, out_len, 32000, seed=conc)
    model = srv.config.model
    coro = (_vllm(srv.base_url, model, wl, conc, n) if col.vllm
            else _bench(srv.base_url, model, wl, conc, n, col.workers))
    srv_cpu0, cpu0 = srv.counters()["cpu_s"], time.process_time()
    try:
        rows, keys, n_failed, worker_cpu_s, lag_ms = runner.run(asyncio.wait_for(coro, 900))
    except Exception as e:  # noqa: BLE001  a run that breaks is a row of failures, not the end of the table
        print(f"{col.label} conc {conc}: the run failed: {type(e).__name__}: {e}", flush=True)
        rows, keys, n_failed, worker_cpu_s, lag_ms = [], [], n, 0.0, float("nan")
    cpu_s = time.process_time() - cpu0 + worker_cpu_s
    srv_cpu_s = srv.counters()["cpu_s"] - srv_cpu0
    emits = srv.emits()
    ttft_err, itl_err, n_tok, span_s = _errors(rows, emits, keys)
    send_lag = _send_lag_s(rows, emits, keys)
    sends = [t for t, _ in rows if t]
    return {
        "client": col.label, "conc": conc, "n": n, "failed": n_failed,
        "client_tok_s": n_tok / span_s if span_s > 0 else float("nan"),
        "server_tok_s": _server_rate(emits, keys, min(sends)) if sends else float("nan"),
        "ttft_mean_ms": _ms(ttft_err), "ttft_p99_ms": _ms(ttft_err, 99),
        "itl_mean_ms": _ms(itl_err), "itl_p99_ms": _ms(itl_err, 99),
        "send_lag_mean_ms": _ms(send_lag), "send_lag_p99_ms": _ms(send_lag, 99),
        "cpu_s_per_1k_tok": 1e3 * cpu_s / n_tok if n_tok else float("nan"),
        "server_cpu_s_per_1k_tok": 1e3 * srv_cpu_s / n_tok if n_tok else float("nan"),
        "lag_p99_ms": lag_ms,
        "box_pct": 100 * (cpu_s + srv_cpu_s) / (span_s * os.cpu_count()) if span_s > 0 else float("nan"),
    }


def _columns(workers: list[int], with_vllm: bool) -> list[Column]:
    cols = [Column(f"bench w{k}", k) for k in dict.fromkeys(workers)]
    return cols + ([Column("vllm", None, vllm=True)] if with_vllm else [])


def _box_line(max_conc: int) -> str:
    """CPUs, load, and the limits 4096 streams meet: ephemeral ports, listen backlog, open files."""
    def read(name: str) -> str:
        try:
            return Path("/proc/sys/net", name).read_text().split("\n")[0].replace("\t", "-")
        except OSError:
            return "?"

    lo_hi = read("ipv4/ip_local_port_range").split("-")
    n_ports = int(lo_hi[1]) - int(lo_hi[0]) + 1 if len(lo_hi) == 2 else None
    line = (f"{os.cpu_count()} CPUs, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
            f"ephemeral ports {'-'.join(lo_hi)}, somaxconn {read('core/somaxconn')}, "
            f"open files {resource.getrlimit(resource.RLIMIT_NOFILE)[0]}")
    if n_ports is not None and n_ports < 2 * max_conc:
        line += f"\nwarning: {n_ports} ephemeral ports for {max_conc} streams"
    return line


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--levels", type=int, nargs="+", default=LEVELS, help="concurrent streams, one row each")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2],
                    help="bench client worker processes, one column each (0: in-process)")
    ap.add_argument("--server-processes", type=int, default=max(1, min(8, (os.cpu_count() or 1) // 4)),
                    help="fake server processes sharing its port")
    ap.add_argument("--rate", type=float, default=RATE_TOK_S, help="aggregate tokens/s the server is paced to")
    ap.add_argument("--out-len", type=int, default=64, help="output tokens per request")
    ap.add_argument("--scale", type=float, default=1.0, help="multiply request counts (>= 1 request per stream)")
    ap.add_argument("--no-vllm", action="store_true", help="skip vLLM's client")
    ap.add_argument("--repeats", type=int, default=1, help="runs per client and level (median shown); "
                    "clients alternate order between repeats")
    args = ap.parse_args()
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:
        factory = None
    raise_fd_limit(4 * max(args.levels) + 256)  # vLLM's client does not; bench's driver does its own
    print(_box_line(max(args.levels)))
    print(f"fake server: {args.server_processes} process(es), {args.rate:.0f} tok/s aggregate, "
          f"TTFT {1e3 * TTFT_S:.0f} ms, {args.out_len} tokens per request")
    cols = _columns(args.workers, not args.no_vllm)
    table: dict[tuple[int, str], dict] = {}
    with asyncio.Runner(loop_factory=factory) as runner:
        # one untimed round per client first: imports and first-call paths are not what we measure
        for col in cols:
            with FakeServer(FakeServerConfig(ttft_s=0.01, itl_s=0.002), mode="process",
                            processes=args.server_processes) as srv:
                _measure(col, srv, 8, 16, 8, runner)
        gc.collect()
        gc.freeze()  # as vllm bench serve's freeze_gc_heap(); bench's run_point freezes again (cheap)
        for conc in args.levels:
            n = max(conc, round(WAVES.get(conc, 2) * conc * args.scale))
            cfg = FakeServerConfig(ttft_s=TTFT_S, itl_s=conc / args.rate, tokens_per_chunk=1)
            runs: dict[str, list[dict]] = {c.label: [] for c in cols}
            for rep in range(max(1, args.repeats)):
                for col in cols if rep % 2 == 0 else cols[::-1]:
                    with FakeServer(cfg, mode="process", processes=args.server_processes) as srv:
                        runs[col.label].append(_measure(col, srv, conc, n, args.out_len, runner))
                    print(_detail(runs[col.label][-1]), flush=True)
            table |= {(conc, label): _median(rs) for label, rs in runs.items()}
    print()
    print(_box_line(max(args.levels)).split("\n")[0] + " (at the end)")
    _print_table(table, args.levels, [c.label for c in cols], args.rate)


def _median(runs: list[dict]) -> dict:
    return {k: (float(np.median([r[k] for r in runs])) if isinstance(v, float) else v) for k, v in runs[0].items()}


def _detail(r: dict) -> str:
    return (f"{r['client']:9s} conc {r['conc']:5d} reqs {r['n']:5d} fail {r['failed']:d}: "
            f"client {r['client_tok_s']:.0f} tok/s, server {r['server_tok_s']:.0f} tok/s; "
            f"TTFT err {r['ttft_mean_ms']:.2f}/{r['ttft_p99_ms']:.2f} ms, ITL err {r['itl_mean_ms']:.2f}/"
            f"{r['itl_p99_ms']:.2f} ms, send lag {r['send_lag_mean_ms']:.2f}/{r['send_lag_p99_ms']:.2f} ms "
            f"(mean/p99); CPU s/1k tok client {r['cpu_s_per_1k_tok']:.4f} server "
            f"{r['server_cpu_s_per_1k_tok']:.4f}; box {r['box_pct']:.0f}%; client loop lag p99 {r['lag_p99_ms']:.2f} ms")


_CELL_HEAD = f"{'tok/s':>6s} {'cpu/1k':>6s} {'TTFT err ms':>13s} {'ITL err ms':>13s} {'fail':>4s} {'box%':>4s}"


def _cell(r: dict) -> str:
    return (f"{r['client_tok_s']:6.0f} {r['cpu_s_per_1k_tok']:6.4f} {r['ttft_mean_ms']:6.2f}/{r['ttft_p99_ms']:<6.2f} "
            f"{r['itl_mean_ms']:6.2f}/{r['itl_p99_ms']:<6.2f} {r['failed']:4d} {r['box_pct']:4.0f}")


def _print_table(table: dict, levels: list[int], labels: list[str], rate: float) -> None:
    width = len(_CELL_HEAD)
    print(f"{'':18s} | " + " | ".join(f"{label:^{width}s}" for label in labels))
    print(f"{'conc':>5s} {'reqs':>5s} {'gap ms':>6s} | " + " | ".join(_CELL_HEAD for _ in labels))
    for conc in levels:
        n = table[(conc, labels[0])]["n"]
        print(f"{conc:5d} {n:5d} {1e3 * conc / rate:6.1f} | " + " | ".join(_cell(table[(conc, lb)]) for lb in labels))
    print("tok/s carried; cpu/1k: client CPU s per 1k tokens; TTFT/ITL error mean/p99 ms vs the server's "
          "write times; box%: client+server CPU / (wall x CPUs)")
    if "vllm" in labels:
        for conc in levels:
            theirs = table[(conc, "vllm")]
            parts = [f"{lb} CPU x{table[(conc, lb)]['cpu_s_per_1k_tok'] / (theirs['cpu_s_per_1k_tok'] or np.nan):.2f}, "
                     f"TTFT p99 {table[(conc, lb)]['ttft_p99_ms']:.2f} ms" for lb in labels if lb != "vllm"]
            print(f"conc {conc:5d} vs vllm (TTFT p99 {theirs['ttft_p99_ms']:.2f} ms): " + "; ".join(parts))


if __name__ == "__main__":
    main()
