"""The cost law, explained: why configuration B's $ per million output tokens differs from A's,
at the same operating point, as factors of the seed's law (docs/measurement.md section 4)

    usd_per_mtok_output = usd_per_gpu_hour / (output_tok_s_per_gpu x utilization x 0.0036)

so B / A = (usd_per_gpu_hour B / A) x (output tok/s per GPU A / B) x (utilization A / B), each
split where bench knows the parts:
- $ per GPU-hour (ownership): capital, electricity (measured power x host x PUE x $/kWh) and
  O&M, one after the other (A's part replaced by B's in that order: the split of a ratio of
  sums depends on the order, the product does not); renting: the hourly price, one factor;
- output throughput per GPU: the roofline bound per GPU (output_tok_s_per_gpu /
  roofline_efficiency, the decode bound in output tok/s: the card's bandwidth and FLOPS and the
  precision's bytes, measure/roofline.py) and the share of that bound reached (roofline
  efficiency = output tok/s / bound);
- a last factor, "repeats averaged / interpolated", is the measured ratio over the product of
  the others: exactly 1 for measured single-run points; a mean of $/Mtok over repeats is not
  the price over the mean throughput, nor is a value read between two points.
Model sparsity (active / total parameters) is reported beside them, never multiplied in.
The factors multiply exactly to the measured ratio (`Explanation.product`).

    expl = explain(matched, "h100-sxm bf16 vllm", "h200-sxm bf16 vllm", "rental-on-demand")
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pandas as pd

from bench.errors import ConfigError
from bench.escape import plot_text


@dataclass(frozen=True)
class Factor:
    """One lever: B's figure over A's, in the direction of the $/Mtok ratio (a factor above 1
    makes B dearer). `a` and `b` are the figures themselves, in `unit`."""

    name: str
    value: float
    a: float | None
    b: float | None
    unit: str


@dataclass(frozen=True)
class Explanation:
    """B's $/Mtok over A's at the operating point, and its factors (they multiply to `ratio`)."""

    a: str
    b: str
    scenario: str
    operating_point: str
    usd_per_mtok_a: float
    usd_per_mtok_b: float
    factors: tuple[Factor, ...]
    sparsity_a: float | None  # active / total parameters: explanatory, never a factor
    sparsity_b: float | None

    @property
    def ratio(self) -> float:
        return self.usd_per_mtok_b / self.usd_per_mtok_a

    @property
    def product(self) -> float:
        return math.prod(f.value for f in self.factors)

    def rows(self) -> list[dict[str, Any]]:
        """The table: one row per factor, then the measured ratio and the sparsity row."""
        out = [{"factor": f.name, "A": f.a, "B": f.b, "unit": f.unit, "x (B / A)": f.value} for f in self.factors]
        out.append({"factor": "$/Mtok output, measured", "A": self.usd_per_mtok_a, "B": self.usd_per_mtok_b,
                    "unit": "$ / Mtok output", "x (B / A)": self.ratio})
        out.append({"factor": "model sparsity (active / total params; explains, not multiplied)",
                    "A": self.sparsity_a, "B": self.sparsity_b, "unit": "share", "x (B / A)": None})
        return out


EXPLAIN_COLUMNS = ["factor", "A", "B", "unit", "x (B / A)"]


def explain_columns(scenario: str) -> list[str]:
    """The matched columns `explain` reads (beyond pareto.MATCHED_METRICS), for compare_table."""
    return [f"usd_per_mtok_output__{scenario}", f"usd_per_gpu_hour__{scenario}", f"utilization__{scenario}",
            "roofline_efficiency", "sparsity"]


def explain(matched: pd.DataFrame, a: str, b: str, scenario: str) -> Explanation:
    """The Explanation of series B against A in a compare_table frame made with
    `explain_columns(scenario)`. ConfigError (one line) when a series is unknown or has no
    $/Mtok at the operating point."""
    ra, rb = _row(matched, a), _row(matched, b)
    usd = f"usd_per_mtok_output__{scenario}"
    ua, ub = _get(ra, usd), _get(rb, usd)
    if ua is None or ub is None or ua <= 0 or ub <= 0:
        raise ConfigError(f"no $/Mtok under scenario '{scenario}' for {a if ua is None else b} at the operating point")
    factors = _price_factors(ra, rb, scenario) + _throughput_factors(ra, rb)
    ua_u, ub_u = _get(ra, f"utilization__{scenario}"), _get(rb, f"utilization__{scenario}")
    if ua_u and ub_u:
        factors.append(Factor("utilization (load factor)", ua_u / ub_u, ua_u, ub_u, "share of hours"))
    rest = (ub / ua) / math.prod(f.value for f in factors)
    factors.append(Factor("repeats averaged / interpolated", rest, None, None, "residual"))
    return Explanation(a, b, scenario, str(ra.get("operating_point") or ""), ua, ub, tuple(factors),
                       _get(ra, "sparsity"), _get(rb, "sparsity"))


def _price_factors(ra: pd.Series, rb: pd.Series, scenario: str) -> list[Factor]:
    """$ per GPU-hour B / A, split into capital, electricity and O&M for ownership."""
    ha, hb = _get(ra, f"usd_per_gpu_hour__{scenario}"), _get(rb, f"usd_per_gpu_hour__{scenario}")
    if not ha or not hb:
        return []
    pa, pb = _parts(ra, scenario), _parts(rb, scenario)
    whole = Factor("$ per GPU-hour", hb / ha, ha, hb, "$ / GPU-hour")
    if pa is None or pb is None or not (math.isclose(sum(pa), ha, rel_tol=1e-9)
                                        and math.isclose(sum(pb), hb, rel_tol=1e-9)):
        return [whole]
    out, current = [], list(pa)
    names = ["$ per GPU-hour: capital", "$ per GPU-hour: electricity (power x host x PUE x $/kWh)",
             "$ per GPU-hour: O&M"]
    for i, name in enumerate(names):
        before = sum(current)
        current[i] = pb[i]
        out.append(Factor(name, sum(current) / before, pa[i], pb[i], "$ / GPU-hour"))
    return out


def _parts(row: pd.Series, scenario: str) -> tuple[float, float, float] | None:
    """(capital, electricity, O&M) $ per GPU-hour of an ownership scenario at the row's power."""
    from bench.catalog import get_hardware
    from bench.errors import BenchError
    from bench.measure.cost import cost_breakdown, scenarios_for

    try:
        named = scenarios_for(get_hardware(str(row["hardware"])))
    except BenchError:
        return None
    sc = named.get(scenario)
    if sc is None or sc.kind != "ownership":
        return None
    parts = cost_breakdown(sc, _get(row, "avg_power_w_per_gpu"))
    values = (parts["capex_usd_per_gpu_hour"], parts["energy_usd_per_gpu_hour"], parts["om_usd_per_gpu_hour"])
    return None if any(v is None for v in values) else (float(values[0]), float(values[1]), float(values[2]))


