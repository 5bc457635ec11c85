"""Synthetic run folders for tests: valid `bench.results` output (the current schema
version, typed groups) with made-up numbers.

Nothing here is a measurement. Every run is marked `extra.synthetic: true`; never copy
these folders under results/. The numbers follow a simple, self-consistent model so that
tests can reason about them: per-user speed falls with concurrency, throughput rises and
saturates, power rises with load.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd

from bench.catalog.dtypes import precision_label
from bench.load.records import RequestRecord
from bench.measure.groups import CostFigures, Energy, Metrics, Roofline
from bench.results import Harness, PointResult, RunResult, write_requests, write_summary

BOARD_POWER_W = {"h100-sxm": 700.0, "h200-sxm": 700.0, "b200": 1000.0, "mi300x": 750.0, "l4": 72.0}
RENTAL_USD_PER_GPU_HOUR = 2.0


def point_numbers(concurrency: int, speed: float, n_gpus: int, isl: int, osl: int, hardware: str) -> dict:
    """The synthetic metrics, energy, cost and roofline groups of one concurrency level."""
    per_user = 100.0 * speed / (1.0 + (concurrency - 1) / 6.0)  # output tok/s seen by one user
    output_tok_s = concurrency * per_user
    total_tok_s = output_tok_s * (isl + osl) / osl
    tpot = 1.0 / per_user
    ttft = 0.05 * (1.0 + concurrency / 8.0) / speed
    board = BOARD_POWER_W.get(hardware, 300.0)
    idle_w = 0.1 * board * n_gpus
    avg_w = idle_w + 0.8 * board * n_gpus * min(1.0, concurrency / 16.0)
    usd_per_hour = RENTAL_USD_PER_GPU_HOUR * n_gpus
    metrics = {
        "output_tok_s": output_tok_s,
        "input_tok_s": total_tok_s - output_tok_s,
        "total_tok_s": total_tok_s,
        "request_s": output_tok_s / osl,
        "tok_s_per_gpu": total_tok_s / n_gpus,
        "interactivity_tok_s_user": per_user,
        "error_rate": 0.0,
        "goodput_output_tok_s": output_tok_s,
    }
    for q, f in (("p50", 1.0), ("p90", 1.3), ("p99", 1.6)):
        metrics[f"ttft_s_{q}"] = ttft * f
        metrics[f"tpot_s_{q}"] = tpot * f
    energy = {
        "energy_j": avg_w * 60.0,
        "avg_power_w": avg_w,
        "idle_power_w": idle_w,
        "j_per_output_token": avg_w / output_tok_s,
        "j_per_token": avg_w / total_tok_s,
        "energy_method": "nvml_counter",
        "measured": True,
        "energy_valid": True,
        "n_devices": n_gpus,
        "devices": list(range(n_gpus)),
    }
    scenario = {"scenario": "synthetic-rental", "kind": "rental", "usd_per_gpu_hour": RENTAL_USD_PER_GPU_HOUR,
                "utilization": 1.0,
                "usd_per_mtok_output": usd_per_hour / (output_tok_s * 3600 / 1e6),
                "usd_per_mtok_input": usd_per_hour / ((total_tok_s - output_tok_s) * 3600 / 1e6),
                "usd_per_mtok_total": usd_per_hour / (total_tok_s * 3600 / 1e6)}
    cost = {"synthetic-rental": scenario}  # as the runner stores it: {scenario name: figures}
    roofline = {"roofline_efficiency": min(0.9, 0.05 * concurrency)}
    return {"metrics": Metrics(**metrics), "energy": Energy(**energy),
            "cost": {name: CostFigures(**figures) for name, figures in cost.items()},
            "roofline": Roofline(**roofline)}


def _records(n: int, numbers: dict, isl: int, osl: int) -> list[RequestRecord]:
    m = numbers["metrics"]
    out = []
    for i in range(n):
        t_send = 0.5 * i
        t_first = t_send + m["ttft_s_p50"]
        chunk_t = [t_first + k * m["tpot_s_p50"] for k in range(osl)]
        out.append(RequestRecord(
            request_id=i, phase="measured", n_in_expected=isl, n_out_expected=osl, t_send=t_send,
            t_first=t_first, t_last=chunk_t[-1], n_in=isl, n_out=osl, chunk_t=chunk_t,
            chunk_tokens=[1] * osl,
        ))
    return out


def make_run(
    root: Path,
    *,
    hardware: str = "h100-sxm",
    model: str = "tiny-llama",
    n_gpus: int = 1,
    dtype: str = "bfloat16",
    quantization: str | None = None,
    kv_cache_dtype: str = "auto",
    engine: str = "vllm",
    concurrencies: tuple[int, ...] = (1, 2, 4, 8, 16),
    speed: float = 1.0,
    isl: int = 128,
    osl: int = 32,
    status: str = "complete",
    created_utc: str = "2026-01-15T10:00:00Z",
    invalid: dict[int, str] | None = None,
    failed: tuple[int, ...] = (),
    with_power: bool = True,
    engine_args: dict | None = None,
    name: str | None = None,
) -> Path:
    """Write one synthetic run folder under ROOT and return it.

    `speed` scales per-user speed and throughput; `invalid` maps a concurrency to the reason
    its point is invalid; `failed` lists concurrencies whose points failed.
    """
    invalid = invalid or {}
    precision = precision_label(dtype, quantization, kv_cache_dtype)
    engine_config = {
        "model": model, "weights": "dummy", "engine": engine, "dtype": dtype, "quantization": quantization,
        "kv_cache_dtype": kv_cache_dtype, "tensor_parallel_size": n_gpus,
        "extra_args": engine_args or {"max_num_seqs": 256}, "n_gpus": n_gpus, "precision": precision,
    }
    config_id = f"{model}-" + hashlib.sha1(repr((dtype, quantization, kv_cache_dtype, engine, n_gpus)).encode()).hexdigest()[:8]
    run_id = name or f"syn-{model}-{hardware}-{dtype}-{quantization or 'none'}-{engine}-x{speed:g}"
    run_dir = Path(root) / run_id
    points = []
    for c in concurrencies:
        pid = f"c{c:04d}"
        load = {"kind": "concurrency", "concurrency": c}
        workload = {"kind": "random", "input_len": isl, "output_len": osl}
        if c in failed:
            points.append(PointResult(point_id=pid, engine_config_id=config_id, load=load, workload=workload, status="failed",
                                      error="engine died", valid=False, invalid_reasons=["failed"]))
            continue
        numbers = point_numbers(c, speed, n_gpus, isl, osl, hardware)
        rel = write_requests(run_dir, pid, _records(4, numbers, isl, osl))
        points.append(PointResult(
            point_id=pid, engine_config_id=config_id, load=load, workload=workload, n_requests=4,
            window={"t0_s": 0.0, "t1_s": 60.0, "window_s": 60.0, "span_s": 62.0},
            valid=c not in invalid, invalid_reasons=[invalid[c]] if c in invalid else [],
            requests_file=rel, **numbers,
        ))
    if with_power:
        rows = [{"t_s": 0.5 * k, "device": d, "power_w": 100.0 + 5.0 * k + 10.0 * d}
                for k in range(40) for d in range(n_gpus)]
        pd.DataFrame(rows).to_parquet(run_dir / "power.parquet", index=False)
    (run_dir / "engine.log").write_text("INFO vllm started\nINFO synthetic fixture, not a measurement\n")
    result = RunResult(
        run_id=run_id, status=status, created_utc=created_utc,
        finished_utc=None if status == "running" else created_utc,
        harness=Harness(version="0.1.0", git_sha="0" * 40, git_dirty=False),
        config={
            "hardware_id": hardware, "engine_configs": {config_id: engine_config},
            **{k: engine_config[k] for k in ("model", "weights", "engine", "dtype", "quantization",
                                             "kv_cache_dtype", "n_gpus", "precision")},
            "engine_args": engine_config["extra_args"],
        },
        provenance={"engine_version": "0.0.0-synthetic", "device_name": f"synthetic {hardware}",
                    "driver_version": "0.0", "host": "fixture-host"},
        points=points,
        extra={"synthetic": True, "note": "test fixture from tests/result_factory.py, not a measurement"},
    )
    write_summary(run_dir, result)
    return run_dir


def republish(run_dir: Path, blob: bytes) -> Path:
    """Replace the run.json of a run published in a local store, keeping the store entry
    consistent as a careful writer would (file hash, content hash, and the run id and
    folder that follow it). Returns the run's new folder."""
    import json

    from bench.store.manifest import content_digest

    (run_dir / "run.json").write_bytes(blob)
    manifest = json.loads((run_dir / "MANIFEST.json").read_text())
    manifest["schema_version"] = json.loads(blob).get("schema_version")
    for entry in manifest["files"]:
        if entry["path"] == "run.json":
            entry.update(size=len(blob), sha256=hashlib.sha256(blob).hexdigest())
    manifest["content_sha256"] = content_digest(manifest["files"])
    manifest["run_id"] = run_dir.name[:-12] + manifest["content_sha256"][:12]
    (run_dir / "MANIFEST.json").write_text(json.dumps(manifest))
    return run_dir.rename(run_dir.with_name(manifest["run_id"]))



def upload_at_once(run_dirs: list, url: str, timeout_s: float = 120.0) -> tuple[list, list]:
    """Upload each run dir from its own thread, all released together: (Uploaded results, errors)."""
    import threading

    from bench.store import upload

    results, errors = [], []
    barrier = threading.Barrier(len(run_dirs))

    def work(run_dir):
        barrier.wait()
        try:
            results.append(upload([run_dir], url)[0])
        except Exception as e:  # noqa: BLE001 - any error in a writer thread fails the caller's test
            errors.append(e)

    threads = [threading.Thread(target=work, args=(r,)) for r in run_dirs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=timeout_s)
    return results, errors
