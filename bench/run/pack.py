"""`bench sweep --pack`: independent engine configurations at the same time on disjoint
devices of one box (docs/packing.md).

Configurations are placed in waves: each wave holds configurations whose device sets do not
overlap; a wave's configurations run concurrently, each in its own spawned process (its
own engine, load client and telemetry session: one asyncio loop cannot drive several
engines honestly; forkserver, else spawn). Workers never write run.json: they send every finished point over a
multiprocessing queue and the parent, the single writer, appends it and writes at once, so
a crash of any worker leaves every point already sent on disk and no two writers race.

A packed point can be distorted by its neighbours (host CPU, PCIe, power envelope). With
`reference=True` the first configuration's first point runs alone first; the same point run
packed must agree with it within `PACK_TOLERANCE` or it is marked invalid.
"""

from __future__ import annotations

import queue as queue_mod
from dataclasses import replace
from typing import Any

from bench.errors import ConfigError, one_line
from bench.run.engine_session import RunContext, run_engine_session
from bench.run.events import EngineStarting, PointDone

# Relative tolerance between a packed point and the same point alone. 5 % is above the
# repeat-to-repeat spread of a steady-state window on an idle box (~1-3 % for throughput and
# TPOT p50 on GPUs) and below the distortions packing causes when it matters (a starved
# load-client core or a shared power cap moves throughput by 10 % or more).
PACK_TOLERANCE = 0.05
PACK_COMPARED = (
    ("metrics", "output_tok_s", "output tok/s"),
    ("metrics", "tpot_s_p50", "TPOT p50"),
    ("energy", "j_per_output_token", "J/output token"),
)


def pack_waves(configs, visible: list[int] | None, devices: dict[str, list[int] | None]) -> list[list[tuple[Any, list[int]]]]:
    """Configurations grouped into waves of disjoint device sets, in plan order.

    A configuration with explicit `gpus` keeps them (it joins the first wave they are free
    in); the others take the lowest free devices of the first wave with room."""
    from bench.run.devices import devices_for

    if visible is None:
        raise ConfigError("--pack needs GPUs: on a CPU host every configuration shares the same cores")
    waves: list[tuple[set[int], list]] = []
    for cfg in configs:
        explicit = cfg.gpus
        pinned = devices[cfg.config_id()]  # a configuration's explicit gpus are its devices
        for used, members in waves:
            if explicit:
                fits = pinned is not None and not (set(pinned) & used)
                chosen = pinned if fits else None
            else:
                try:
                    chosen = devices_for(cfg, visible, exclude=used)
                except ConfigError:
                    chosen = None
            if chosen is not None:
                used.update(chosen)
                members.append((cfg, chosen))
                break
        else:
            chosen = devices[cfg.config_id()] or devices_for(cfg, visible)
            waves.append((set(chosen), [(cfg, chosen)]))
    return [members for _, members in waves]


def packed_disagreement(packed, solo, tolerance: float = PACK_TOLERANCE) -> list[str]:
    """Reasons a packed point disagrees with the same point run alone (empty: they agree).

    Compares output tok/s, TPOT p50 and J/output token (when both have it) by relative gap."""
    reasons = []
    for group, key, label in PACK_COMPARED:
        a, b = _value(packed, group, key), _value(solo, group, key)
        if a is None or b is None or b == 0:
            continue
        gap = abs(a - b) / abs(b)
        if gap > tolerance:
            reasons.append(f"packed point disagrees with the same config alone: {label} {a:.4g} vs {b:.4g} "
                           f"({gap:.1%} > {tolerance:.0%})")
    return reasons


def _value(point, group: str, key: str):
    """point.<group>.<key> of a PointResult's typed groups (None if the group is absent)."""
    g = getattr(point, group)
    return None if g is None else getattr(g, key)


class _QueueSink:
    """A worker's sink: every point and note goes to the parent, which writes."""

    def __init__(self, q, config_id: str):
        self.q = q
        self.config_id = config_id

    def point(self, pr) -> None:
        self.q.put(("point", self.config_id, pr.model_dump(mode="json")))

    def note(self, key: str, config_id: str, value) -> None:
        self.q.put(("note", config_id, (key, value)))

    def power(self, frame) -> None:
        if frame is not None and len(frame):
            self.q.put(("power", self.config_id, frame.to_dict(orient="list")))

    def server_metrics(self, frame) -> None:
        if frame is not None and len(frame):
            self.q.put(("server_metrics", self.config_id, frame.to_dict(orient="list")))

    def engine_started(self, start) -> None:  # time breakdown (issue 22)
        self.q.put(("engine_started", self.config_id, start.model_dump(mode="json")))


def _worker(plan_json: str, config_id: str, point_ids: list[str], devices: list[int], visible: list[int],
            run_dir: str, env, q) -> None:
    """One packed configuration, in its own process: engine, load client, telemetry."""
    from pathlib import Path

    from bench.plan import Plan
    from bench.run.events import ignore

    plan = Plan.model_validate_json(plan_json)
    cfg = plan.engine_config(config_id)
    todo = [p for p in plan.points_for(config_id) if p.point_id in set(point_ids)]
    ctx = RunContext(plan, Path(run_dir), env, _QueueSink(q, config_id), ignore, visible)
    try:
        run_engine_session(ctx, cfg, todo, devices, measure_others=False)
    except BaseException as e:  # noqa: BLE001  (the parent records the rest of this configuration as failed)
        q.put(("error", config_id, one_line(f"{type(e).__name__}: {e}")))
    finally:
        q.put(("done", config_id, None))


