"""Synthetic run folders for tests: valid `bench.results` output (the current schema
version, typed groups) made the way a run makes it, from made-up request records.

Nothing here is a measurement. Every run is marked `extra.synthetic: true`; never copy
these folders under results/. The records follow a simple model so that tests can reason
about them: per-user speed falls with concurrency, throughput rises and saturates, power
rises with load. Each point's figures are computed from its records and power series by
the run's own code (bench.load.merge, bench.measure.point.point_groups,
bench.telemetry.energy), so a store derives them again exactly: the run is honest.
`forge` and its helpers below make the dishonest ones (tests/test_store_trust.py).
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import json
from pathlib import Path
from types import SimpleNamespace

import pandas as pd

from bench.catalog.dtypes import precision_label
from bench.load.records import RequestRecord
from bench.results import Harness, RunResult, write_summary
from bench.results.schema import PARQUET_WRITE_OPTIONS

BOARD_POWER_W = {"h100-sxm": 700.0, "h200-sxm": 700.0, "b200": 1000.0, "mi300x": 750.0, "l4": 72.0}
RENTAL_USD_PER_GPU_HOUR = 2.0
N_REQUESTS = 201  # N - 1 a multiple of 100: the p50/p90/p99 of the latency spread are exact knots
T0_S = 100.0  # perf_counter seconds of the first send
# Latency spread: the quantile function of each point's TTFT and TPOT, relative to the median.
SPREAD = ((0.0, 0.8), (0.5, 1.0), (0.9, 1.3), (0.99, 1.6), (1.0, 1.7))


def _synthetic_rental():
    from bench.measure.cost import make_scenario

    return make_scenario(name="synthetic-rental", kind="rental", rental_usd_per_gpu_hour=RENTAL_USD_PER_GPU_HOUR)


def point_numbers(concurrency: int, speed: float, n_gpus: int, isl: int, osl: int, hardware: str,
                  board_w: float | None = None) -> dict:
    """The model of one concurrency level: median TTFT and TPOT (s), power (W, all GPUs)."""
    per_user = 100.0 * speed / (1.0 + (concurrency - 1) / 6.0)  # output tok/s seen by one user (1 / median tpot)
    board = BOARD_POWER_W.get(hardware, 300.0) if board_w is None else board_w
    idle_w = 0.1 * board * n_gpus
    return {"tpot_s": 1.0 / per_user, "ttft_s": 0.05 * (1.0 + concurrency / 8.0) / speed, "idle_power_w": idle_w,
            "avg_power_w": idle_w + 0.8 * board * n_gpus * min(1.0, concurrency / 16.0)}


def _spread(q: float) -> float:
    for (q0, f0), (q1, f1) in itertools.pairwise(SPREAD):
        if q <= q1:
            return f0 + (f1 - f0) * (q - q0) / (q1 - q0)
    return SPREAD[-1][1]


def requests_for(concurrency: int) -> int:
    """Requests of a point: N_REQUESTS, or more (N - 1 still a multiple of 100) so that at least
    100 finish inside the window whatever the concurrency."""
    return max(N_REQUESTS, 100 * -(-(concurrency + 150) // 100) + 1)


def point_records(concurrency: int, numbers: dict, isl: int, osl: int, t0_s: float,
                  n: int | None = None, tokens_per_chunk: int = 1) -> list[RequestRecord]:
    """A closed loop of CONCURRENCY streams from T0_S: each request is sent when its stream's
    previous one ends; request i's TTFT and TPOT are the medians x the spread at its rank.
    Chunks carry TOKENS_PER_CHUNK tokens each (the last one the rest)."""
    n = n or requests_for(concurrency)
    sizes = [tokens_per_chunk] * (osl // tokens_per_chunk) + ([osl % tokens_per_chunk] if osl % tokens_per_chunk else [])
    offsets = list(itertools.accumulate([0] + sizes[1:]))  # tokens before each chunk's last one, after the first
    streams = [(t0_s + 1e-3 * s, s) for s in range(concurrency)]
    heapq.heapify(streams)
    out = []
    for i in range(n):
        q = ((i * 37) % n) / (n - 1)  # each request its own rank, spread over the streams
        t_send, s = heapq.heappop(streams)
        t_first, tpot = t_send + numbers["ttft_s"] * _spread(q), numbers["tpot_s"] * _spread(q)
        chunk_t = [t_first + k * tpot for k in offsets]
        out.append(RequestRecord(request_id=i, phase="measured", n_in_expected=isl, n_out_expected=osl,
                                 t_send=t_send, t_first=t_first, t_last=chunk_t[-1], t_done=chunk_t[-1], n_in=isl,
                                 n_out=osl, chunk_t=chunk_t, chunk_tokens=list(sizes)))
        heapq.heappush(streams, (chunk_t[-1], s))
    return out


def power_rows(segments: list[tuple[float, float, float]], n_gpus: int, config_id: str) -> list[dict]:
    """power.parquet rows: every 0.25 s (coarser for a run of hours: 20,000 samples at most), per
    device, the power of the segment (t0, t1, W all GPUs) the sample falls in, and the energy
    counter that integrates it (J, from 1000)."""
    start, end = segments[0][0] - 2.0, segments[-1][1] + 2.0
    step = max(0.25, (end - start) / 20_000)
    rows, energy, t_prev, k = [], [1000.0] * n_gpus, None, 0
    while start + step * k <= end:
        t = start + step * k
        watts = next((w for a, b, w in segments if a - 1.0 <= t <= b + 1.0), segments[0][2] * 0.2) / n_gpus
        for d in range(n_gpus):
            if t_prev is not None:
                energy[d] += watts * (t - t_prev)
            rows.append({"config_id": config_id, "t_s": t, "device": f"gpu{d}", "power_w": watts,
                         "energy_j": energy[d]})
        t_prev, k = t, k + 1
    return rows


def measured_point(point, records: list[RequestRecord], power: list[dict], numbers: dict, n_gpus: int, cfg,
                   model, hardware):
    """The point's groups as bench.run.measure_point makes them: window facts from the records
    (bench.load.merge), energy of the window from the power series (bench.telemetry.energy, as
    TelemetrySession.energy_between), then bench.measure.point.point_groups."""
    from bench.load.merge import merge_point
    from bench.measure.point import point_groups
    from bench.telemetry.energy import measured_energy

    pr = merge_point(records, point.load, None, [])
    labels = [f"gpu{d}" for d in range(n_gpus)]
    snapshot = [tuple(list(c) for c in zip(*[(r["t_s"], r["energy_j"], r["power_w"]) for r in power
                                              if r["device"] == label])) for label in labels]
    meter = SimpleNamespace(method="nvml_counter", has_counter=True, devices=labels, counter_range_j=[None] * n_gpus)
    energy = measured_energy(meter, snapshot, pr.window_t0_s, pr.window_t1_s)
    energy = energy.on_devices(range(n_gpus)).net_of(numbers["idle_power_w"])
    counts = pr.client_token_counts()
    return point_groups(point, cfg, pr, n_gpus=n_gpus, energy=energy,
                         server_delta={k: float(v) for k, v in counts.items()},
                         client_tokens_in_counter_interval=counts, model=model, hardware=hardware)


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
    partial: tuple[int, ...] = (),
    with_power: bool = True,
    board_w: float | None = None,
    tokens_per_chunk: int = 1,
    engine_args: dict | None = None,
    name: str | None = None,
) -> Path:
    """Write one synthetic run folder under ROOT and return it.

    `speed` scales per-user speed and throughput; `invalid` maps a concurrency to a reason the
    run found its point invalid by (beside whatever the point's own figures give); `failed`
    lists concurrencies whose points failed before any request, `partial` those whose engine
    died with half their requests finished (kept, as bench.run.runner keeps them).
    `with_power=False`: no power series, energy the catalog's nominal estimate; `board_w`
    replaces the board power (W per GPU) the power model scales with; `tokens_per_chunk`:
    tokens each streamed chunk carries (a long output in fewer chunks).
    """
    from bench.catalog import get_hardware, get_model
    from bench.errors import ConfigError
    from bench.measure.cost import cost_for_point
    from bench.plan.points import ConcurrencyLoad, RandomWorkload
    from bench.results.point import failed_point, point_result

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
    try:
        spec = get_model(model)
    except ConfigError:
        spec = None
    try:
        hw = get_hardware(hardware)
    except ConfigError:
        hw = None
    cfg = SimpleNamespace(dtype=dtype, quantization=quantization, kv_cache_dtype=kv_cache_dtype, data_parallel_size=1)
    planned, segments, t = [], [], T0_S
    for c in concurrencies:
        numbers = point_numbers(c, speed, n_gpus, isl, osl, hardware, board_w)
        spec_point = SimpleNamespace(point_id=f"c{c:04d}", engine_config_id=config_id, slo=None,
                                     load=ConcurrencyLoad(concurrency=c),
                                     workload=RandomWorkload(input_len=isl, output_len=osl))
        records = [] if c in failed else point_records(c, numbers, isl, osl, t, tokens_per_chunk=tokens_per_chunk)
        if records:
            segments.append((t, max(r.t_last for r in records), numbers["avg_power_w"]))
            t = segments[-1][1] + 5.0
        planned.append((c, spec_point, records, numbers))
    power = power_rows(segments, n_gpus, config_id) if with_power and segments else []
    points = []
    for c, sp, records, numbers in planned:
        if c in failed:
            points.append(failed_point(sp, "failed", "engine died"))
            points[-1].finished_utc = points[-1].started_utc = None
            continue
        if c in partial:  # the engine died half way: what finished is kept with the failed point
            kept = records[: len(records) // 2]
            pr = failed_point(sp, "failed", "engine died: synthetic")
            pr.finished_utc = None
            pr.n_requests, pr.n_failed = len(kept), 0
            pr.requests_file = _write_requests(run_dir, sp.point_id, kept)
            points.append(pr)
            continue
        if not power:
            numbers = {**numbers, "avg_power_w": None}
        groups = (measured_point(sp, records, power, numbers, n_gpus, cfg, spec, hw) if power
                  else _nominal_point(sp, records, n_gpus, cfg, spec, hw))
        # beside the catalog's scenarios: one that any hardware has, for reports to show
        groups.cost["synthetic-rental"] = cost_for_point(groups.metrics, groups.energy, _synthetic_rental(), n_gpus)
        pr = point_result(sp, groups)
        pr.finished_utc = None
        if c in invalid:
            pr.valid, pr.invalid_reasons = False, [invalid[c], *pr.invalid_reasons]
        pr.requests_file = _write_requests(run_dir, sp.point_id, records)
        points.append(pr)
    run_dir.mkdir(parents=True, exist_ok=True)
    if power:
        pd.DataFrame(power).to_parquet(run_dir / "power.parquet", index=False, **PARQUET_WRITE_OPTIONS)
    (run_dir / "engine.log").write_text("INFO vllm started\nINFO synthetic fixture, not a measurement\n")
    telemetry = ({"energy_method": "nvml_counter", "measured": True, "devices": [f"gpu{d}" for d in range(n_gpus)],
                  "meter": {"method": "nvml_counter"}} if power else
                 {"energy_method": "nominal", "measured": False, "meter": {"method": "nominal"}})
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
                    "driver_version": "0.0", "host": {"hostname": "fixture-host"}},
        points=points,
        extra={"synthetic": True, "note": "test fixture from tests/result_factory.py, not a measurement",
               "telemetry": {config_id: telemetry}},
    )
    write_summary(run_dir, result)
    return run_dir


def _write_requests(run_dir: Path, point_id: str, records: list[RequestRecord]) -> str:
    """bench.results.write_requests's file, its rows made without `asdict`'s deep copies (10x faster)."""
    from dataclasses import fields

    from bench.results import REQUESTS_DIR

    names = [f.name for f in fields(RequestRecord)]
    rows = [{**{k: getattr(r, k) for k in names}, "ttft_s": r.ttft_s, "e2e_s": r.e2e_s, "tpot_s": r.tpot_s}
            for r in records]
    path = Path(run_dir) / REQUESTS_DIR / f"{point_id}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(path, index=False, **PARQUET_WRITE_OPTIONS)  # as bench writes it: page checksums
    return f"{REQUESTS_DIR}/{point_id}.parquet"


def _nominal_point(point, records, n_gpus, cfg, model, hardware):
    """As `measured_point`, energy the nominal meter's: the catalog's board power x the window."""
    from bench.load.merge import merge_point
    from bench.measure.point import point_groups
    from bench.telemetry.types import WindowEnergy

    pr = merge_point(records, point.load, None, [])
    energy = None
    if hardware is not None:
        window_s = pr.window_t1_s - pr.window_t0_s
        energy = WindowEnergy.of("nominal", False, window_s, [hardware.power_w * window_s] * n_gpus, None, [], 0)
    counts = pr.client_token_counts()
    return point_groups(point, cfg, pr, n_gpus=n_gpus, energy=energy,
                         server_delta={k: float(v) for k, v in counts.items()},
                         client_tokens_in_counter_interval=counts, model=model, hardware=hardware)


def republish(run_dir: Path, blob: bytes) -> Path:
    """Replace the run.json of a run published in a local store, keeping the store entry
    consistent as a careful writer would (file hash, content hash, and the run id and
    folder that follow it; the point files of the old content removed, the next build
    writes the new one's). Returns the run's new folder."""
    from bench.store.manifest import content_digest

    (run_dir / "run.json").write_bytes(blob)
    for old in (run_dir.parent.parent / "costmodel" / "points").rglob(f"{run_dir.name}.parquet"):
        old.unlink()
    manifest = json.loads((run_dir / "MANIFEST.json").read_text())
    manifest["point_files"] = []
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


# ---- dishonest runs and store files, as a hostile writer makes them (tests/test_store_trust.py)

def edit_run(run_dir: Path, change) -> Path:
    """run.json edited as plain JSON by CHANGE(data): what a hand-made file can hold (NaN,
    Infinity, a string where a count goes) and the typed writer would never write."""
    path = Path(run_dir) / "run.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data, indent=2))
    return Path(run_dir)


def each_point(data: dict, group: str, key: str, value) -> None:
    """Set `points[*].<group>.<key>` (or `points[*].<key>` when GROUP is empty) of ok points to VALUE."""
    for p in data["points"]:
        if p.get("status") == "ok":
            (p[group] if group else p)[key] = value


def plant(run_dir: Path, store_root: Path, run_id: str | None = None) -> str:
    """Publish RUN_DIR into the local store at STORE_ROOT as a hostile writer would: every file
    as it is, and a MANIFEST.json that checks out (sizes, sha256, content hash, run id), with
    none of `bench upload`'s checks. Returns the run id."""
    from bench.store.manifest import content_digest

    run_dir = Path(run_dir)
    files = {p.relative_to(run_dir).as_posix(): p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}
    entries = [{"path": rel, "size": len(b), "sha256": hashlib.sha256(b).hexdigest()} for rel, b in files.items()]
    digest = content_digest(entries)
    data = json.loads(files["run.json"])
    run_id = run_id or f"20260115-forged-{digest[:12]}"
    manifest = {"manifest_version": 1, "run_id": run_id, "content_sha256": digest, "source_run_id": data["run_id"],
                "schema_version": data["schema_version"], "created_utc": data["created_utc"],
                "status": data["status"], "harness_version": "0.1.0", "model": data["config"].get("model"),
                "models": [data["config"].get("model")], "hardware": data["config"].get("hardware_id"),
                "n_gpus": None, "engine": "vllm", "n_points": len(data["points"]), "n_valid_points": 0,
                "files": entries}
    target = Path(store_root) / "runs" / run_id
    for rel, blob in files.items():
        (target / rel).parent.mkdir(parents=True, exist_ok=True)
        (target / rel).write_bytes(blob)
    (target / "MANIFEST.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return run_id


def point_file_of(store_root: Path, run_id: str) -> Path:
    """The one point file of RUN_ID in a local store."""
    [path] = (Path(store_root) / "costmodel" / "points").rglob(f"{run_id}.parquet")
    return path


def rewrite_points(src: Path, dest: Path, run_id: str | None = None, throughput_x: float = 1.0) -> Path:
    """DEST: the point rows of SRC with another run id and/or every throughput x THROUGHPUT_X
    (a forged point file: a ghost with no run behind it, or an honest run's, tampered)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = pq.read_table(src)
    if run_id is not None:
        table = table.set_column(table.column_names.index("run_id"), "run_id", pa.array([run_id] * table.num_rows))
    for name in ("output_tok_s", "input_tok_s", "total_tok_s", "tok_s_per_gpu", "output_tok_s_per_gpu"):
        i = table.column_names.index(name)
        table = table.set_column(i, name, pc.multiply(table[name], throughput_x))
    dest.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, dest)
    return dest
