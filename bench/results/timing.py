"""Where a run's time went (issue 22): each engine start and its phases, each point's warm-up,
window and drain, and the run's wall time, measured-window time, duty cycle and dollars.

    pt = point_timing(point_run, reset_s=0.01, wall_s=12.3)   # -> PointTiming (run.json points[].timing)
    rt = run_timing(point_timings, wall_s=..., hardware=hw, ...)  # -> RunTiming (run.json timing)

`duty_cycle = window_s / wall_s`: the share of the rented time in which a measurement window
was open. The run's dollars are its wall hours x the box's devices x the hardware's
on-demand rental price (`rental_usd_per_gpu_hour`), the scenario a user renting by the hour
pays; None when the catalog has no rental price for the hardware.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from bench.load.types import PointRun

StopReason = Literal["max_requests", "converged"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PointTiming(_Strict):
    """One point's time, in seconds, on the client's perf_counter clock."""

    reset_s: float | None = Field(default=None, description="Prefix-cache reset before the warm-up (s); None: none.")
    warmup_s: float | None = Field(default=None, description="First warm-up send to last warm-up completion (s).")
    ramp_s: float | None = Field(default=None, description="First measured send to the window's start (s).")
    window_s: float | None = Field(default=None, description="The measurement window (s).")
    drain_s: float | None = Field(default=None, description="Window's end to the last measured completion (s).")
    wall_s: float | None = Field(default=None, description="The whole point as the run saw it, counters and "
                                 "writes included (s).")
    stop_reason: StopReason | None = Field(default=None, description="Why the point stopped: max_requests (its "
                                           "planned count) or converged (adaptive stop, docs/timing.md).")
    n_planned: int | None = Field(default=None, description="Measured requests planned (the maximum of an adaptive point).")


class EngineStart(_Strict):
    """One engine start: its wall time measured by bench and the phases its log names (s)."""

    config_id: str = Field(description="The engine configuration started.")
    start_s: float = Field(description="Launch to healthy, measured by bench (s).")
    phases: dict[str, float] = Field(default_factory=dict, description="Phases the engine logged (s), "
                                     "e.g. weights_s, compile_s, graph_capture_s, kv_profile_s.")
    compile_cache: Literal["hit", "miss"] | None = Field(default=None, description="torch.compile artifacts "
                                                         "loaded from the cache (hit) or compiled (miss).")
    prepare_s: float | None = Field(default=None, description="Wait for the model folder prepared ahead (s); "
                                    "None: none was prepared ahead.")
    # --prestart (bench.run.prestart): started on spare devices while the previous configuration measured
    prestart_during: str | None = Field(default=None, description="The configuration that measured while this "
                                        "engine started (--prestart); None: started on its own.")
    hidden_s: float | None = Field(default=None, description="Of start_s, the part before the run needed the "
                                   "engine (the previous configuration still measuring): off the critical path (s).")


class PlanCheck(_Strict):
    """The plan's estimate beside what the run took (bench plan pricing)."""

    estimate_s: float = Field(description="Estimated wall time of the plan (s).")
    actual_s: float = Field(description="Measured wall time (s).")
    error: float = Field(description="(estimate - actual) / actual.")
    basis: str = Field(description="What the estimate was built from.")


class RunTiming(_Strict):
    """run.json `timing`: where the run's wall time went."""

    wall_s: float = Field(description="The run's wall time, every process of it (resumes add up) (s).")
    window_s: float = Field(description="Sum of the points' measurement windows (s).")
    duty_cycle: float | None = Field(default=None, description="window_s / wall_s.")
    start_s: float = Field(default=0.0, description="Engine starts on the run's critical path: the sum of the "
                           "starts' start_s less prestart_hidden_s (s).")
    prestart_hidden_s: float = Field(default=0.0, description="Engine-start time hidden behind the previous "
                                     "configuration's measurement (--prestart) (s); 0: none.")
    warmup_s: float = Field(default=0.0, description="Sum of the points' warm-ups (s).")
    drain_s: float = Field(default=0.0, description="Sum of the points' ramps and drains (s).")
    other_s: float = Field(default=0.0, description="wall_s less starts, warm-ups, windows, ramps and drains (s).")
    n_devices: int = Field(default=1, description="Devices of the box the run held (rented).")
    rental_usd_per_gpu_hour: float | None = Field(default=None, description="The hardware's on-demand price.")
    usd: float | None = Field(default=None, description="wall_s / 3600 x n_devices x rental_usd_per_gpu_hour.")
    engine_starts: list[EngineStart] = Field(default_factory=list, description="Every engine start, restarts included.")
    plan_check: PlanCheck | None = Field(default=None, description="The plan's estimate vs this run.")


def point_timing(run: PointRun, *, reset_s: float | None, wall_s: float | None,
                 stop_reason: StopReason | None = None, n_planned: int | None = None) -> PointTiming:
    """One point's timing from the driver's records and window (s)."""
    warm = [r for r in run.records if r.phase == "warmup"]
    warm_done = [r.t_last for r in warm if r.t_last is not None]
    warmup_s = (max(warm_done) - min(r.t_send for r in warm)) if warm and warm_done else (0.0 if not warm else None)
    has_window = run.window_t1_s > run.window_t0_s
    return PointTiming(
        reset_s=reset_s, warmup_s=warmup_s,
        ramp_s=max(0.0, run.window_t0_s - run.span_t0_s) if has_window else None,
        window_s=run.window_t1_s - run.window_t0_s if has_window else 0.0,
        drain_s=max(0.0, run.span_t1_s - run.window_t1_s) if has_window else None,
        wall_s=wall_s, stop_reason=stop_reason, n_planned=n_planned,
    )


def run_timing(timed: list[PointTiming], *, wall_s: float, hardware: Any, n_devices: int,
               engine_starts: list[EngineStart], previous: RunTiming | None = None) -> RunTiming:
    """The run's timing: `wall_s` of this process (added to a resumed run's `previous`), the
    windows, warm-ups and drains of its points' `timed`, its engine starts and its dollars."""
    window_s = sum(t.window_s or 0.0 for t in timed)
    warmup_s = sum(t.warmup_s or 0.0 for t in timed)
    drain_s = sum((t.ramp_s or 0.0) + (t.drain_s or 0.0) for t in timed)
    starts = [*(previous.engine_starts if previous else []), *engine_starts]
    hidden_s = sum(s.hidden_s or 0.0 for s in starts)  # counted once: inside the previous configuration's time
    start_s = sum(s.start_s for s in starts) - hidden_s
    wall_s += previous.wall_s if previous else 0.0
    price = getattr(getattr(getattr(hardware, "prices", None), "rental_usd_per_gpu_hour", None), "value", None)
    return RunTiming(
        wall_s=wall_s, window_s=window_s, duty_cycle=window_s / wall_s if wall_s > 0 else None,
        start_s=start_s, prestart_hidden_s=hidden_s, warmup_s=warmup_s, drain_s=drain_s,
        other_s=max(0.0, wall_s - start_s - warmup_s - window_s - drain_s),
        n_devices=n_devices, rental_usd_per_gpu_hour=price,
        usd=wall_s / 3600 * n_devices * price if price is not None else None,
        engine_starts=starts, plan_check=previous.plan_check if previous else None,
    )