def _throughput_factors(ra: pd.Series, rb: pd.Series) -> list[Factor]:
    """Output tok/s per GPU A / B, split into the roofline bound and the share of it reached
    when the roofline is known (output tok/s = efficiency x bound, measure/roofline.py)."""
    oa, ob = _get(ra, "output_tok_s_per_gpu"), _get(rb, "output_tok_s_per_gpu")
    if not oa or not ob:
        return []
    ea, eb = _get(ra, "roofline_efficiency"), _get(rb, "roofline_efficiency")
    if not (ea and eb):
        return [Factor("throughput per GPU (output tok/s), inverse", oa / ob, oa, ob, "output tok/s per GPU")]
    ba, bb = oa / ea, ob / eb
    return [
        Factor("roofline bound per GPU (card x precision), inverse", ba / bb, ba, bb, "output tok/s per GPU"),
        Factor("roofline efficiency (share of the bound reached), inverse", ea / eb, ea, eb, "share"),
    ]


def waterfall_figure(expl: Explanation):
    """A plotly waterfall from A's $/Mtok to B's: each factor's bar is the change it makes to
    the running $/Mtok (running x (factor - 1)); the last bar is B's measured $/Mtok."""
    import plotly.graph_objects as go

    names, deltas, running = [plot_text(expl.a)], [expl.usd_per_mtok_a], expl.usd_per_mtok_a
    texts = [f"{expl.usd_per_mtok_a:.4g} $/Mtok"]
    for f in expl.factors:
        names.append(plot_text(f.name))
        deltas.append(running * (f.value - 1))
        texts.append(f"x{f.value:.4f}")
        running *= f.value
    names.append(plot_text(expl.b))
    deltas.append(0.0)
    texts.append(f"{expl.usd_per_mtok_b:.4g} $/Mtok")
    fig = go.Figure(go.Waterfall(x=names, y=deltas, measure=["absolute", *["relative"] * len(expl.factors), "total"],
                                 text=texts, textposition="outside", connector={"line": {"color": "#888"}}))
    fig.update_layout(title=plot_text(f"$/Mtok output ({expl.scenario}): {expl.b} / {expl.a} = "
                                        f"{expl.ratio:.4f} at {expl.operating_point}"),
                      yaxis_title="$ per million output tokens", yaxis_tickformat=",.4~f",
                      template="plotly_white", height=480, showlegend=False)
    return fig


def _row(matched: pd.DataFrame, label: str) -> pd.Series:
    rows = matched[matched["series"] == label] if not matched.empty else matched
    if rows.empty:
        known = ", ".join(map(str, matched["series"])) if not matched.empty else "none"
        raise ConfigError(f"--explain: no series '{label}' (series: {known})")
    return rows.iloc[0]


def _get(row: pd.Series, key: str) -> float | None:
    v = row.get(key)
    try:
        return None if v is None or pd.isna(v) else float(v)
    except (TypeError, ValueError):
        return None
