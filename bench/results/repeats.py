"""A run's repeats: the valid, ok points that are repeats of one load point (the same point id
but for its repeat index), and for each headline figure n, mean, sd, CV and the Student-t 95%
interval over them (bench.measure.intervals). Pure: a RunResult in, frozen summaries out.

    for s in repeat_summaries(run):             # one per load point, in plan order
        s.point, s.n, s.figures["tok_s_per_gpu"]    # 'tiny-llama-..._c4', 3, Interval(...)

Every repeat's per-request records stay in its own requests file; nothing here drops one.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from bench.errors import ConfigError
from bench.measure.intervals import Interval, summarize
from bench.plan.pointid import PointId

# The headline figures, each with its token basis in its name: (key, where it is read, label).
HEADLINE = (
    ("tok_s_per_gpu", "metrics", "tok/s per GPU (input + output)"),
    ("output_tok_s", "metrics", "output tok/s"),
    ("j_per_token", "energy", "J per token (input + output)"),
    ("j_per_output_token", "energy", "J per output token"),
    ("usd_per_mtok_output", "cost", "$ per Mtok output"),
    ("ttft_s_p50", "metrics", "TTFT p50"),
    ("ttft_s_p99", "metrics", "TTFT p99"),
    ("tpot_s_p50", "metrics", "TPOT p50"),
    ("tpot_s_p99", "metrics", "TPOT p99"),
    ("goodput_output_tok_s", "metrics", "goodput (output tok/s)"),
)
HEADLINE_KEYS = tuple(k for k, _, _ in HEADLINE)


@dataclass(frozen=True)
class RepeatSummary:
    """One load point over its repeats: `point` is its id without the repeat
    (`<config>_<workload>_<load>`), `n` the valid repeats, `n_planned` all of them,
    `figures` the Interval of each headline figure measured in at least one repeat."""

    point: str
    n: int
    n_planned: int
    point_ids: tuple[str, ...]
    figures: dict[str, Interval]
    cost_scenario: str | None = None  # the scenario of usd_per_mtok_output
    invalid: bool = False  # no repeat was valid: the figures are of invalid (ok) points, never to be quoted


def repeat_key(point_id: str) -> str:
    """The point id without its repeat and retry: what a point's repeats share."""
    try:
        pid = PointId.parse(point_id)
    except ConfigError:  # an id no plan builds: its own group
        return point_id
    return str(replace(pid, repeat=0, retry=0)).rsplit("_r", 1)[0]


def repeat_summaries(run: Any, scenario: str | None = None) -> list[RepeatSummary]:
    """The RepeatSummary of every load point of `run` (a RunResult) over its valid ok points
    (none valid: over its ok points, `invalid` set). $/Mtok is read under `scenario` (None: the first scenario with a figure)."""
    groups: dict[str, list[Any]] = {}
    for p in run.points:
        groups.setdefault(repeat_key(p.point_id), []).append(p)
    out = []
    for key, points in groups.items():
        good = [p for p in points if p.status == "ok" and p.valid]
        invalid = not good  # no valid repeat: the ok ones are summarised, labelled invalid
        good = good or [p for p in points if p.status == "ok"]
        if not good:
            continue
        name = scenario or next((n for p in good for n, c in p.cost.items() if c.usd_per_mtok_output is not None), None)
        figures = {}
        for fig, where, _ in HEADLINE:
            iv = summarize(_value(p, fig, where, name) for p in good)
            if iv is not None:
                figures[fig] = iv
        out.append(RepeatSummary(key, len(good), len(points), tuple(p.point_id for p in good), figures, name,
                                 invalid))
    return out


def _value(point: Any, key: str, where: str, scenario: str | None) -> float | None:
    if where == "cost":
        cost = point.cost.get(scenario) if scenario else None
        return getattr(cost, key, None) if cost is not None else None
    group = getattr(point, where, None)
    return getattr(group, key, None) if group is not None else None
