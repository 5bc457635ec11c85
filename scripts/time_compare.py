"""Seconds of `compare_report` on synthetic runs (tests/result_factory.py), imports excluded.

Usage: PYTHONPATH=.:tests python3 scripts/time_compare.py [REPEATS]
Prints the import time once, then the wall and CPU seconds of each compare_report call (three
synthetic runs, two hardware kinds, every cost scenario, published reference figures). On a shared box compare CPU seconds: wall time
counts the other processes' share of the cores.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

t0 = time.perf_counter()
import matplotlib.figure  # noqa: E402,F401  (first-use imports timed apart from the rendering)
import plotly.graph_objects  # noqa: E402,F401
from result_factory import make_run  # noqa: E402

from bench.analysis.pareto import Operating  # noqa: E402
from bench.analysis.report import compare_report  # noqa: E402
from bench.store.costmodel import build_table, runs_from_dirs  # noqa: E402

print(f"imports: {time.perf_counter() - t0:.2f} s")
with tempfile.TemporaryDirectory() as tmp:
    root = Path(tmp) / "results"
    make_run(root / "h100", hardware="h100-sxm", speed=1.0, invalid={16: "client saturation: 6.1 in flight of 16"})
    make_run(root / "h100", hardware="h100-sxm", speed=1.6, quantization="fp8")
    make_run(root / "b200", hardware="b200", speed=2.5)
    runs = runs_from_dirs([root])
    table = build_table(runs)
    for i in range(int(sys.argv[1]) if len(sys.argv) > 1 else 3):
        t, cpu = time.perf_counter(), time.process_time()
        compare_report(table, runs, "tiny-llama", Path(tmp) / f"out{i}", Operating(), "h100-sxm", reference=True)
        print(f"compare_report: {time.perf_counter() - t:.2f} s wall, {time.process_time() - cpu:.2f} s CPU")
