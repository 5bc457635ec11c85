"""Is the client ever the bottleneck? Measure bench's streaming client, and vLLM's own bench
client, against the fake server (its own process, known timing, 127.0.0.1 only).

For each concurrency level it prints: streamed tokens/s the client received vs what the
server wrote, TTFT error (client first-token stamp - server write time of that chunk) and
ITL error (client gap - server gap), mean and p99 in ms, send lag (server receipt -
client `t_send`, mean/p99 ms: how early the client stamps a request before its bytes go
out, plus the server's own parse delay, which is the same for both clients), and client
CPU seconds per 1k tokens (time.process_time of this process; the server's CPU is not in
it). Then the same for vLLM's `async_request_openai_completions`, driven the same way,
and the CPU ratio.

Fairness: one fake server process per run (fresh, same config), same request count,
prompts and output length, no warm-up and fresh connections for either client, the same
uvloop event loop, errors computed by the same code against the server's emit times.
The GC heap (vLLM and torch imports included) is frozen once before the first measured
run, as `vllm bench serve` does before its benchmark and as bench's driver does per
point. Each client sends its own request: ours asks for per-chunk usage and token ids,
so its chunks are about twice the bytes of vLLM's.

    python scripts/bench_client.py                 # default: ~2-3 min on 2 cores
    python scripts/bench_client.py --levels 1 64 --out-len 32
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import time

import numpy as np

from bench.load.driver import run_point
from bench.load.workload import RandomWorkload
from bench.testing.fake_server import FakeServer, FakeServerConfig

# concurrency -> (requests, server inter-token gap s): aggregate ~10k tokens/s at the top,
# which one Python server process can write on a shared 2-core box.
PLAN = {1: (16, 0.005), 64: (256, 0.008), 256: (512, 0.025), 1024: (1024, 0.1)}
TIMEOUT_S = 120.0


def _errors(t_sends_firsts_chunks, emits, keys):
    """TTFT error per request and ITL error per gap, seconds, against the server's write times."""
    ttft_err, itl_err, n_tok, t_lo, t_hi = [], [], 0, np.inf, -np.inf
    for key, (t_send, chunk_t) in zip(keys, t_sends_firsts_chunks):
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
    return len(ts) / (max(ts) - t0)


async def _ours(base_url, model, prompts_wl, conc, n):
    pr = await run_point(base_url, model, prompts_wl, {"kind": "concurrency", "concurrency": conc}, 0, n,
                         timeout_s=TIMEOUT_S)
    keys = [f"{pr.client['request_id_prefix']}-{r.request_id}" for r in pr.records]
    rows = [(r.t_send, r.chunk_t if r.ok else []) for r in pr.records]
    return rows, keys, sum(not r.ok for r in pr.records)


async def _vllm(base_url, model, prompts_wl, conc, n):
    import aiohttp
    from vllm.benchmarks.lib.endpoint_request_func import (
        RequestFuncInput,
        async_request_openai_completions,
    )

    prompts = prompts_wl.prompts(n)
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
    return rows, [f"vllm-{i}" for i in range(n)], sum(not o.success for o in outputs)


