"""Speculative decoding's speed-up: each speculative point of the cost-model table against the
same configuration without speculation (spec_method "none"), pure (no I/O).

    rows = spec_speedup(frame)      # a frame of the table's (or point files') columns
    rows[0].speedup_at_interactivity, rows[0].speedup_same_load

Two figures, because speculation moves both axes: `speedup_same_load` is output tok/s over the
baseline's at the same load (concurrency or rate); `speedup_at_interactivity` is output tok/s
per GPU over the baseline's at the same interactivity (tok/s per user), the baseline's curve
interpolated linearly between its measured loads and never extrapolated (None outside its range).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bench.errors import ConfigError
from bench.plan.pointid import PointId

if TYPE_CHECKING:
    import pandas as pd

# What must be equal for two rows to be "the same configuration" (besides the workload, read from the point id)
SAME = ("model", "hardware", "n_gpus", "precision", "engine", "load_kind")


@dataclass(frozen=True)
class SpecSpeedup:
    """One speculative point against its baseline (None: no matching baseline point)."""

    point_id: str
    spec_method: str
    spec_tokens: int | None
    mean_acceptance_length: float | None  # tokens per target-model step
    interactivity_tok_s_user: float | None
    speedup_same_load: float | None  # output tok/s / the baseline's at the same load
    speedup_at_interactivity: float | None  # output tok/s per GPU / the baseline's at this interactivity


def spec_speedup(frame: pd.DataFrame) -> list[SpecSpeedup]:
    """Every speculative row's speed-up over the rows of the same configuration and workload
    without speculation; rows without `spec_method` count as without speculation."""
    if frame.empty or "spec_method" not in frame.columns:
        return []
    rows = [dict(r) for _, r in frame.iterrows()]
    for r in rows:
        r["_key"] = (*(_plain(r.get(k)) for k in SAME), _workload(r.get("point_id")))
        method = r.get("spec_method")
        r["_spec"] = method if isinstance(method, str) and method and method != "none" else None
    out = []
    for r in rows:
        if r["_spec"] is None:
            continue
        base = [b for b in rows if b["_spec"] is None and b["_key"] == r["_key"]]
        same = [b for b in base if _plain(b.get("concurrency")) == _plain(r.get("concurrency"))
                and _plain(b.get("rate_rps")) == _plain(r.get("rate_rps"))]
        ix = _num(r.get("interactivity_tok_s_user"))
        out.append(SpecSpeedup(
            point_id=str(r.get("point_id")), spec_method=r["_spec"], spec_tokens=_int(r.get("spec_tokens")),
            mean_acceptance_length=_num(r.get("spec_mean_acceptance_length")), interactivity_tok_s_user=ix,
            speedup_same_load=_ratio(_num(r.get("output_tok_s")), _num(same[0].get("output_tok_s")) if same else None),
            speedup_at_interactivity=_ratio(_num(r.get("output_tok_s_per_gpu")), _at(base, ix)),
        ))
    return out


def _at(base: list[dict[str, Any]], ix: float | None) -> float | None:
    """The baseline's output tok/s per GPU at interactivity `ix`, linear between measured points."""
    pts = sorted((x, y) for b in base if (x := _num(b.get("interactivity_tok_s_user"))) is not None
                 and (y := _num(b.get("output_tok_s_per_gpu"))) is not None)
    if ix is None or not pts or not pts[0][0] <= ix <= pts[-1][0]:
        return None
    for (x0, y0), (x1, y1) in zip(pts, pts[1:] + pts[-1:]):
        if x0 <= ix <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (ix - x0) / (x1 - x0)
    return None


def _workload(point_id: Any) -> str | None:
    try:
        return PointId.parse(str(point_id)).workload
    except ConfigError:  # an odd id from a store matches nothing
        return None


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if f == f else None  # NaN, <NA>: missing


def _int(v: Any) -> int | None:
    f = _num(v)
    return int(f) if f is not None else None


def _plain(v: Any) -> Any:
    """A cell comparable across rows: NaN and <NA> as None, numbers as floats."""
    if isinstance(v, str):
        return v
    return _num(v)


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None
