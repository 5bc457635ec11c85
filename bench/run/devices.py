"""Which devices each engine configuration runs on (issue 8, defect 1).

Every engine configuration gets an explicit list of device indices: its own `gpus` when the
sweep names them, else the first n_gpus of the visible devices. The same list pins the
engine (CUDA_VISIBLE_DEVICES / HIP_VISIBLE_DEVICES), scopes its telemetry and is recorded
with every point, so energy and cost count exactly the boards that did the work.
Indices are NVML / amdsmi indices (NVML ignores CUDA_VISIBLE_DEVICES; see `visible_gpu_indices`).
"""

from __future__ import annotations

import os

from bench.errors import ConfigError

VISIBLE_ENV = {"nvidia": ("CUDA_VISIBLE_DEVICES",),
               "amd": ("HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES")}


def visible_gpu_indices(count: int, visible: str | None = None, vendor: str | None = "nvidia") -> list[int]:
    """Indices of the GPUs the harness may use: CUDA_VISIBLE_DEVICES (AMD: HIP_VISIBLE_DEVICES,
    then ROCR_VISIBLE_DEVICES) when it lists indices (NVML and amdsmi ignore it), else all `count`."""
    if visible is None:
        names = VISIBLE_ENV.get(vendor or "nvidia", VISIBLE_ENV["nvidia"])
        visible = next((os.environ[n] for n in names if os.environ.get(n)), None)
    if visible and all(part.strip().isdigit() for part in visible.split(",")):
        return [int(part) for part in visible.split(",")]
    return list(range(count))


def check_devices(devices: list[int], visible: list[int], what: str) -> list[int]:
    """`devices` unchanged when each is a distinct visible index; else ConfigError naming them."""
    missing = [d for d in devices if d not in visible]
    if missing:
        raise ConfigError(f"{what}: device(s) {missing} do not exist on this box (visible: {visible})")
    if len(set(devices)) != len(devices):
        raise ConfigError(f"{what}: device list {devices} repeats an index")
    return list(devices)


def devices_for(cfg, visible: list[int], exclude: set[int] | frozenset[int] = frozenset()) -> list[int]:
    """The device indices of one configuration: its explicit `gpus`, checked against the box,
    or the first n_gpus visible indices not in `exclude`.

    A configuration needing more devices than are left raises ConfigError with the numbers."""
    n = cfg.n_gpus_local  # this machine's share of a multi-node configuration
    cid = cfg.config_id()
    explicit = cfg.gpus
    if explicit:  # its length was checked against n_gpus when the EngineConfig was built
        return check_devices(list(explicit), visible, f"engine config {cid}")
    free = [d for d in visible if d not in exclude]
    if len(free) < n:
        raise ConfigError(f"engine config {cid} needs {n} device(s); {len(free)} free of {len(visible)} visible")
    return free[:n]


def plan_devices(configs, visible: list[int] | None) -> dict[str, list[int] | None]:
    """config_id -> device indices for configurations run one after another (each may reuse
    every device); None for each when the host has no visible GPU list (`visible` None)."""
    return {cfg.config_id(): devices_for(cfg, visible) if visible is not None else None for cfg in configs}
