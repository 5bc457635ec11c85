"""run.json's `provenance`: what produced a result (host, device, driver, engine and library
versions, engine arguments, environment), typed. bench.run.provenance collects it; the store's
rows and the reports read it by attribute. Keys an older or newer writer added are kept."""

from __future__ import annotations

from typing import Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field


class HostInfo(BaseModel):
    """The machine the harness ran on."""

    model_config = ConfigDict(extra="allow", frozen=True)
    hostname: str | None = None
    os: str | None = None
    python: str | None = None
    cpu: str | None = Field(default=None, description="CPU model name.")
    cpu_count: int | None = None
    memory_gib: float | None = Field(default=None, validation_alias=AliasChoices("memory_gib", "memory_gb"),
                                     description="Host memory (GiB; runs before 2026-11 named it memory_gb).")


class Provenance(BaseModel):
    """Environment of a run, secrets redacted (bench.redact) before it is written."""

    model_config = ConfigDict(extra="allow", frozen=True)
    captured_utc: str | None = Field(default=None, description="ISO 8601 UTC.")
    host: HostInfo = Field(default_factory=HostInfo)
    device: dict[str, Any] = Field(default_factory=dict, description="The detected device (bench.catalog.device.Detected).")
    device_name: str | None = None
    driver_version: str | None = None
    engine_version: str | None = Field(default=None, description="The run-wide engine version (bench.run.provenance).")
    engine_versions: dict[str, str] = Field(default_factory=dict, description="Engine config id -> its engine's version.")
    versions: dict[str, str] = Field(default_factory=dict, description="Installed package -> version.")
    engine_args: dict[str, Any] = Field(default_factory=dict)
    env: dict[str, Any] = Field(default_factory=dict, description="VLLM_*, CUDA_*, NCCL_*, ... variables, redacted.")
    argv: list[str] = Field(default_factory=list)
    manifest_sha256: str | None = Field(default=None, description="Hash of what makes the run reproducible.")
