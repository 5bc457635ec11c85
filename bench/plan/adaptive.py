"""The adaptive point length (issue 22, docs/timing.md): the sweep's `adaptive_stop` section.

    adaptive_stop: {min_requests: 100, rel_half_width: 0.05}

Opt-in. A concurrency point stops launching requests once at least `min_requests` measured
requests have finished and the running `confidence` interval of its headline figure (output
tokens/s) is narrower than +-`rel_half_width` of it; otherwise it runs its planned
`n_requests` (the maximum). The rule and its arithmetic are bench.load.adaptive's.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class AdaptiveStop(BaseModel):
    """When a concurrency point may stop before its planned request count. Frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_requests: int = Field(default=100, ge=2, strict=True,
                              description="Measured requests before a stop is considered: validity's minimum "
                                          "for a stable p99 (bench.measure.validity).")
    rel_half_width: float = Field(default=0.05, gt=0, lt=1,
                                  description="Stop when the interval's half-width is below this share of the figure.")
    confidence: float = Field(default=0.95, gt=0.5, lt=1, description="The interval's confidence level.")
