"""The point id: `<config>_<workload>_<load>_r<repeat>[-retry<k>]`, a file-name-safe name of one
load point (its requests file is `requests/<point id>.parquet`). The one place that builds and
parses it: `PointId(...)` builds, `str()` writes, `PointId.parse()` reads.

    str(PointId("tiny-llama-1a2b3c4d", "in128-out64", "c4", 0))  # 'tiny-llama-1a2b3c4d_in128-out64_c4_r0'
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from bench.errors import ConfigError, one_line
from bench.plan.points import ConcurrencyLoad, LoadSpec, OfflineLoad, TraceLoad

_PART = re.compile(r"[A-Za-z0-9.-]+")  # what safe_id leaves: "_" only ever separates the parts
_ID = re.compile(r"(?P<config>[A-Za-z0-9.-]+)_(?P<workload>[A-Za-z0-9.-]+)_(?P<load>[A-Za-z0-9.-]+)"
                 r"_r(?P<repeat>\d+)(?:-retry(?P<retry>[1-9]\d*))?")
CAPACITY_PREFIX = "capacity-"  # a capacity search's probes: `capacity-<load tag>`


@dataclass(frozen=True)
class PointId:
    """One point's id: engine config id, workload tag, load tag, repeat (from 0) and retry (0: the
    first attempt; k > 0: a capacity probe's k-th retry after a failure)."""

    config: str
    workload: str
    load: str
    repeat: int = 0
    retry: int = 0

    def __post_init__(self) -> None:
        for name in ("config", "workload", "load"):
            if not _PART.fullmatch(getattr(self, name)):
                raise ConfigError(one_line(f"bad point id {name} {getattr(self, name)!r} (expected [A-Za-z0-9.-]+)"))
        if self.repeat < 0 or self.retry < 0:
            raise ConfigError(f"bad point id: repeat {self.repeat}, retry {self.retry} (expected >= 0)")

    def __str__(self) -> str:
        retry = f"-retry{self.retry}" if self.retry else ""
        return f"{self.config}_{self.workload}_{self.load}_r{self.repeat}{retry}"

    @classmethod
    def parse(cls, text: str) -> PointId:
        """The id written by `str()`; ConfigError (one line) for any other text."""
        m = _ID.fullmatch(text) if isinstance(text, str) else None
        if m is None:
            raise ConfigError(one_line(f"bad point id {text!r} (expected <config>_<workload>_<load>_r<repeat>)"))
        return cls(m["config"], m["workload"], m["load"], int(m["repeat"]), int(m["retry"] or 0))

    def probe(self, load: LoadSpec, repeat: int, retry: int = 0) -> PointId:
        """The id of a capacity probe at `load` for this point's config and workload."""
        return replace(self, load=CAPACITY_PREFIX + load_tag(load), repeat=repeat, retry=retry)


def load_tag(load: LoadSpec) -> str:
    """The load part of a point id: `c4`, `b8`, `rps2.5[-gamma0.5][-mc16]`, `trace[-mc16]`."""
    if isinstance(load, ConcurrencyLoad):
        return f"c{load.concurrency}"
    if isinstance(load, OfflineLoad):
        return f"b{load.batch}"
    if isinstance(load, TraceLoad):
        return "trace" + (f"-mc{load.max_concurrency}" if load.max_concurrency else "")
    tag = f"rps{load.rate_rps:g}"
    if load.arrival != "poisson" or load.burstiness != 1.0:
        tag += f"-{load.arrival}{load.burstiness:g}"
    return tag + (f"-mc{load.max_concurrency}" if load.max_concurrency else "")
