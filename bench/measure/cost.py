"""Scenarios and the cost formula (docs/measurement.md section 4).

    usd_per_gpu_hour = rental_usd_per_gpu_hour                                   (rental: all in)
                     | capex + energy + om  (per GPU-hour)                       (ownership)
    capex  = gpu_price_usd x server_factor x CRF(rate, years) / 8760
    energy = avg_power_w per GPU / 1000 x host_factor x pue x usd_per_kwh
    usd_per_mtok = usd_per_gpu_hour / (tok_s_per_gpu x utilization x 3600 / 1e6)

CRF(r, n) = r (1+r)^n / ((1+r)^n - 1), the capital recovery factor; r = 0 is straight line
(1/n). GPU board energy is what telemetry measures; the host and the facility enter only
here, as the named multipliers `host_factor` and `pue`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from bench.catalog.hardware import HardwareSpec, PriceFigure
from bench.errors import ConfigError
from bench.measure.groups import CostFigures, Energy, Metrics

HOURS_PER_YEAR = 8760.0

# Documented defaults of the `own` scenario (docs/cost.md gives the reasoning).
OWN_YEARS = 4.0  # SemiAnalysis economic life
OWN_RATE = 0.10  # cost of capital per year
OWN_USD_PER_KWH = 0.08  # common calculator default
OWN_PUE = 1.2
OWN_HOST_FACTOR = 1.5  # server power (CPUs, memory, NICs, fans) per watt of GPU board power
OWN_SERVER_FACTOR = 1.4  # when the catalog has none: an 8-GPU H100 box ~1.4
OWN_OM_USD_PER_GPU_HOUR = 0.0  # staff, space, support: not estimated; set it to include them


class Scenario(BaseModel):
    """One way of paying for a GPU-hour. Every field is stored with each cost figure."""

    model_config = ConfigDict(extra="forbid")

    name: str = "custom"
    kind: Literal["rental", "ownership"]
    rental_usd_per_gpu_hour: float | None = Field(default=None, ge=0)
    gpu_price_usd: float | None = Field(default=None, ge=0)
    server_factor: float = Field(default=OWN_SERVER_FACTOR, ge=1)
    years: float = Field(default=OWN_YEARS, gt=0)
    rate: float = Field(default=OWN_RATE, ge=0)
    usd_per_kwh: float = Field(default=OWN_USD_PER_KWH, ge=0)
    pue: float = Field(default=OWN_PUE, ge=1)
    host_factor: float = Field(default=OWN_HOST_FACTOR, ge=1)
    om_usd_per_gpu_hour: float = Field(default=OWN_OM_USD_PER_GPU_HOUR, ge=0)
    utilization: float = Field(default=1.0, gt=0, le=1)
    source: str | None = None  # where the price figures come from

    @model_validator(mode="after")
    def _complete(self) -> Scenario:
        if self.kind == "rental" and self.rental_usd_per_gpu_hour is None:
            raise ValueError("a rental scenario needs rental_usd_per_gpu_hour")
        if self.kind == "ownership" and self.gpu_price_usd is None:
            raise ValueError("an ownership scenario needs gpu_price_usd")
        return self

    @property
    def purchase_usd(self) -> float:
        """The GPU price of an ownership scenario (`_complete` guarantees it is set there)."""
        if self.gpu_price_usd is None:
            raise ValueError(f"scenario {self.name!r} ({self.kind}) has no gpu_price_usd")
        return self.gpu_price_usd


def make_scenario(**fields: Any) -> Scenario:
    """Build a Scenario; a bad or unknown field is a ConfigError naming it."""
    try:
        return Scenario(**fields)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "scenario"
        raise ConfigError(f"cost scenario: {where}: {first['msg']}") from None


def crf(rate: float, years: float) -> float:
    """Capital recovery factor: the yearly payment per dollar of capital (1/years at rate 0)."""
    if rate == 0:
        return 1.0 / years
    growth = (1.0 + rate) ** years
    return rate * growth / (growth - 1.0)


def price_figure(hardware: HardwareSpec | None, name: str) -> tuple[float, str] | None:
    """(value, source) of one catalog price figure (a field of `Prices`), or None when not known."""
    fig: PriceFigure | None = getattr(hardware.prices, name) if hardware is not None else None
    return (float(fig.value), fig.source) if fig is not None else None


# scenario name -> catalog price figure giving an all-in $/GPU-hour
_ALL_IN = {
    "rental-on-demand": "rental_usd_per_gpu_hour",
    "rental-3yr": "rental_3y_usd_per_gpu_hour",
    "own-hyperscaler": "own_hyperscaler_usd_per_gpu_hour",
    "own-neocloud": "own_neocloud_usd_per_gpu_hour",
}


def scenarios_for(hardware: HardwareSpec | None, utilization: float = 1.0) -> dict[str, Scenario]:
    """The named scenarios the hardware's catalog prices allow.

    `own-hyperscaler`/`own-neocloud` are SemiAnalysis all-in ownership costs per GPU-hour
    (capital, power, facility, operations already inside): they are rental-like figures and
    nothing is added to them. `own` is built here from the purchase price.
    """
    out: dict[str, Scenario] = {}
    for name, key in _ALL_IN.items():
        fig = price_figure(hardware, key)
        if fig is not None:
            out[name] = make_scenario(name=name, kind="rental", rental_usd_per_gpu_hour=fig[0],
                                      utilization=utilization, source=f"{key}: {fig[1]}")
    purchase = price_figure(hardware, "purchase_usd")
    if purchase is not None:
        server = price_figure(hardware, "server_factor")
        out["own"] = make_scenario(
            name="own", kind="ownership", gpu_price_usd=purchase[0],
            server_factor=server[0] if server else OWN_SERVER_FACTOR, utilization=utilization,
            source=f"purchase_usd: {purchase[1]}; server_factor: {server[1] if server else 'default 1.4'}; "
                   "rate, years, $/kWh, PUE, host factor: docs/cost.md defaults",
        )
    return out


def cost_breakdown(scenario: Scenario, avg_power_w_per_gpu: float | None) -> dict:
    """$ per GPU-hour and its parts. Ownership without a measured power has no total."""
    if scenario.kind == "rental":
        return {"capex_usd_per_gpu_hour": None, "energy_usd_per_gpu_hour": None,
                "om_usd_per_gpu_hour": None, "usd_per_gpu_hour": scenario.rental_usd_per_gpu_hour}
    capex = scenario.purchase_usd * scenario.server_factor * crf(scenario.rate, scenario.years) / HOURS_PER_YEAR
    energy = None
    if avg_power_w_per_gpu is not None:
        energy = avg_power_w_per_gpu / 1000.0 * scenario.host_factor * scenario.pue * scenario.usd_per_kwh
    total = capex + energy + scenario.om_usd_per_gpu_hour if energy is not None else None
    return {"capex_usd_per_gpu_hour": capex, "energy_usd_per_gpu_hour": energy,
            "om_usd_per_gpu_hour": scenario.om_usd_per_gpu_hour, "usd_per_gpu_hour": total}


def usd_per_mtok(usd_per_gpu_hour: float | None, tok_s_per_gpu: float | None, utilization: float) -> float | None:
    """$ per million tokens at `tok_s_per_gpu` tokens/s served for `utilization` of the hours."""
    if usd_per_gpu_hour is None or not tok_s_per_gpu:
        return None
    return usd_per_gpu_hour / (tok_s_per_gpu * utilization * 3600.0 / 1e6)


def cost_for_point(metrics: Metrics, energy: Energy | None, scenario: Scenario, n_gpus: int) -> CostFigures:
    """$/Mtok (output, input, total, goodput output) of one load point under one scenario.

    `metrics`/`energy`: the Metrics and Energy groups (energy None: not measured). Throughputs
    are the window figures of `metrics` divided by n_gpus; the power is the measured gross
    `energy.avg_power_w` divided by the devices it covers (`n_devices`; n_gpus when the
    energy does not say), so a per-GPU power is never diluted by devices it did not read.
    """
    avg_power_w = energy.avg_power_w if energy is not None else None
    n_power = (energy.n_devices if energy is not None else None) or n_gpus
    per_gpu_w = avg_power_w / n_power if avg_power_w is not None else None
    parts = cost_breakdown(scenario, per_gpu_w)
    u = scenario.utilization

    def per_gpu(value: float | None) -> float | None:
        return value / n_gpus if value is not None else None

    usd_h = parts["usd_per_gpu_hour"]
    out = {
        "scenario": scenario.name,
        "kind": scenario.kind,
        **parts,
        "utilization": u,
        "n_gpus": n_gpus,
        "n_devices_power": n_power if avg_power_w is not None else None,
        "avg_power_w_per_gpu": per_gpu_w,
        "energy_method": energy.energy_method if energy is not None else None,
        "power_measured": energy.measured if energy is not None else None,
        "usd_per_mtok_output": usd_per_mtok(usd_h, per_gpu(metrics.output_tok_s), u),
        "usd_per_mtok_input": usd_per_mtok(usd_h, per_gpu(metrics.input_tok_s), u),
        "usd_per_mtok_total": usd_per_mtok(usd_h, per_gpu(metrics.total_tok_s), u),
        "inputs": scenario.model_dump(),
    }
    if metrics.goodput_output_tok_s is not None:
        out["usd_per_mtok_goodput"] = usd_per_mtok(usd_h, per_gpu(metrics.goodput_output_tok_s), u)
    if scenario.kind == "ownership" and per_gpu_w is None:
        out["note"] = "no power figure for this point: ownership cost needs avg_power_w"
    return CostFigures(**out)


def scenario_from_options(hardware: HardwareSpec | None = None, name: str | None = None, utilization: float | None = None,
                          rental_usd_per_gpu_hour: float | None = None, **ownership: Any) -> dict[str, Scenario]:
    """Scenarios for `bench cost`: an explicit rental rate, an explicit ownership (purchase
    price + overrides of the `own` defaults), one named scenario, or every named one."""
    given = {k: v for k, v in ownership.items() if v is not None}
    extra = {"utilization": utilization} if utilization is not None else {}
    if rental_usd_per_gpu_hour is not None:
        if given:
            raise ConfigError("--rental-usd-h cannot be combined with ownership options")
        return {"custom-rental": make_scenario(name="custom-rental", kind="rental",
                                               rental_usd_per_gpu_hour=rental_usd_per_gpu_hour, **extra)}
    if given:
        if "gpu_price_usd" not in given:
            raise ConfigError("ownership options need --gpu-price-usd")
        return {"custom-own": make_scenario(name="custom-own", kind="ownership", **given, **extra)}
    if hardware is None:
        raise ConfigError("named cost scenarios need a catalog hardware entry (--hardware ID)")
    named = scenarios_for(hardware, **extra)
    if not named:
        raise ConfigError(f"hardware '{hardware.id}' has no price figures in the catalog; "
                          "give --rental-usd-h or --gpu-price-usd")
    if name is None:
        return named
    if name not in named:
        raise ConfigError(f"unknown cost scenario '{name}' for {hardware.id} "
                          f"(known: {', '.join(named)})")
    return {name: named[name]}


def recost_run(run, scenarios_by_hardware) -> list[dict]:
    """Cost rows for every ok point of a finished RunResult, without rerunning anything.

    `scenarios_by_hardware(hardware_id) -> {name: Scenario}`. n_gpus is the point's engine
    configuration's, else the run's, else 1.
    """
    hardware_id = run.config.hardware_id
    scenarios = scenarios_by_hardware(hardware_id)
    rows = []
    for point in run.points:
        if point.status != "ok":
            continue
        n_gpus = int(run.config.engine_config(point.engine_config_id).n_gpus or 1)
        metrics = point.metrics or Metrics()
        for name, scenario in scenarios.items():
            cost = cost_for_point(metrics, point.energy, scenario, n_gpus)
            out_tok_s = metrics.output_tok_s
            rows.append({
                "run": run.run_id, "point": point.point_id, "hardware": hardware_id, "n_gpus": n_gpus,
                "scenario": name, "usd_per_gpu_hour": cost.usd_per_gpu_hour, "utilization": cost.utilization,
                "output_tok_s_per_gpu": out_tok_s / n_gpus if out_tok_s is not None else None,
                "usd_per_mtok_output": cost.usd_per_mtok_output, "usd_per_mtok_input": cost.usd_per_mtok_input,
                "usd_per_mtok_total": cost.usd_per_mtok_total,
                "usd_per_mtok_goodput": cost.usd_per_mtok_goodput,
                "energy_method": cost.energy_method, "valid": point.valid,
                "cost": cost.flat(),
            })
    return rows
