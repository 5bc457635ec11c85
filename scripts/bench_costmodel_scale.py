"""The shared table at scale: a SYNTHETIC store of 100k runs / 1M load points on local disk,
and the time and peak memory of the store's operations, new path beside today's.

    python3 scripts/bench_costmodel_scale.py --dir /tmp/cmscale                 (full size)
    python3 scripts/bench_costmodel_scale.py --dir /tmp/cmsmoke --runs 2000     (a quick smoke run)

Nothing here is a measurement of hardware: every number in the store is made up, every run
is marked `extra.synthetic: true`. What is real and what is synthetic:
- real: the formats and the code. Each run is a schema-2 run.json read by the real parser,
  with a MANIFEST.json whose content hash and run id are computed as `bench upload` does;
  its point file is made by the writer `bench upload` uses (`run_point_files`) from that
  parsed run.json. The operations timed are the library calls the CLI makes.
- synthetic: the numbers (a saturating throughput curve per hardware and model, 5% of points
  invalid), and the shape: 15 catalog models (more runs of the popular ones: weight
  1/sqrt(rank)), 13 GPU types, M concurrency levels per run. Files are written straight to
  disk (no staging, no read-back) to keep generation to minutes on 2 cores.
- left out: the per-request Parquet files of the generated runs (points have no
  `requests_file`), so the old path's figures are a lower bound: on a real store it also reads
  and checks one request file per point. The two runs uploaded do have request files.

Each operation runs in a child process pinned to `--cores` CPUs (default 2); its time is
measured inside the child (imports included, interpreter start not), its peak memory is the
child's maximum resident set (os.wait4). Operations, in order:
  upload       one more run (new: the run and its point file; old: the run only)
  compare      one model (the most popular) across hardware: its points, $/Mtok for every
               scenario, every series matched at peak throughput (what `bench compare` prints;
               writing the report's plots and pages is left out of both). New: from the point
               files before any build, and again after it (one compacted file per partition).
               Old: every run read (`runs_from_store`), the table built, then the same match.
  build        the table written to the store. New: the first build (reads every point file),
               then a rebuild after one more upload (reuses the compacted partitions). Old:
               every run read and checked, the table built and written.
The old path's table cost is the vectorised one of this version; today's per-point cost
(5 scenarios x ~12 us) would add about 60 us per point on top.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

MODELS = [  # (catalog key, active parameters in billions, GPUs per engine)
    ("llama-3.1-8b", 8, 1), ("qwen3-8b", 8, 1), ("llama-3.1-70b", 70, 4), ("qwen2.5-7b", 7, 1),
    ("gpt-oss-20b", 3.6, 1), ("qwen3-30b-a3b", 3.3, 1), ("llama-3.3-70b", 70, 4), ("mixtral-8x7b", 13, 2),
    ("gpt-oss-120b", 5.1, 2), ("qwen2.5-72b", 72, 4), ("deepseek-v2-lite", 2.4, 1), ("qwen3-235b-a22b", 22, 8),
    ("deepseek-v3", 37, 8), ("deepseek-r1", 37, 8), ("llama-2-70b", 70, 4),
]
HARDWARE = {  # id: (speed relative to an H100 SXM, board power W)
    "h100-sxm": (1.0, 700), "h200-sxm": (1.2, 700), "b200": (2.1, 1000), "gb200": (2.3, 1200),
    "a100-80g-sxm": (0.55, 400), "h100-pcie": (0.8, 350), "l4": (0.12, 72), "l40s": (0.35, 350),
    "mi300x": (1.1, 750), "mi325x": (1.25, 1000), "mi355x": (1.9, 1400), "rtx-4090": (0.3, 450),
    "rtx-5090": (0.45, 575),
}
NOTE = "bench_costmodel_scale.py: synthetic store, not a measurement"


def synthetic_run(i: int, points_per_run: int, seed: int = 0) -> dict:
    """run.json (as a dict) of synthetic run I: deterministic in (i, seed)."""
    rng = random.Random(i * 7919 + seed)
    model, active_b, n_gpus = rng.choices(MODELS, weights=[1 / math.sqrt(r + 1) for r in range(len(MODELS))])[0]
    hw = rng.choice(sorted(HARDWARE))
    speed, board_w = HARDWARE[hw]
    fp8 = rng.random() < 0.3
    precision, quant = ("fp8", "fp8") if fp8 else ("bf16", None)
    isl, osl = rng.choice([(128, 128), (1024, 128), (1024, 1024), (8192, 256)])
    base = 90.0 * speed * (8.0 / active_b) ** 0.5 * (1.3 if fp8 else 1.0) * rng.uniform(0.9, 1.1)
    cid = f"{model}-{precision}-tp{n_gpus}"
    points = []
    for k in range(points_per_run):
        c = 2 ** k
        per_user = base / (1.0 + (c - 1) / 12.0)
        out_s = c * per_user * n_gpus
        total_s = out_s * (isl + osl) / osl
        avg_w = n_gpus * board_w * (0.15 + 0.8 * min(1.0, c / 64))
        invalid = rng.random() < 0.05
        points.append({
            "point_id": f"c{c:05d}", "engine_config_id": cid, "load": {"kind": "concurrency", "concurrency": c},
            "workload": {"kind": "random", "input_len": isl, "output_len": osl}, "status": "ok",
            "n_requests": max(16, 2 * c), "window": {"t0_s": 0.0, "t1_s": 60.0, "window_s": 60.0, "span_s": 62.0},
            "metrics": {"output_tok_s": out_s, "input_tok_s": total_s - out_s, "total_tok_s": total_s,
                        "tok_s_per_gpu": total_s / n_gpus, "interactivity_tok_s_user": per_user, "error_rate": 0.0,
                        "ttft_s_p50": 0.02 * (1 + c / 16) * isl / 1024 / speed, "ttft_s_p99": 0.05 * (1 + c / 8) / speed,
                        "tpot_s_p50": 1 / per_user, "tpot_s_p99": 1.4 / per_user},
            "energy": {"avg_power_w": avg_w, "idle_power_w": 0.1 * board_w * n_gpus, "energy_j": avg_w * 60,
                       "j_per_token": avg_w / total_s, "j_per_output_token": avg_w / out_s,
                       "energy_method": "nvml_counter", "measured": True, "n_devices": n_gpus},
            "roofline": {"roofline_efficiency": min(0.9, 0.02 * c)},
            "valid": not invalid, "invalid_reasons": ["client saturation"] if invalid else [],
        })
    day = 1 + i % 365
    created = f"{2025 + day // 366}-{1 + (day - 1) // 31 % 12:02d}-{1 + (day - 1) % 28:02d}T10:00:00Z"
    engine_config = {"model": model, "weights": "dummy", "engine": "vllm", "dtype": "bfloat16",
                     "quantization": quant, "kv_cache_dtype": "auto", "tensor_parallel_size": n_gpus,
                     "n_gpus": n_gpus, "precision": precision}
    return {"schema_version": 2, "run_id": f"syn-{i:06d}-{seed}", "status": "complete", "created_utc": created,
            "finished_utc": created, "harness": {"version": "0.1.0", "git_sha": "0" * 40},
            "config": {"hardware_id": hw, **engine_config, "engine_configs": {cid: engine_config}},
            "provenance": {"engine_version": "0.0.0-synthetic", "device_name": f"synthetic {hw}",
                           "driver_version": "0.0", "host": "synthetic"},
            "points": points, "extra": {"synthetic": True, "note": NOTE}}


def _write_run(args: tuple[Path, int, int]) -> None:
    """One synthetic published run, as an upload leaves it: run.json, MANIFEST.json, point file."""
    from bench.results import parse_summary
    from bench.store.manifest import content_digest
    from bench.store.points import run_point_files
    from bench.store.publish import MANIFEST_VERSION, manifest_bytes, sha256_hex

    store, i, points_per_run = args
    data = synthetic_run(i, points_per_run)
    blob = (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()
    entries = [{"path": "run.json", "size": len(blob), "sha256": sha256_hex(blob)}]
    digest = content_digest(entries)
    cfg = data["config"]
    run_id = f"{data['created_utc'][:10].replace('-', '')}-{cfg['model']}-{cfg['hardware_id']}-{digest[:12]}"
    manifest = {"manifest_version": MANIFEST_VERSION, "run_id": run_id, "content_sha256": digest,
                "source_run_id": data["run_id"], "schema_version": 2, "created_utc": data["created_utc"],
                "status": "complete", "harness_version": "0.1.0", "model": cfg["model"], "models": [cfg["model"]],
                "hardware": cfg["hardware_id"], "n_gpus": cfg["n_gpus"], "engine": "vllm",
                "n_points": len(data["points"]), "n_valid_points": sum(p["valid"] for p in data["points"]),
                "files": entries}
    run_dir = store / "runs" / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "run.json").write_bytes(blob)
    (run_dir / "MANIFEST.json").write_bytes(manifest_bytes(manifest))
    for rel, point_blob in run_point_files(run_id, parse_summary(data)).items():
        (store / rel).parent.mkdir(parents=True, exist_ok=True)
        (store / rel).write_bytes(point_blob)


def generate(store: Path, n_runs: int, points_per_run: int, jobs: int) -> float:
    from multiprocessing import Pool

    t0 = time.perf_counter()
    with Pool(jobs) as pool:
        for k, _ in enumerate(pool.imap_unordered(_write_run, [(store, i, points_per_run) for i in range(n_runs)],
                                                  chunksize=64)):
            if k % 10000 == 0:
                print(f"  generated {k}/{n_runs} runs ({time.perf_counter() - t0:.0f} s)", flush=True)
    return time.perf_counter() - t0


def upload_folder(root: Path, seed: int, points_per_run: int) -> Path:
    """A run folder to upload, with request files (16 requests per point)."""
    from bench.load.records import RequestRecord
    from bench.results import parse_summary, write_requests, write_summary

    data = synthetic_run(0, points_per_run, seed=seed)
    run_dir = root / data["run_id"]
    for p in data["points"]:
        p["n_requests"], m = 16, p["metrics"]
        isl, osl = p["workload"]["input_len"], p["workload"]["output_len"]
        recs = [RequestRecord(request_id=r, phase="measured", n_in_expected=isl, n_out_expected=osl, t_send=0.1 * r,
                              t_first=0.1 * r + m["ttft_s_p50"], t_last=0.1 * r + m["ttft_s_p50"] + osl * m["tpot_s_p50"],
                              n_in=isl, n_out=osl, chunk_t=[0.1 * r + m["ttft_s_p50"]], chunk_tokens=[osl])
                for r in range(16)]
        p["requests_file"] = write_requests(run_dir, p["point_id"], recs)
    write_summary(run_dir, parse_summary(data))
    return run_dir


def child(op: str, store: Path, out: Path, extra: Path | None) -> None:
    """One operation, timed here; what it did goes to OUT as JSON."""
    t0 = time.perf_counter()
    url, model, info = str(store), MODELS[0][0], {}
    if op in ("upload_new", "upload_old"):
        from bench.store import Store, upload

        if op == "upload_old":  # today's upload: the run only, no point file
            Store._with_points = lambda self, run, done: done
        info["status"] = upload([extra], url)[0].status
    elif op == "compare_new":
        from bench.analysis.pareto import Operating, compare_table
        from bench.store.query import compare_points

        read = compare_points(url, model)
        points, t1 = read.table, time.perf_counter()
        table = compare_table(points[points["valid"].fillna(False)], model, Operating())
        info = {"series": len(table), "points": len(points), "files": len(read.files), "points_s": t1 - t0,
                "match_s": time.perf_counter() - t1}
    elif op == "compare_old":
        from bench.analysis.pareto import Operating, compare_table
        from bench.store.costmodel import build_table, runs_from_store

        runs = runs_from_store(url, skipped=[])
        points, t1 = build_table(runs), time.perf_counter()
        table = compare_table(points, model, Operating())
        info = {"series": len(table), "runs": len(runs), "points_s": t1 - t0, "match_s": time.perf_counter() - t1}
    elif op in ("build_new", "build_old"):
        from bench.store.costmodel import (
            build,
            build_table,
            runs_from_store,
            table_bytes,
        )

        if op == "build_new":
            done = build(url)
            info = {"rows": len(done.table), "files": done.point_files, "backfilled": done.backfilled}
        else:
            from bench.store import Store

            table = build_table(runs_from_store(url, skipped=[]))
            for ext, blob in table_bytes(table).items():
                Store(url).put_bytes(f"costmodel/old-costmodel.{ext}", blob)
            info = {"rows": len(table)}
    out.write_text(json.dumps({"s": time.perf_counter() - t0, **info}))


def measure(op: str, args, extra: Path | None = None) -> dict:
    """Run OP in a child pinned to the cores; its own time, its peak RSS (MB)."""
    out = Path(args.dir) / f"result-{op}.json"
    out.unlink(missing_ok=True)
    cmd = [sys.executable, __file__, "--child", op, "--dir", args.dir] + (["--extra", str(extra)] if extra else [])
    cores = sorted(os.sched_getaffinity(0))[: args.cores]
    cap = int(args.old_mem_gb * 2**30) if op.endswith("_old") else None

    def limits():
        os.sched_setaffinity(0, cores)
        if cap:  # address space: today's path holds every run in memory; fail rather than swap or OOM the box
            resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    proc = subprocess.Popen(cmd, preexec_fn=limits)  # noqa: PLW1509 - this process runs no threads
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0 or not out.is_file():
        print(f"  {op}: failed (exit {os.waitstatus_to_exitcode(status)}; peak {usage.ru_maxrss / 1024:.0f} MB)", flush=True)
        return {"s": math.nan, "mb": usage.ru_maxrss / 1024, "error": f"exit {os.waitstatus_to_exitcode(status)}"}
    result = json.loads(out.read_text())
    result["mb"] = usage.ru_maxrss / 1024  # Linux: KiB
    details = json.dumps({k: v for k, v in result.items() if k not in ("s", "mb")})
    print(f"  {op}: {result['s']:.2f} s, {result['mb']:.0f} MB  {details}", flush=True)
    return result


def _cell(result: dict) -> str:
    return f"failed ({result['error']})" if "error" in result else f"{result['s']:.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", required=True, help="Working folder: the store goes in DIR/store (replaced).")
    ap.add_argument("--runs", type=int, default=100_000)
    ap.add_argument("--points-per-run", type=int, default=10)
    ap.add_argument("--cores", type=int, default=2, help="CPUs each operation may use.")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 2, help="Processes generating the store.")
    ap.add_argument("--skip-old", action="store_true", help="Leave out today's path (it reads every run).")
    ap.add_argument("--old-mem-gb", type=float, default=10.0,
                    help="Address-space cap of today's path's operations (they hold every run in memory).")
    ap.add_argument("--reuse", action="store_true",
                    help="Keep DIR/base, the generated store, when it has these sizes (each run starts from a copy).")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--extra", help=argparse.SUPPRESS)
    args = ap.parse_args()
    store = Path(args.dir) / "store"
    if args.child:
        out = Path(args.dir) / f"result-{args.child}.json"
        return child(args.child, store, out, Path(args.extra) if args.extra else None)
    base, marker = Path(args.dir) / "base", Path(args.dir) / "base.json"
    sizes = {"runs": args.runs, "points_per_run": args.points_per_run}
    if args.reuse and marker.is_file() and json.loads(marker.read_text())["sizes"] == sizes:
        gen_s = json.loads(marker.read_text())["generated_s"]
    else:
        shutil.rmtree(base, ignore_errors=True)
        marker.unlink(missing_ok=True)
        print(f"SYNTHETIC store: {args.runs} runs x {args.points_per_run} points in {base}", flush=True)
        gen_s = generate(base, args.runs, args.points_per_run, args.jobs)
        marker.write_text(json.dumps({"sizes": sizes, "generated_s": gen_s}))
    shutil.rmtree(store, ignore_errors=True)
    shutil.rmtree(Path(args.dir) / "uploads", ignore_errors=True)
    # hard links: the operations add and replace files (staging, then a rename), never write into one
    subprocess.run(["cp", "-al", str(base), str(store)], check=True)
    up = Path(args.dir) / "uploads"
    folders = [upload_folder(up, seed, args.points_per_run) for seed in (1, 2, 3)]
    r = {"upload_new": measure("upload_new", args, folders[0]), "compare_cold": measure("compare_new", args),
         "build_new": measure("build_new", args), "compare_new": measure("compare_new", args)}
    r["rebuild_new"] = measure("upload_new", args, folders[2]) and measure("build_new", args)
    if not args.skip_old:
        r |= {"upload_old": measure("upload_old", args, folders[1]), "compare_old": measure("compare_old", args),
              "build_old": measure("build_old", args)}
    none = {"s": math.nan, "mb": math.nan}
    rows = [("upload one more run", "upload_new", "upload_old"),
            ("compare one model across hardware, before any build", "compare_cold", "compare_old"),
            ("compare one model across hardware, after a build", "compare_new", "compare_old"),
            ("full build (first: every point file read)", "build_new", "build_old"),
            ("rebuild after one more upload", "rebuild_new", "build_old")]
    n_points = args.runs * args.points_per_run
    print(f"\nSYNTHETIC store, {args.runs} runs / {n_points} points, generated in {gen_s:.0f} s; "
          f"each operation on {args.cores} cores; compare: {MODELS[0][0]} "
          f"({r['compare_new'].get('points', '?')} points, {r['compare_new'].get('series', '?')} series)\n")
    print("| operation | new: s | new: peak MB | old pandas path: s | old: peak MB |\n|---|---:|---:|---:|---:|")
    for label, new, old in rows:
        a, b = r[new], r.get(old, none)
        print(f"| {label} | {_cell(a)} | {a['mb']:.0f} | {_cell(b)} | {b['mb']:.0f} |")
        if new.startswith("compare"):
            for part, what in (("points_s", "points read, $/Mtok added"),
                               ("match_s", "series matched (bench.analysis.pareto, the same code on both paths)")):
                print(f"| - of which {what} | {a.get(part, math.nan):.2f} | | {b.get(part, math.nan):.2f} | |")


if __name__ == "__main__":
    main()