def _measure(kind, base_url, srv, conc, n, out_len, runner):
    wl = RandomWorkload(32, out_len, 32000, seed=conc)
    fn = _ours if kind == "bench" else _vllm
    if kind == "vllm":
        import vllm.benchmarks.lib.endpoint_request_func  # noqa: F401  import outside the CPU count
    cpu0 = time.process_time()
    rows, keys, n_failed = runner.run(asyncio.wait_for(fn(base_url, srv.config.model, wl, conc, n), 600))
    cpu_s = time.process_time() - cpu0
    emits = srv.emits()
    ttft_err, itl_err, n_tok, span_s = _errors(rows, emits, keys)
    send_lag = _send_lag_s(rows, emits, keys)
    return {
        "client": kind, "conc": conc, "n": n, "failed": n_failed,
        "client_tok_s": n_tok / span_s if span_s > 0 else float("nan"),
        "server_tok_s": _server_rate(emits, keys, min(t for t, _ in rows)),
        "ttft_mean_ms": 1e3 * ttft_err.mean(), "ttft_p99_ms": 1e3 * np.percentile(ttft_err, 99),
        "itl_mean_ms": 1e3 * itl_err.mean(), "itl_p99_ms": 1e3 * np.percentile(itl_err, 99),
        "send_lag_mean_ms": 1e3 * send_lag.mean(), "send_lag_p99_ms": 1e3 * np.percentile(send_lag, 99),
        "cpu_s_per_1k_tok": 1e3 * cpu_s / max(n_tok, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--levels", type=int, nargs="+", default=list(PLAN))
    ap.add_argument("--out-len", type=int, default=64, help="output tokens per request")
    ap.add_argument("--scale", type=float, default=1.0, help="multiply request counts (>= 1 request per slot)")
    ap.add_argument("--no-vllm", action="store_true", help="skip vLLM's client")
    ap.add_argument("--repeats", type=int, default=1, help="runs per client and level (median shown); "
                    "clients alternate order between repeats")
    args = ap.parse_args()
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:
        factory = None
    rows = []
    print(f"load average (1 min) at the start: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    clients = ["bench"] if args.no_vllm else ["bench", "vllm"]
    with asyncio.Runner(loop_factory=factory) as runner:
        # one untimed round per client first: imports and first-call paths are not what we measure
        with FakeServer(FakeServerConfig(ttft_s=0.01, itl_s=0.002), mode="process") as srv:
            for kind in clients:
                _measure(kind, srv.base_url, srv, 8, 16, 8, runner)
        gc.collect()
        gc.freeze()  # as vllm bench serve's freeze_gc_heap(); bench's run_point freezes again (cheap)
        for conc in args.levels:
            n, itl = PLAN.get(conc, (4 * conc, 0.01))
            n = max(conc, int(n * args.scale))
            cfg = FakeServerConfig(ttft_s=0.05, itl_s=itl, tokens_per_chunk=1)
            runs: dict[str, list[dict]] = {k: [] for k in clients}
            for rep in range(max(1, args.repeats)):
                for kind in clients if rep % 2 == 0 else clients[::-1]:
                    with FakeServer(cfg, mode="process") as srv:
                        runs[kind].append(_measure(kind, srv.base_url, srv, conc, n, args.out_len, runner))
                    print(_fmt(runs[kind][-1]), flush=True)
            rows += [_median(runs[k]) for k in clients]
    print()
    print(f"load average (1 min) at the end: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    print(_HEADER)
    for r in rows:
        print(_fmt(r))
    if not args.no_vllm:
        print()
        for conc in args.levels:
            ours = next(r for r in rows if r["conc"] == conc and r["client"] == "bench")
            theirs = next(r for r in rows if r["conc"] == conc and r["client"] == "vllm")
            print(f"conc {conc:5d}: CPU per token bench/vllm = {ours['cpu_s_per_1k_tok'] / theirs['cpu_s_per_1k_tok']:.2f}"
                  f", TTFT p99 error bench {ours['ttft_p99_ms']:.2f} ms vs vllm {theirs['ttft_p99_ms']:.2f} ms")


def _median(runs: list[dict]) -> dict:
    return {k: (float(np.median([r[k] for r in runs])) if isinstance(v, float) else v) for k, v in runs[0].items()}


_HEADER = (f"{'client':6s} {'conc':>5s} {'reqs':>5s} {'fail':>4s} {'client tok/s':>12s} {'server tok/s':>12s} "
           f"{'TTFT err ms mean/p99':>21s} {'ITL err ms mean/p99':>20s} {'send lag ms mean/p99':>21s} "
           f"{'CPU s/1k tok':>12s}")


def _fmt(r: dict) -> str:
    return (f"{r['client']:6s} {r['conc']:5d} {r['n']:5d} {r['failed']:4d} {r['client_tok_s']:12.0f} "
            f"{r['server_tok_s']:12.0f} {r['ttft_mean_ms']:10.2f}/{r['ttft_p99_ms']:<10.2f} "
            f"{r['itl_mean_ms']:9.2f}/{r['itl_p99_ms']:<10.2f} {r['send_lag_mean_ms']:10.2f}/{r['send_lag_p99_ms']:<10.2f} "
            f"{r['cpu_s_per_1k_tok']:12.4f}")


if __name__ == "__main__":
    main()
