"""What `--prestart` saves: a 3-configuration sweep on a fake GPU host, run without and with it.

Each configuration's engine is the fake SGLang server (bench.testing.fake_sglang), a real child
process that answers /health `--start-s` seconds after it starts (plus its interpreter's start),
on a fake NVIDIA host of `--devices` devices (fake NVML); each configuration runs `--points`
points of about `--point-s` seconds (concurrency 1, 100 output tokens at the fake's 10 ms TTFT
and 2 ms per token). Both sweeps run the same plan through `bench.run.runner.execute`, one
after the other, in fresh run folders under a temporary directory.

Printed for each: wall time, measured-window time, duty cycle (windows / wall), engine starts
on the critical path (`timing.start_s`) and `prestart_hidden_s` (start time hidden behind the
previous configuration's measurement), from the run's own `timing` (run.json).

    python3 scripts/bench_prestart.py                      # S = 5 s, P = 3 s, 2 points, 2 devices
    python3 scripts/bench_prestart.py --start-s 20 --point-s 10
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

REQUEST_S = 0.01 + 0.002 * 99  # the fake's TTFT + 99 inter-token gaps, 100 output tokens


def make_plan(n_configs: int, n_points: int, point_s: float):
    from bench.plan import EngineConfig, Plan, PointSpec

    configs = [EngineConfig(model="tiny-llama", engine="sglang", max_num_seqs=4 * (i + 1)) for i in range(n_configs)]
    n_requests = max(2, round(point_s / REQUEST_S))
    points = [PointSpec(point_id=f"{c.config_id()}_w{i}_c1_r0", engine_config_id=c.config_id(),
                        workload={"kind": "random", "input_len": 16, "output_len": 100},
                        load={"kind": "concurrency", "concurrency": 1}, n_warmup=1, n_requests=n_requests)
              for c in configs for i in range(n_points)]
    return Plan(engine_configs=configs, points=points, name="prestart-bench", n_devices=2, telemetry="nvml")


def run_once(plan, out: Path, cache: Path, n_devices: int, prestart: bool):
    from bench.run.environment import RunEnvironment
    from bench.run.runner import execute
    from bench.telemetry.fake_nvml import FakeNvmlTelemetry
    from bench.testing.fake_device import fake_device

    env = RunEnvironment(device=fake_device("nvidia", n_devices), hardware=None, cache_dir=cache,
                         telemetry_factory=FakeNvmlTelemetry([100.0] * n_devices), idle_baseline_s=0.2,
                         startup_timeout_s=300.0)
    t0 = time.perf_counter()
    result = execute(plan, out, env, prestart=prestart)
    wall_s = time.perf_counter() - t0
    bad = [p.error for p in result.points if p.status != "ok"]
    if bad:
        raise SystemExit(f"a point failed: {bad[0]}")
    return wall_s, result.timing


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--start-s", type=float, default=5.0, help="fake engine start, s (S)")
    ap.add_argument("--point-s", type=float, default=3.0, help="about this long per point, s (P)")
    ap.add_argument("--points", type=int, default=2, help="points per configuration")
    ap.add_argument("--configs", type=int, default=3)
    ap.add_argument("--devices", type=int, default=2)
    ap.add_argument("--keep", type=Path, default=None,
                    help="keep both run folders under this folder (for `bench report`), instead of a temporary one")
    args = ap.parse_args(argv)

    from bench.engines.sglang_server import SglangServer

    SglangServer.server_module = "bench.testing.fake_sglang"  # the fake, launched as SGLang is
    os.environ["BENCH_FAKE_SGLANG_STARTUP_S"] = str(args.start_s)
    plan = make_plan(args.configs, args.points, args.point_s)
    print(f"{args.configs} configurations x {args.points} points, S = {args.start_s:g} s, P ~ {args.point_s:g} s, "
          f"{args.devices} fake devices; load average {os.getloadavg()[0]:.1f}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-prestart-") as scratch:
        tmp = args.keep or scratch
        for prestart in (False, True):
            wall_s, t = run_once(plan, Path(tmp) / ("with" if prestart else "without"), Path(tmp) / "models",
                                 args.devices, prestart)
            rows.append(("--prestart" if prestart else "sequential", wall_s, t))
    print(f"{'':<12} {'wall s':>8} {'windows s':>10} {'duty':>6} {'starts s':>9} {'hidden s':>9}")
    for name, wall_s, t in rows:
        print(f"{name:<12} {wall_s:>8.1f} {t.window_s:>10.1f} {t.duty_cycle:>6.1%} {t.start_s:>9.1f} "
              f"{t.prestart_hidden_s:>9.1f}")
    saved = rows[0][1] - rows[1][1]
    print(f"saved {saved:.1f} s of {rows[0][1]:.1f} s ({saved / rows[0][1]:.0%}); load average {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