def execute_packed(ctx: RunContext, result, todo: dict[str, list], devices: dict[str, list[int] | None],
                   reference: bool = True) -> None:
    """Run `todo` (config_id -> points) wave by wave, each wave's configurations concurrently;
    every point goes to `ctx.sink`, the run's one writer of `result` (its run.json)."""
    from bench.results import PointResult
    from bench.results.point import failed_point

    plan, env, sink, emit, visible = ctx.plan, ctx.env, ctx.sink, ctx.emit, ctx.visible
    configs = [c for c in plan.engine_configs if todo.get(c.config_id())]
    waves = pack_waves(configs, visible, devices)
    solo = None
    if reference and any(len(w) > 1 for w in waves):
        cfg, devs = next(m for w in waves if len(w) > 1 for m in w)
        first = todo[cfg.config_id()][0]
        ref_sink = _ReferenceSink(sink, ctx.run_dir)
        run_engine_session(replace(ctx, sink=ref_sink), cfg, [first], devs, measure_others=False)
        solo = ref_sink.points[0] if ref_sink.points else None
        if solo is not None:
            result.extra["pack_reference"] = {"point_id": solo.point_id, "devices": devs,
                                              "point": solo.model_dump(mode="json")}
    mp = _context()
    plan_json = plan.model_dump_json()
    for wave in waves:
        q = mp.Queue()
        ids = [cfg.config_id() for cfg, _ in wave]
        procs = {}
        for cfg, devs in wave:
            cid = cfg.config_id()
            point_ids = [p.point_id for p in todo[cid]]
            result.extra.setdefault("packing", {})[cid] = {"devices": devs, "packed_with": [i for i in ids if i != cid]}
            emit(EngineStarting(cid, cfg.model, devs, packed=True))
            procs[cid] = mp.Process(target=_worker, name=f"bench-pack-{cid}",
                                     args=(plan_json, cid, point_ids, devs, visible, str(ctx.run_dir), env, q))
            procs[cid].start()
        running, failed = set(procs), {}
        while running:
            try:
                kind, cid, payload = q.get(timeout=1.0)
            except queue_mod.Empty:
                for cid in [c for c in running if not procs[c].is_alive() and procs[c].exitcode not in (0, None)]:
                    failed[cid] = f"packed worker exited with code {procs[cid].exitcode}"
                    running.discard(cid)
                continue
            if kind == "point":
                pr = PointResult.model_validate(payload)
                if len(ids) > 1:
                    pr = pr.model_copy(update={"packed_with": [i for i in ids if i != cid]})
                pr = _mark_packed(pr, solo)
                sink.point(pr)
                emit(PointDone(pr))
            elif kind == "note":
                sink.note(payload[0], cid, payload[1])
            elif kind == "power":
                import pandas as pd

                sink.power(pd.DataFrame(payload))
            elif kind == "server_metrics":
                import pandas as pd

                sink.server_metrics(pd.DataFrame(payload))
            elif kind == "engine_started":  # time breakdown (issue 22)
                from bench.results.timing import EngineStart

                sink.engine_started(EngineStart.model_validate(payload))
            elif kind == "error":
                failed[cid] = payload
            elif kind == "done":
                running.discard(cid)
        for p in procs.values():
            p.join(timeout=30)
        for cid, reason in failed.items():
            have = {p.point_id for p in result.points}
            for p in todo[cid]:
                if p.point_id not in have:
                    sink.point(failed_point(p, "failed", f"packed worker failed: {reason}"))
        if any(r.startswith("KeyboardInterrupt") for r in failed.values()):
            raise KeyboardInterrupt


def _context():
    """Packed configurations: forkserver processes that import the runner once (bench.load.workers)."""
    from bench.load.workers import process_context

    return process_context(["bench.run.engine_session", "bench.run.pack", "bench.load.driver", "bench.load.workers",
                            "bench.telemetry", "bench.telemetry.nvml", "bench.telemetry.amdsmi", "pyarrow.parquet"])


def _mark_packed(pr, solo):
    """A disagreement with the solo reference invalidates the packed point (the reasons say why)."""
    if solo is None or pr.point_id != solo.point_id or pr.status != "ok":
        return pr
    reasons = packed_disagreement(pr, solo)
    if not reasons:
        return pr
    return pr.model_copy(update={"invalid_reasons": [*pr.invalid_reasons, *reasons], "valid": False})


class _ReferenceSink:
    """Keeps the solo reference point apart from the run's points (its id repeats in the packed wave)."""

    def __init__(self, parent, run_dir):
        self.parent, self.run_dir = parent, run_dir
        self.points: list = []

    def point(self, pr) -> None:
        if pr.requests_file:  # the packed run of the same point writes requests/<point>.parquet
            rel = pr.requests_file.removesuffix(".parquet") + ".solo.parquet"
            (self.run_dir / pr.requests_file).replace(self.run_dir / rel)
            pr = pr.model_copy(update={"requests_file": rel})
        self.points.append(pr)

    def note(self, key: str, config_id: str, value) -> None:
        self.parent.note(f"pack_reference_{key}", config_id, value)

    def power(self, frame) -> None:
        pass

    def server_metrics(self, frame) -> None:
        pass

    def engine_started(self, start) -> None:  # the solo reference's start is rented time too
        self.parent.engine_started(start)


__all__ = ["PACK_TOLERANCE", "execute_packed", "pack_waves", "packed_disagreement"]
