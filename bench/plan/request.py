"""One validated request for a run: a sweep (a file, or `bench run`'s single-run options) with
the CLI's overrides applied, and the run's own settings. `bench run`, `bench sweep` and
`bench capacity` each build one and hand it to `bench.run.session.run_request`; `bench plan`
turns one into a plan without running it.

    request = RunRequest.from_file("sweeps/cpu-tiny.yaml", {"concurrency": [1, 2]}, config_id=None)
    request = RunRequest.single_run(model="tiny-llama", concurrency=[1, 4], options={"engine": "vllm"})
    plan = request.plan(hardware, n_devices)
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from bench.catalog.configbase import safe_id
from bench.catalog.engines import get_engine
from bench.errors import ConfigError
from bench.plan.capacity import CapacitySearch, CapacitySettings
from bench.plan.plan import (
    RUN_CONCURRENCY,
    RUN_INPUT_LEN,
    RUN_MIN_REQUESTS,
    RUN_MODEL,
    RUN_OUTPUT_LEN,
    Plan,
    build_plan,
    select_config,
    single_run_sweep,
)
from bench.plan.sweepfile import (
    SweepSpec,
    load_sweep,
    one_line,
    overrides_from_options,
)

NO_SLO = "bench capacity needs --slo (or capacity.slo in the sweep file)"


class RunRequest(BaseModel):
    """What to run and how: the validated sweep and the run's settings. Frozen."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    sweep: SweepSpec  # the file (or single-run options) with every override applied
    hardware_id: str | None = None  # `bench run --hardware`: this machine's catalog id; else the sweep's
    probe_file: Path | None = None  # `bench probe`'s file: measured bandwidth/FLOPS for the roofline
    config_id: str | None = None  # only this engine configuration of the plan
    search: bool = False  # an SLO capacity search (the sweep's `capacity`) instead of the loads
    pack: bool = False  # configurations side by side on disjoint GPUs (docs/packing.md)
    prestart: bool = False  # `--prestart`: the next engine started on spare GPUs (docs/timing.md); or the sweep's key
    resume_dir: Path | None = None  # continue this run folder
    # plan pricing (issue 22, bench.results.estimate): the rental price ($/device-h) the plan is
    # priced at (None: the catalog's), and a budget the plan is trimmed to (bench.plan.budget)
    price_usd_h: float | None = Field(default=None, gt=0)
    budget_usd: float | None = Field(default=None, gt=0)
    budget_h: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _search_has_an_slo(self) -> RunRequest:
        if self.search and self.sweep.capacity is None:
            raise ConfigError(NO_SLO)
        return self

    @classmethod
    def from_file(cls, path: str | Path, overrides: dict[str, Any] | None = None, **settings: Any) -> RunRequest:
        """`bench sweep FILE` / `bench plan FILE`: the file with `overrides` (bench.plan.apply_overrides)."""
        return cls(sweep=load_sweep(path, overrides), **settings)

    @classmethod
    def single_run(cls, model: str | None = None, concurrency: list[int] | tuple[int, ...] | None = None,
                   input_len: int | None = None, output_len: int | None = None,
                   options: dict[str, Any] | None = None, name_prefix: str = "run", **settings: Any) -> RunRequest:
        """`bench run`: one model, one random workload, a few concurrency levels (each a static
        batch for an engine without concurrency loads); `options` as `overrides_from_options`
        takes them. A None argument takes `bench run`'s default."""
        options = {k: v for k, v in (options or {}).items() if v is not None}
        engine = options.get("engine")  # the CLI's own flag, before it is validated into the sweep
        if engine and get_engine(engine).needs_url and not options.get("endpoint_url"):
            raise ConfigError(f"--engine {engine} needs --url URL")
        model = model or RUN_MODEL
        levels = list(concurrency or RUN_CONCURRENCY)
        if engine and "concurrency" not in get_engine(engine).loads:  # each level: one static batch
            options["loads"] = [{"kind": "offline", "batch": levels}]
        options = {"name": f"{name_prefix}-{safe_id(model)}", "min_requests": RUN_MIN_REQUESTS, **options}
        sweep = single_run_sweep(model, levels, input_len or RUN_INPUT_LEN, output_len or RUN_OUTPUT_LEN, options)
        return cls(sweep=sweep, **settings)

    @classmethod
    def capacity(cls, path: str | Path | None, options: dict[str, Any], capacity: dict[str, Any],
                 model: str | None = None, input_len: int | None = None, output_len: int | None = None,
                 hardware_id: str | None = None, **settings: Any) -> RunRequest:
        """`bench capacity [FILE]`: the file's sweep with `options` (and `--hardware`) as its
        overrides, as `bench sweep` applies them; without a file, `bench run`'s single run at
        concurrency 1 (the template of every probe). Then its `capacity:` with the flags in
        `capacity` (None: not given) applied."""
        if path is not None:
            given = {"models": [model] if model else None, "input_len": input_len, "output_len": output_len,
                     "hardware_id": hardware_id}
            base = cls.from_file(path, overrides_from_options({**options, **given}), **settings)
        else:
            base = cls.single_run(model, [1], input_len, output_len, options, name_prefix="capacity",
                                  hardware_id=hardware_id, **settings)
        flags = {k: v for k, v in capacity.items() if v is not None}
        if base.sweep.capacity is None and "slo" not in flags:
            raise ConfigError(NO_SLO)
        current = base.sweep.capacity.model_dump(exclude_unset=True) if base.sweep.capacity else {}
        try:
            merged = CapacitySettings.model_validate({**current, **flags})
        except ValidationError as e:
            first = e.errors()[0]
            raise ConfigError(one_line(f"capacity {'.'.join(map(str, first['loc']))}: {first['msg']}")) from None
        return base.model_copy(update={"sweep": base.sweep.model_copy(update={"capacity": merged}), "search": True})

    @property
    def machine_hardware_id(self) -> str | None:
        """The catalog id of the machine the run is on: `--hardware` of `bench run`, else the
        sweep's `hardware` (None: the detected device's)."""
        return self.hardware_id or self.sweep.hardware

    @property
    def wants_prestart(self) -> bool:
        """`--prestart`, or the sweep's `prestart: true`: start the next configuration's engine on
        spare devices while the current one measures (bench.run.prestart)."""
        return self.prestart or self.sweep.prestart

    @property
    def out_dir(self) -> Path:
        """Where the run folder is made: the sweep's `out` (`--out`), else ./runs."""
        return Path(self.sweep.out or "runs")

    def plan(self, hardware: Any, n_devices: int) -> Plan:
        """The ordered, preflighted plan on `hardware` x `n_devices` (the sweep's own `hardware`
        and `devices` win); one configuration with `config_id`; a search's template point."""
        plan = build_plan(self.sweep, hardware, n_devices)
        if self.config_id:
            plan = select_config(plan, self.config_id)
        if not self.search:
            return plan
        if len(plan.engine_configs) != 1 or not plan.points:
            raise ConfigError(f"a capacity search runs one engine configuration and one workload; the plan has "
                              f"{len(plan.engine_configs)} configuration(s) (narrow it with --model / the file)")
        return plan.model_copy(update={"points": plan.points[:1]})  # the template: workload and configuration

    def capacity_search(self) -> CapacitySearch | None:
        """The capacity search to run (a fresh one per call), or None for the plan's own loads."""
        if not self.search or self.sweep.capacity is None:
            return None
        return CapacitySearch.from_settings(self.sweep.capacity)


def plan_here(request: RunRequest, detect: Callable[[], Any] | None = None) -> tuple[Plan, Any]:
    """(plan, catalog hardware entry) of `request` on this machine's device (`bench plan`):
    the named hardware, else the detected one; the sweep's `devices`, else the detected count,
    as `bench sweep` plans it. `detect` is injectable (default `detect_device`)."""
    from bench.catalog.device import resolve_hardware

    hardware, detected = resolve_hardware(request.machine_hardware_id, detect)
    return request.plan(hardware, detected.count or 1), hardware
