"""Catalog hardware ids -> the accelerator names Ray and SkyPilot place work by.

Ray: the `ray.util.accelerators` names a GPU node advertises as its `accelerator_type:<name>`
resource and `ray.io/accelerator-type` label (an A100 80GB advertises "A100"). SkyPilot: the
names of `sky show-gpus`. Two catalog entries may share a cloud name (H100 SXM and PCIe are
both "H100" on several clouds); the shard checks the device it landed on against its own
hardware ids before measuring (bench.fleet.shard), so a wrong landing fails instead of
being recorded under the wrong hardware.
"""

from __future__ import annotations

from bench.errors import ConfigError

RAY = {
    "h100-sxm": "H100", "h100-pcie": "H100", "h200-sxm": "H200", "a100-80g-sxm": "A100",
    "b200": "B200", "gb200": "GB200", "l4": "L4", "l40s": "L40S",
    "mi300x": "AMD-Instinct-MI300X-OAM", "mi325x": "AMD-Instinct-MI325X-OAM", "mi355x": "AMD-Instinct-MI355X-OAM",
}
SKY = {
    "h100-sxm": "H100", "h100-pcie": "H100", "h200-sxm": "H200", "a100-80g-sxm": "A100-80GB",
    "b200": "B200", "gb200": "GB200", "l4": "L4", "l40s": "L40S", "mi300x": "MI300X",
}
CPU = "cpu-host"


def accelerator(table: dict[str, str], hardware_id: str, backend: str) -> str:
    """The backend's name for a catalog hardware id; ConfigError naming the ones it knows."""
    if hardware_id not in table:
        raise ConfigError(f"{backend}: no accelerator name for hardware '{hardware_id}' "
                          f"(known: {', '.join(sorted(table))})")
    return table[hardware_id]
