"""A sweep as a fleet of shards: one engine configuration on one hardware type.

Each shard starts its engine once (one configuration) on a machine of its hardware type and
runs `bench sweep SWEEP --config ID` there. Hardware types come from `--hardware` (repeatable;
`a|b` is one shard that may run on either) or the sweep's `hardware` key. Every id is
deterministic: the shard id from the configuration id and its hardware ids, the fleet id from
the sweep file's bytes and the hardware list, so launching the same sweep again addresses the
same shards in the store.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from bench.catalog.configbase import safe_id
from bench.errors import ConfigError
from bench.fleet.records import FleetRecord, Shard, SkippedShard

if TYPE_CHECKING:
    from bench.plan import EngineConfig

# Devices per machine that preflight plans a remote shard for when the sweep sets no
# `devices`: each shard asks its backend for exactly its configuration's GPUs, and 8 is the
# largest single box the clouds rent, so only configurations that fit no box are skipped.
REMOTE_DEVICES = 8


@dataclass
class Fleet:
    """The shards of one sweep over a list of hardware types."""

    fleet_id: str
    name: str
    sweep_path: Path
    sweep_sha256: str
    hardware: list[tuple[str, ...]]
    shards: list[Shard]
    skipped: list[SkippedShard] = field(default_factory=list)
    configs: dict[str, EngineConfig] = field(default_factory=dict)  # config_id -> config (packing needs them)

    def shard(self, shard_id: str) -> Shard:
        for s in self.shards:
            if s.shard_id == shard_id:
                return s
        raise ConfigError(f"no shard '{shard_id}' in fleet {self.fleet_id} "
                          f"(known: {', '.join(s.shard_id for s in self.shards)})")

    def record(self, backend=None) -> FleetRecord:
        """What the store keeps of the fleet (fleet.json): ids and shards, never the sweep text
        (it may hold an endpoint's credentials); `backend`: the launch's (a backend's `record()`)."""
        return FleetRecord(fleet_id=self.fleet_id, name=self.name, sweep_file=self.sweep_path.name,
                           sweep_sha256=self.sweep_sha256, hardware=["|".join(g) for g in self.hardware],
                           shards=self.shards, skipped=self.skipped, backend=backend)


def parse_hardware(values) -> list[tuple[str, ...]]:
    """`--hardware` values -> hardware groups, each checked against the catalog: "h100-sxm"
    is one type, "h100-sxm|h200-sxm" one shard on either. Order kept, repeats dropped."""
    from bench.catalog import get_hardware

    groups: list[tuple[str, ...]] = []
    for value in values or ():
        ids = tuple(sorted({part.strip() for part in str(value).split("|") if part.strip()}))
        if not ids:
            raise ConfigError(f"bad --hardware '{value}' (expected a catalog id, or ids joined by '|')")
        for hw in ids:
            get_hardware(hw)  # ConfigError naming the known ids
        if ids not in groups:
            groups.append(ids)
    return groups


def shard_id(config_id: str, hardware) -> str:
    """`<config id>_<hardware id>[_<hardware id>...]`: "_" appears in neither part."""
    return "_".join([config_id, *sorted(hardware)])


def fleet_id(name: str, sweep_bytes: bytes, groups: list[tuple[str, ...]]) -> str:
    text = "\n".join("|".join(g) for g in groups)
    digest = hashlib.sha256(sweep_bytes + b"\0" + text.encode()).hexdigest()[:8]
    return f"{safe_id(name)}-{digest}"


def plan_fleet(sweep_path, hardware_values=(), default_hardware: str | None = None,
               n_devices: int | None = None, multinode: bool = False) -> Fleet:
    """The fleet of a sweep file. Hardware: `hardware_values`, else the sweep's `hardware`,
    else `default_hardware` (the local backend: this box). `n_devices`: devices per machine
    for preflight (default: the sweep's `devices`, else REMOTE_DEVICES).

    A configuration becomes a shard of a hardware group when preflight leaves it points to
    run on every type of the group; otherwise it is listed in `skipped` with the reason.
    A configuration over several machines (`nnodes` > 1) is a shard only where the backend
    launches multi-node jobs (`multinode`: SkyPilot's `num_nodes`)."""
    from bench.plan import build_plan, load_sweep

    path = Path(sweep_path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read sweep file ({e.strerror or e})") from None
    base = load_sweep(str(path))
    groups = parse_hardware(hardware_values)
    if not groups and (base.hardware or default_hardware):
        groups = parse_hardware([base.hardware or default_hardware])
    if not groups:
        raise ConfigError(f"{path}: name the hardware types: --hardware ID (repeatable; 'a|b' for either) "
                          "or `hardware:` in the sweep")
    shards: list[Shard] = []
    skipped: list[SkippedShard] = []
    configs: dict[str, EngineConfig] = {}
    for group in groups:
        plans = []
        for hw in group:
            sweep = load_sweep(str(path), {"hardware": hw})
            plans.append(build_plan(sweep, hw, sweep.devices or n_devices or REMOTE_DEVICES))
        every = [*plans[0].engine_configs, *plans[0].skipped_engine_configs]
        for cfg in every:
            cid = cfg.config_id()
            configs.setdefault(cid, cfg)
            reason = _not_runnable(cid, group, plans)
            if cfg.nnodes > 1 and not multinode:  # local and Ray place a shard on one machine
                reason = (f"spans {cfg.nnodes} nodes: only the skypilot backend launches a shard over several "
                          "machines (docs/fleet.md)")
            if reason:
                skipped.append(SkippedShard(config_id=cid, hardware="|".join(group), reason=reason))
                continue
            shards.append(Shard(shard_id=shard_id(cid, group), config_id=cid, hardware=group,
                                n_gpus=cfg.n_gpus_local, model=cfg.model, precision=cfg.precision(),
                                parallel=cfg.parallel_label(), engine=cfg.engine,
                                n_points=len(plans[0].points_for(cid)), nnodes=cfg.nnodes))
    return Fleet(fleet_id=fleet_id(base.name, raw, groups), name=base.name, sweep_path=path,
                 sweep_sha256=hashlib.sha256(raw).hexdigest(), hardware=groups, shards=shards, skipped=skipped,
                 configs=configs)


def _not_runnable(config_id: str, group: tuple[str, ...], plans) -> str | None:
    """Why a configuration is no shard of this hardware group (None: it runs on every type)."""
    for hw, plan in zip(group, plans):
        if plan.points_for(config_id):
            continue
        reasons = sorted({s.reason for s in plan.skipped if s.point.engine_config_id == config_id})
        why = "; ".join(reasons) if reasons else "no points"
        return f"{hw}: {why}" if len(group) > 1 else why
    return None
