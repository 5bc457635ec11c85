"""The shared table at scale: a SYNTHETIC store of 100k runs / 1M load points on local disk,
and the time and peak memory of the store's operations, new path beside today's.

    python3 scripts/bench_costmodel_scale.py --dir /tmp/cmscale                 (full size)
    python3 scripts/bench_costmodel_scale.py --dir /tmp/cmsmoke --runs 2000     (a quick smoke run)

Nothing here is a measurement of hardware: every number in the store is made up, every run
is marked `extra.synthetic: true`. What is real and what is synthetic:
- real: the formats and the code. A store's table is derived from each run's records, so
  each run has them: for every (model, hardware) drawn, one template run is made the way a
  run makes its figures (tests/result_factory.py: closed-loop request records, a power
  series with its energy counter, bench.measure) and verified as the store verifies it. Each
  synthetic run is its template's files (hard links) under a run.json of its own (id, date,
  hardware and that card's roofline), with a MANIFEST.json whose content hash, run id and point-file hashes are computed
  as `bench upload` computes them, and its point files. The operations timed are the library
  calls the CLI makes, the verification of every run the build takes included.
- synthetic: the numbers (a saturating throughput curve per model, under the roofline of the
  slowest card, so that every card allows it), and the shape: 15 catalog models (more runs
  of the popular ones: weight 1/sqrt(rank)), 13 GPU types, M concurrency levels per run (201
  requests a point, more at high concurrency; 4 chunks a request). The runs of one model
  share its template's records and figures; each has the roofline of its own card. Files are
  written straight to disk (no staging, no read-back).

Each operation runs in a child process pinned to `--cores` CPUs (default 2); its time is
measured inside the child (imports included, interpreter start not), its peak memory is the
child's maximum resident set (os.wait4). Operations, in order:
  upload       one more run (new: the run and its point file; old: the run only)
  compare      one model (the most popular) across hardware: its points, $/Mtok for every
               scenario, every series matched at peak throughput (what `bench compare` prints;
               writing the report's plots and pages is left out of both). New: from the point
               files before any build, and again after it (one compacted file per partition).
               Old: every run read (`runs_from_store`), the table built, then the same match.
  build        the table written to the store. New: the first build (verifies every run: its
               request files and power series read, its figures derived again), then a
               rebuild after one more upload (verifies that run, reuses the compacted
               partitions). Old: every run read and verified, the table built and written.
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
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # result_factory: honest synthetic runs

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


def run_shape(i: int, seed: int = 0) -> dict:
    """What synthetic run I is: model, hardware, GPUs, precision, lengths, date; deterministic."""
    rng = random.Random(i * 7919 + seed)
    model, active_b, n_gpus = rng.choices(MODELS, weights=[1 / math.sqrt(r + 1) for r in range(len(MODELS))])[0]
    hw = rng.choice(sorted(HARDWARE))
    day = 1 + i % 365
    created = f"{2025 + day // 366}-{1 + (day - 1) // 31 % 12:02d}-{1 + (day - 1) % 28:02d}T10:00:00Z"
    return {"model": model, "active_b": active_b, "n_gpus": n_gpus, "hardware": hw, "created_utc": created}


TEMPLATE_HARDWARE = "l4"  # the slowest card of HARDWARE: a speed its roofline allows, every card allows


def template_of(store_dir: Path, model: str, active_b: float, n_gpus: int, points_per_run: int) -> Path:
    """The run folder every synthetic run of MODEL copies: made the way a run makes its figures
    (tests/result_factory.py: request records, a power series, bench.measure) on the slowest
    card, and checked the way the store checks them (bench.store.verify); a speed the
    catalog's roofline does not allow is halved until it does. Deterministic in its arguments."""
    from result_factory import make_run

    from bench.errors import StoreError
    from bench.results import read_summary
    from bench.store.verify import verify_run

    rng = random.Random(model)
    fp8 = rng.random() < 0.3
    isl, osl = rng.choice([(128, 128), (1024, 128), (1024, 1024), (8192, 256)])
    speed = 0.9 * (8.0 / active_b) ** 0.5 * (1.3 if fp8 else 1.0)
    for _ in range(12):
        run_dir = make_run(store_dir, name=model, model=model, hardware=TEMPLATE_HARDWARE, n_gpus=n_gpus,
                           quantization="fp8" if fp8 else None, speed=speed, isl=isl, osl=osl,
                           concurrencies=tuple(2**k for k in range(points_per_run)), board_w=60.0,
                           tokens_per_chunk=max(osl // 4, 1))
        try:
            verify_run(read_summary(run_dir), lambda rel, d=run_dir: (d / rel).read_bytes()
                       if (d / rel).is_file() else None, str(run_dir))
            return run_dir
        except StoreError:
            shutil.rmtree(run_dir)
            speed /= 2
    raise SystemExit(f"no plausible speed for {model}")


def _template(args) -> tuple[str, Path]:
    templates, model, active_b, n_gpus, points_per_run = args
    return model, template_of(templates, model, active_b, n_gpus, points_per_run)


def on_hardware(run, hardware_id: str):
    """RUN (a template, or its verified copy) as if measured on HARDWARE_ID: the same records,
    its roofline computed again for that card (bench.measure.point's, as the run computes it)."""
    from bench.catalog import get_hardware, get_model
    from bench.measure.point import _roofline
    from bench.store.recompute import engine_namespace

    cfg = {**run.config, "hardware_id": hardware_id}
    model, hardware = get_model(cfg["model"]), get_hardware(hardware_id)
    points = [p.model_copy(update={"roofline": _roofline(engine_namespace(cfg), p, model, hardware, cfg["n_gpus"],
                                                         p.metrics, None)}) if p.status == "ok" else p
              for p in run.points]
    return run.model_copy(update={"config": cfg, "points": points})


def _write_run(args: tuple[Path, int, Path]) -> None:
    """One synthetic published run, as an upload leaves it: its template's files (hard links)
    under a run.json of its own (id, date, hardware), MANIFEST.json with the point files'
    hashes, the point files made from the verified copy."""
    from bench.store.manifest import content_digest
    from bench.store.points import manifest_entries, run_point_files
    from bench.store.publish import MANIFEST_VERSION, manifest_bytes, sha256_hex

    store, i, template = args
    shape = run_shape(i)
    own = {"run_id": f"syn-{i:06d}-0", "created_utc": shape["created_utc"], "finished_utc": shape["created_utc"]}
    run = on_hardware(_template_run(template), shape["hardware"]).model_copy(update=own)
    blob = (json.dumps(run.model_dump(mode="json"), indent=2, sort_keys=True) + "\n").encode()
    files = {p.relative_to(template).as_posix(): p for p in sorted(template.rglob("*")) if p.is_file()}
    hashes = _hashes(template)
    entries = [{"path": "run.json", "size": len(blob), "sha256": sha256_hex(blob)}] + [
        {"path": rel, "size": path.stat().st_size, "sha256": hashes[rel]} for rel, path in files.items()
        if rel != "run.json"]
    entries.sort(key=lambda e: e["path"])
    digest = content_digest(entries)
    cfg = run.config
    run_id = f"{shape['created_utc'][:10].replace('-', '')}-{cfg['model']}-{cfg['hardware_id']}-{digest[:12]}"
    run_dir = store / "runs" / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "run.json").write_bytes(blob)
    for rel, path in files.items():
        if rel != "run.json":
            (run_dir / rel).parent.mkdir(parents=True, exist_ok=True)
            os.link(path, run_dir / rel)
    # what an upload makes point files from: the verified copy (the template's, on this card)
    point_files = run_point_files(run_id, on_hardware(_verified(template), shape["hardware"]).model_copy(update=own))
    manifest = {"manifest_version": MANIFEST_VERSION, "run_id": run_id, "content_sha256": digest,
                "source_run_id": run.run_id, "schema_version": 2, "created_utc": run.created_utc,
                "status": "complete", "harness_version": "0.1.0", "model": cfg["model"], "models": [cfg["model"]],
                "hardware": cfg["hardware_id"], "n_gpus": cfg["n_gpus"], "engine": "vllm",
                "n_points": len(run.points), "n_valid_points": sum(p.valid for p in run.points),
                "files": entries, "point_files": manifest_entries(point_files)}
    (run_dir / "MANIFEST.json").write_bytes(manifest_bytes(manifest))
    for rel, point_blob in point_files.items():
        (store / rel).parent.mkdir(parents=True, exist_ok=True)
        (store / rel).write_bytes(point_blob)


_HASHES: dict[Path, dict[str, str]] = {}
_VERIFIED: dict[Path, object] = {}
_RUNS: dict[Path, object] = {}


def _template_run(template: Path):
    from bench.results import read_summary

    if template not in _RUNS:
        _RUNS[template] = read_summary(template)
    return _RUNS[template]


def _verified(template: Path):
    from bench.results import read_summary
    from bench.store.verify import verify_run

    if template not in _VERIFIED:
        _VERIFIED[template] = verify_run(read_summary(template), lambda rel: (template / rel).read_bytes()
                                         if (template / rel).is_file() else None, str(template))
    return _VERIFIED[template]


def _hashes(template: Path) -> dict[str, str]:
    from bench.store.publish import sha256_hex

    if template not in _HASHES:
        _HASHES[template] = {p.relative_to(template).as_posix(): sha256_hex(p.read_bytes())
                             for p in template.rglob("*") if p.is_file()}
    return _HASHES[template]


def generate(store: Path, n_runs: int, points_per_run: int, jobs: int) -> float:
    from multiprocessing import Pool

    t0 = time.perf_counter()
    shapes = [run_shape(i) for i in range(n_runs)]
    keys = sorted({(s["model"], s["active_b"], s["n_gpus"]) for s in shapes})
    templates_dir = store.parent / "templates"
    shutil.rmtree(templates_dir, ignore_errors=True)
    with Pool(jobs) as pool:
        templates = dict(pool.imap_unordered(_template, [(templates_dir, *k, points_per_run) for k in keys]))
        print(f"  {len(templates)} template runs made and verified ({time.perf_counter() - t0:.0f} s)", flush=True)
        work = [(store, i, templates[s["model"]]) for i, s in enumerate(shapes)]
        for k, _ in enumerate(pool.imap_unordered(_write_run, work, chunksize=64)):
            if k % 10000 == 0:
                print(f"  generated {k}/{n_runs} runs ({time.perf_counter() - t0:.0f} s)", flush=True)
    return time.perf_counter() - t0


def upload_folder(root: Path, seed: int, points_per_run: int) -> Path:
    """A run folder to upload: a template run of its own (records, power series), verified."""
    from bench.results import read_summary, write_summary

    shape = run_shape(0, seed=seed)
    run_dir = template_of(root / f"seed{seed}", shape["model"], shape["active_b"], shape["n_gpus"], points_per_run)
    run = on_hardware(read_summary(run_dir), shape["hardware"])
    write_summary(run_dir, run.model_copy(update={"run_id": f"upload-{seed}"}))  # its own content and id
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

    proc = subprocess.Popen(cmd, preexec_fn=limits)
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
