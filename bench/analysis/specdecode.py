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


@dataclass(frozen=True)
class _Point:
    """One row of the frame as the speed-up reads it."""

    key: tuple[Any, ...]  # SAME + the workload: rows that are the same configuration
    spec: str | None  # the speculative method; None: no speculation
    point_id: str
    spec_tokens: int | None
    acceptance_length: float | None
    load: tuple[Any, Any]  # (concurrency, rate_rps)
    interactivity: float | None
    output_tok_s: float | None
    output_tok_s_per_gpu: float | None


def _points(frame: pd.DataFrame) -> list[_Point]:
    """The frame's rows, each read once, by column (a column the frame lacks reads as missing)."""
    def col(name: str) -> list[Any]:
        return frame[name].tolist() if name in frame.columns else [None] * len(frame)

    same = [col(k) for k in SAME]
    ids, methods, tokens, lengths = col("point_id"), col("spec_method"), col("spec_tokens"), col("spec_mean_acceptance_length")
    conc, rate, ix = col("concurrency"), col("rate_rps"), col("interactivity_tok_s_user")
    out_s, out_gpu = col("output_tok_s"), col("output_tok_s_per_gpu")
    points = []
    for i in range(len(frame)):
        method = methods[i]
        points.append(_Point(
            key=(*(_plain(c[i]) for c in same), _workload(ids[i])),
            spec=method if isinstance(method, str) and method and method != "none" else None,
            point_id=str(ids[i]), spec_tokens=_int(tokens[i]), acceptance_length=_num(lengths[i]),
            load=(_plain(conc[i]), _plain(rate[i])), interactivity=_num(ix[i]),
            output_tok_s=_num(out_s[i]), output_tok_s_per_gpu=_num(out_gpu[i])))
    return points


def spec_speedup(frame: pd.DataFrame) -> list[SpecSpeedup]:
    """Every speculative row's speed-up over the rows of the same configuration and workload
    without speculation; rows without `spec_method` count as without speculation."""
    if frame.empty or "spec_method" not in frame.columns:
        return []
    points = _points(frame)
    out = []
    for p in points:
        if p.spec is None:
            continue
        base = [b for b in points if b.spec is None and b.key == p.key]
        same = [b for b in base if b.load == p.load]
        out.append(SpecSpeedup(
            point_id=p.point_id, spec_method=p.spec, spec_tokens=p.spec_tokens,
            mean_acceptance_length=p.acceptance_length, interactivity_tok_s_user=p.interactivity,
            speedup_same_load=_ratio(p.output_tok_s, same[0].output_tok_s if same else None),
            speedup_at_interactivity=_ratio(p.output_tok_s_per_gpu, _at(base, p.interactivity)),
        ))
    return out


def _at(base: list[_Point], ix: float | None) -> float | None:
    """The baseline's output tok/s per GPU at interactivity `ix`, linear between measured points."""
    pts = sorted((b.interactivity, b.output_tok_s_per_gpu) for b in base
                 if b.interactivity is not None and b.output_tok_s_per_gpu is not None)
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
