"""The static-batch point loop shared by the batch engines (offline vLLM, transformers).

A load point's level (concurrency C, or offline batch N) becomes the static batch size;
the point's requests run as ceil(n_requests / batch) full batches after
ceil(n_warmup / batch) warm-up batches. Every sequence of a batch is in flight at once, so
the target concurrency is reached by construction. The engine generates each batch
(`generate_batch`) and returns plain per-sequence outputs; this module turns them into
RequestRecords and the window facts the runner wants.

Window = the first measured batch's submit to the end of the last measured batch
(perf_counter seconds); span = the first measured submit to the last measured token.
"""

from __future__ import annotations

import math
import time
from typing import Any

from bench.engines.base import BatchEngine, BatchOutput, BatchRequest
from bench.errors import ConfigError
from bench.load.records import RequestRecord
from bench.load.types import Prompt, Workload
from bench.plan.points import ConcurrencyLoad, OfflineLoad, parse_load


def static_batches(point) -> tuple[int, int, int]:
    """(batch size, warm-up batches, measured batches) of a point run as static batches."""
    load = parse_load(point.load)
    batch = load.concurrency if isinstance(load, ConcurrencyLoad) else load.batch if isinstance(load, OfflineLoad) else 0
    if batch < 1:
        raise ConfigError(f"point {point.point_id}: static-batch engines run concurrency or offline loads, "
                          f"not {load.kind!r}")
    return batch, math.ceil(point.n_warmup / batch), math.ceil(point.n_requests / batch)


def batch_facts(records: list[RequestRecord], batch: int, window_t0_s: float, window_t1_s: float) -> dict[str, Any]:
    """The facts dict the runner wants from a static-batch point (perf_counter seconds)."""
    measured = [r for r in records if r.phase == "measured"]
    ends = [r.t_last if r.t_last is not None else r.t_send for r in measured]
    return {
        "window_t0_s": window_t0_s, "window_t1_s": window_t1_s,
        "span_t0_s": min(r.t_send for r in measured), "span_t1_s": max([*ends, window_t1_s]),
        "max_in_flight": batch, "target_concurrency": batch, "target_reached": True,
        "target_rate_rps": None, "achieved_rate_rps": None,
    }


def records_from_batch(prompts: list[Prompt], output: BatchOutput, id0: int, phase: str) -> list[RequestRecord]:
    """One RequestRecord per prompt of a finished batch (a failed batch fails each request)."""
    records = []
    for i, p in enumerate(prompts):
        r = RequestRecord(request_id=id0 + i, phase=phase, n_in_expected=p.n_in_expected,
                          n_out_expected=p.n_out_expected, t_send=output.t_send, token_source="token_ids")
        records.append(r)
        if output.error is not None:
            r.error = output.error
            continue
        seq = output.sequences[i]
        r.n_in, r.n_out, r.t_first, r.t_last = seq.n_in, seq.n_out, seq.t_first, seq.t_last
        r.chunk_t, r.chunk_tokens = list(seq.chunk_t), list(seq.chunk_tokens)
        r.error = seq.error
        if r.error is None and r.n_out < p.n_out_expected:
            r.error = f"returned {r.n_out} tokens, asked for {p.n_out_expected}"
    return records


def run_static_point(engine: BatchEngine, point, workload: Workload,
                     clock=time.perf_counter) -> tuple[list[RequestRecord], dict[str, Any]]:
    """Records (warm-up + measured) and facts of one point; times are perf_counter seconds."""
    batch, n_warm, n_batches = static_batches(point)
    prompts = workload.prompts((n_warm + n_batches) * batch)
    t0 = clock()
    records: list[RequestRecord] = []
    window_t0_s = window_t1_s = None
    for b in range(n_warm + n_batches):
        phase = "warmup" if b < n_warm else "measured"
        chunk = prompts[b * batch:(b + 1) * batch]
        output = engine.generate_batch([BatchRequest(p.n_out_expected, p.token_ids, p.text) for p in chunk])
        records += records_from_batch(chunk, output, len(records), phase)
        if phase == "measured":
            window_t0_s = output.t_send if window_t0_s is None else window_t0_s
            window_t1_s = output.t_done
    if window_t0_s is None or window_t1_s is None:  # n_requests >= 1 makes at least one measured batch
        raise ConfigError(f"point {point.point_id}: no measured batch")
    failed = sum(1 for r in records if not r.ok)
    engine.note(f"point {point.point_id}: {n_warm} warm-up + {n_batches} batches of {batch}, "
                f"window {window_t1_s - window_t0_s:.3f} s, total {clock() - t0:.3f} s, {failed} failed")
    return records, batch_facts(records, batch, window_t0_s, window_t1_s)
