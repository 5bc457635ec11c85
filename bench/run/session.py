"""Set up a run on this machine: detect the device, find its catalog entry, pick the run folder."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from bench.errors import BenchError
from bench.run.runner import RunEnvironment, check_pack, execute, new_run_dir
from bench.run.status import Terminated, raise_terminated

PROBE_ENV = "BENCH_PROBE_FILE"


def prepare_run(hardware_id: str | None = None, probe_file: str | None = None) -> tuple[RunEnvironment, str]:
    """The run environment and a one-line description of the device it found.

    A probe file (`bench probe`, or BENCH_PROBE_FILE) replaces catalog bandwidth and FLOPS."""
    from dataclasses import asdict

    from bench.catalog.device import resolve_hardware

    hardware, detected = resolve_hardware(hardware_id)
    device = asdict(detected)
    note = f"device: {detected.name} x{detected.count} -> hardware '{hardware.id}'"
    probe_file = probe_file or os.environ.get(PROBE_ENV)
    probe = None
    if probe_file:
        from bench.telemetry.probe import load_probe

        probe = load_probe(probe_file)
        note += f"; roofline from probe {probe_file}"
    return RunEnvironment(device=device, hardware=hardware, probe=probe), note


def run_plan(plan, out_dir: Path, env: RunEnvironment, progress=None, resume_dir: Path | None = None,
             pack: bool = False, search=None):
    """Execute `plan` into a new run folder (or resume one); returns (run_dir, RunResult).

    `pack`: configurations on disjoint devices run at the same time (docs/packing.md)."""
    if pack:  # refused before a run folder exists
        check_pack(env)
    run_dir = Path(resume_dir) if resume_dir else new_run_dir(out_dir, plan.name)
    on_event = progress.on_event if progress is not None else None
    previous = signal.signal(signal.SIGTERM, raise_terminated)  # a terminated job keeps its points too
    try:
        result = execute(plan, run_dir, env, resume=resume_dir is not None, on_event=on_event, pack=pack,
                         search=search)
    except KeyboardInterrupt as e:
        how = "terminated (SIGTERM)" if isinstance(e, Terminated) else "interrupted"
        raise Interrupted(f"{how}; finished points are kept in {run_dir} (continue with --resume {run_dir})") from None
    finally:
        signal.signal(signal.SIGTERM, previous)
        if progress is not None:
            progress.close()
    return run_dir, result


class Interrupted(BenchError):
    """Ctrl-C or SIGTERM during a run; everything measured so far is on disk."""

    exit_code = 130

