"""A run on this machine, from one request: detect the device, find its catalog entry, freeze
the environment, build the plan, pick the run folder, execute.

    outcome = run_request(RunRequest.from_file("sweeps/cpu-tiny.yaml"), on_event=progress.on_event)
    outcome.run_dir, outcome.result, outcome.exit_code
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from bench.errors import BenchError
from bench.load.client import DEFAULT_STALL_TIMEOUT_S
from bench.results import RunResult
from bench.run.environment import RunEnvironment
from bench.run.events import OnEvent, RunPrepared, ignore
from bench.run.prestart import check_prestart
from bench.run.runner import check_pack, execute, new_run_dir
from bench.run.status import Terminated, exit_code, raise_terminated

if TYPE_CHECKING:
    from bench.plan.adaptive import AdaptiveStop
    from bench.plan.request import RunRequest

PROBE_ENV = "BENCH_PROBE_FILE"


@dataclass(frozen=True)
class RunOutcome:
    """Where a run went and how it ended."""

    run_dir: Path
    result: RunResult

    @property
    def exit_code(self) -> int:
        """The process exit code of its status: complete 0, partial 4, failed 1 (docs/reliability.md)."""
        return exit_code(self.result.status)


def prepare_run(hardware_id: str | None = None, probe_file: str | Path | None = None, *,
                request_timeout_s: float | None = None, stall_timeout_s: float | None = DEFAULT_STALL_TIMEOUT_S,
                client_workers: int | None = None, adaptive: AdaptiveStop | None = None) -> tuple[RunEnvironment, str]:
    """The frozen run environment and a one-line description of the device it found.

    A probe file (`bench probe`, or BENCH_PROBE_FILE) replaces catalog bandwidth and FLOPS.
    The client limits (s) and worker count are the load client's for every point."""
    from bench.catalog.device import resolve_hardware

    hardware, detected = resolve_hardware(hardware_id)
    note = f"device: {detected.name} x{detected.count} -> hardware '{hardware.id}'"
    probe_file = probe_file or os.environ.get(PROBE_ENV)
    probe = None
    if probe_file:
        from bench.telemetry.probe import load_probe

        probe = load_probe(probe_file)
        note += f"; roofline from probe {probe_file}"
    env = RunEnvironment(device=detected, hardware=hardware, probe=probe, request_timeout_s=request_timeout_s,
                         stall_timeout_s=stall_timeout_s, client_workers=client_workers, adaptive=adaptive)
    return env, note


def run_request(request: RunRequest, on_event: OnEvent | None = None) -> RunOutcome:
    """The one entry point of `bench run`, `bench sweep` and `bench capacity`: prepare this
    machine (frozen), plan the request on it, tell `on_event` (RunPrepared), then execute into
    a new run folder (or the one resumed). `--pack` (or `--prestart`) on a CPU host is refused before the plan
    is shown or a folder exists. Raises the library's domain errors; `Interrupted` on Ctrl-C
    or SIGTERM, every measured point kept."""
    emit = on_event or ignore
    sweep = request.sweep
    env, note = prepare_run(request.machine_hardware_id, request.probe_file,
                            request_timeout_s=sweep.request_timeout_s, stall_timeout_s=sweep.stall_timeout_s,
                            client_workers=sweep.client_workers, adaptive=sweep.adaptive_stop)
    if request.pack:
        check_pack(env)
    if request.wants_prestart:
        check_prestart(env, request.pack)
    plan = request.plan(env.hardware, env.n_devices)
    search = request.capacity_search()
    plan, estimate = price(plan, env.hardware, request)  # plan pricing (issue 22)
    emit(RunPrepared(note, plan, env.hardware, search=search is not None))
    return run_plan(plan, request.out_dir, env, emit, resume_dir=request.resume_dir, pack=request.pack,
                    search=search, estimate=estimate, prestart=request.wants_prestart)


def price(plan, hardware, request: RunRequest):
    """(`plan` trimmed to the request's budget, its estimate) from the earlier runs in the
    request's results folder (bench.results.estimate)."""
    from bench.results.estimate import priced_plan, read_history

    return priced_plan(plan, hardware, read_history(Path(request.out_dir)), usd_per_device_h=request.price_usd_h,
                       budget_usd=request.budget_usd, budget_h=request.budget_h)


def run_plan(plan, out_dir: Path, env: RunEnvironment, on_event: OnEvent | None = None,
             resume_dir: Path | None = None, pack: bool = False, search=None, estimate=None,
             prestart: bool = False) -> RunOutcome:
    """Execute `plan` into a new run folder under `out_dir` (or resume `resume_dir`).

    `pack`: configurations on disjoint devices run at the same time (docs/packing.md).
    `prestart`: the next configuration's engine starts on spare devices while the current one
    measures (bench.run.prestart, docs/timing.md)."""
    if pack:  # refused before a run folder exists
        check_pack(env)
    if prestart:
        check_prestart(env, pack)
    run_dir = Path(resume_dir) if resume_dir else new_run_dir(out_dir, plan.name)
    previous = signal.signal(signal.SIGTERM, raise_terminated)  # a terminated job keeps its points too
    try:
        result = execute(plan, run_dir, env, resume=resume_dir is not None, on_event=on_event, pack=pack,
                         search=search, estimate=estimate, prestart=prestart)
    except KeyboardInterrupt as e:
        how = "terminated (SIGTERM)" if isinstance(e, Terminated) else "interrupted"
        raise Interrupted(f"{how}; finished points are kept in {run_dir} (continue with --resume {run_dir})") from None
    finally:
        signal.signal(signal.SIGTERM, previous)
    return RunOutcome(run_dir, result)


class Interrupted(BenchError):
    """Ctrl-C or SIGTERM during a run; everything measured so far is on disk."""

    exit_code = 130
