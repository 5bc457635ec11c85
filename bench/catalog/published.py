"""Published results: figures others measured (published.yaml), never this harness's data.

Each row is `source: published` with where it was read and what is uncertain; figures
keep the unit they were published in (the field name says which). Only `bench compare
--reference` reads them; the measured cost-model table never does (docs/published.md).

    from bench.catalog.published import load_published
    rows = load_published()          # [PublishedResult], validated against the catalog
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationError, model_validator

from bench.catalog.configbase import Strict, catalog_dir, describe_error, read_yaml
from bench.catalog.hardware import load_hardware
from bench.catalog.models import load_models
from bench.errors import ConfigError

PUBLISHED_FILE = "published.yaml"

Figure = Annotated[float, Field(strict=True, ge=0)] | None
FIGURES = ("output_tok_s", "output_tok_s_per_gpu", "tok_s", "tok_s_per_gpu", "j_per_output_token", "gpu_power_w",
           "median_itl_ms", "interactivity_tok_s_user", "usd_per_mtok_output", "tok_s_per_mw")


class PublishedResult(Strict):
    """One published figure set: its setting, its source and its figures as published."""

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9.-]*$")
    source: Literal["published"]
    publisher: str
    where: str  # where it was read (repository, file, date)
    model: str  # catalog key (models.yaml)
    model_as_published: str
    precision: str  # as published, lower case ("bf16", "nvfp4", "unverified (likely fp8)")
    hardware: str  # catalog id (hardware/*.yaml)
    hardware_as_published: str
    n_gpus: Annotated[int, Field(strict=True, ge=1)] | None = None
    engine: str | None = None
    workload: str
    load: str  # the published operating point ("max_num_seqs 8", "Offline scenario", "50 tok/s/user")
    max_num_seqs: Annotated[int, Field(strict=True, ge=1)] | None = None
    approximate: bool = False  # published as "about" / "~"
    as_published: str  # the row's figures, quoted
    notes: list[str] = Field(default_factory=list)  # what is uncertain or unverified
    recipe: str | None = None  # sweeps/anchors/ file that reproduces the setting
    output_tok_s: Figure = None  # output tokens per second, all GPUs of the system
    output_tok_s_per_gpu: Figure = None
    tok_s: Figure = None  # tokens per second as reported (MLPerf), all GPUs
    tok_s_per_gpu: Figure = None
    j_per_output_token: Figure = None  # GPU energy per output token, J
    gpu_power_w: Figure = None  # total over the GPUs used
    median_itl_ms: Figure = None  # median inter-token latency, ms
    interactivity_tok_s_user: Figure = None  # the published per-user speed of the point
    usd_per_mtok_output: Figure = None  # the publisher's $ per million output tokens
    tok_s_per_mw: Figure = None  # tokens per second per provisioned MW

    @model_validator(mode="after")
    def _has_a_figure(self) -> PublishedResult:
        if all(getattr(self, f) is None for f in FIGURES):
            raise ValueError("no figure")
        return self

    def figures(self) -> dict[str, float]:
        """The figures set on this row, by field name."""
        return {f: getattr(self, f) for f in FIGURES if getattr(self, f) is not None}


def load_published(path: str | Path | None = None) -> list[PublishedResult]:
    """Every row of published.yaml, validated; model and hardware must be in the catalog."""
    p = Path(path) if path else catalog_dir() / PUBLISHED_FILE
    try:
        mtime = p.stat().st_mtime_ns
    except FileNotFoundError:
        raise ConfigError(f"{p}: file not found") from None
    return list(_load(str(p.resolve()), mtime))


@lru_cache(maxsize=4)
def _load(path: str, _mtime: int) -> tuple[PublishedResult, ...]:
    name = Path(path).name
    raw = read_yaml(Path(path))
    if not isinstance(raw, list):
        raise ConfigError(f"{name}: expected a list of published results")
    models, hardware = load_models(), load_hardware()
    rows, seen = [], set()
    for i, item in enumerate(raw):
        label = item.get("id", f"#{i}") if isinstance(item, dict) else f"#{i}"
        try:
            row = PublishedResult.model_validate(item)
        except ValidationError as e:
            raise ConfigError(f"{name}: entry '{label}': {describe_error(e)}") from None
        if row.id in seen:
            raise ConfigError(f"{name}: entry '{row.id}' appears twice")
        if row.model not in models:
            raise ConfigError(f"{name}: entry '{row.id}': unknown model '{row.model}'")
        if row.hardware not in hardware:
            raise ConfigError(f"{name}: entry '{row.id}': unknown hardware '{row.hardware}'")
        seen.add(row.id)
        rows.append(row)
    return tuple(rows)
