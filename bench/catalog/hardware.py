"""The hardware half of the catalog: `hardware/*.yaml` -> typed, validated `HardwareSpec`s.

One file per device at the repository top level (`BENCH_CATALOG_DIR` overrides the
folder holding it). Memory in GB, bandwidth in TB/s, dense TFLOPS per precision, board
power in W, prices with their units checked. Unknown keys are errors naming the file.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from bench.catalog.configbase import Strict, catalog_dir, describe_error, read_yaml
from bench.catalog.dtypes import MATRIX_PRECISIONS
from bench.errors import ConfigError

HARDWARE_DIR = "hardware"
TFLOPS_KEYS = MATRIX_PRECISIONS  # bench.catalog.dtypes


class Scaleup(Strict):
    link: str
    gbs: float | None = None  # per GPU, one direction


_PRICE_UNITS = {
    "rental_usd_per_gpu_hour": "usd_per_gpu_hour",
    "rental_3y_usd_per_gpu_hour": "usd_per_gpu_hour",
    "own_hyperscaler_usd_per_gpu_hour": "usd_per_gpu_hour",
    "own_neocloud_usd_per_gpu_hour": "usd_per_gpu_hour",
    "all_in_kw_per_gpu": "kw_per_gpu",
    "purchase_usd": "usd",
    "server_factor": "ratio",
}


class PriceFigure(Strict):
    value: float = Field(ge=0)
    unit: str
    source: str


class Prices(Strict):
    """Rental (all included) and ownership figures; absent = not known."""

    rental_usd_per_gpu_hour: PriceFigure | None = None  # on-demand, range midpoint
    rental_3y_usd_per_gpu_hour: PriceFigure | None = None
    own_hyperscaler_usd_per_gpu_hour: PriceFigure | None = None
    own_neocloud_usd_per_gpu_hour: PriceFigure | None = None
    all_in_kw_per_gpu: PriceFigure | None = None
    purchase_usd: PriceFigure | None = None
    server_factor: PriceFigure | None = None

    @model_validator(mode="after")
    def _units(self) -> Prices:
        for name, unit in _PRICE_UNITS.items():
            fig = getattr(self, name)
            if fig is not None and fig.unit != unit:
                raise ValueError(f"prices.{name}: unit must be '{unit}', not '{fig.unit}'")
        return self


class HardwareSpec(Strict):
    """One hardware/<id>.yaml entry. TFLOPS are dense; None = precision unsupported."""

    id: str
    name: str
    vendor: Literal["nvidia", "amd", "cpu"]
    arch: str
    year: int | None = None
    memory_gb: float
    bandwidth_tbs: float
    tflops: dict[str, float | None]
    power_w: float
    scaleup: Scaleup | None = None
    match: list[str] = Field(default_factory=list)
    estimated: bool = False
    sources: dict[str, str]
    prices: Prices = Field(default_factory=Prices)
    notes: list[str] = Field(default_factory=list)

    @field_validator("tflops")
    @classmethod
    def _tflops_keys(cls, v: dict[str, float | None]) -> dict[str, float | None]:
        if set(v) != set(TFLOPS_KEYS):
            raise ValueError(f"tflops needs exactly the keys {', '.join(TFLOPS_KEYS)}")
        return v

    @model_validator(mode="after")
    def _sourced(self) -> HardwareSpec:
        missing = [k for k in ("memory_gb", "bandwidth_tbs", "tflops", "power_w") if k not in self.sources]
        if missing:
            raise ValueError(f"sources lacks a note for {', '.join(missing)}")
        return self


@lru_cache(maxsize=8)
def _load_hardware(folder: str, _stamp: tuple) -> dict[str, HardwareSpec]:
    out = {}
    for f in sorted(Path(folder).glob("*.yaml")):
        where = f"{HARDWARE_DIR}/{f.name}"
        data = read_yaml(f)
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: expected a mapping")
        try:
            spec = HardwareSpec(**data)
        except ValidationError as e:
            raise ConfigError(f"{where}: {describe_error(e)}") from None
        if spec.id != f.stem:
            raise ConfigError(f"{where}: id '{spec.id}' differs from the file name")
        out[spec.id] = spec
    return out


def load_hardware(dir: str | Path | None = None) -> dict[str, HardwareSpec]:
    """All hardware entries of hardware/*.yaml, by id (cached until a file changes)."""
    folder = Path(dir) if dir else catalog_dir() / HARDWARE_DIR
    if not folder.is_dir():
        raise ConfigError(f"{folder}: hardware folder not found")
    stamp = tuple((f.name, f.stat().st_mtime_ns) for f in sorted(folder.glob("*.yaml")))
    return _load_hardware(str(folder.resolve()), stamp)


def get_hardware(id: str, dir: str | Path | None = None) -> HardwareSpec:
    """One hardware entry by id; ConfigError naming the known ids when absent."""
    hw = load_hardware(dir)
    if id not in hw:
        raise ConfigError(f"unknown hardware '{id}' (known: {', '.join(sorted(hw))})")
    return hw[id]
