"""The `lora` block of a sweep: the LoRA adapters one engine serves beside its base model.

    lora:
      adapters:
        - {name: sql, rank: 8}                 # random weights, made locally (bench.catalog.lora)
        - {name: chat, rank: 16, path: /adapters/chat}   # a real adapter folder (PEFT layout)
      max_loras: 2          # adapters in one batch (vLLM --max-loras); default: all of them
      max_lora_rank: 16     # vLLM --max-lora-rank; default: the largest adapter rank

A point sends a weighted mix of these adapters and the base model (a `lora` workload,
bench.plan.points.LoraWorkload): each request's `model` names its adapter.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from bench.catalog.lora import LORA_RANKS

BASE = "base"  # the mix's name for the base model (no adapter): reserved, never an adapter's name
# File-name and point-id safe ("_" separates a point id's parts), and `name=path` safe on vLLM's command line.
AdapterName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9.-]{0,63}$")]


class AdapterSpec(BaseModel):
    """One adapter: its served name, rank and where its weights are (None: random, made locally)."""

    model_config = ConfigDict(extra="forbid")

    name: AdapterName = Field(description="Served name: a request's `model` field names it.")
    rank: int = Field(8, strict=True, description=f"LoRA rank r (one of {', '.join(map(str, LORA_RANKS))}).")
    path: str | None = Field(None, description="A PEFT adapter folder; None: random weights made locally "
                                               "(bench.catalog.lora; dummy-weight models only).")
    seed: int = Field(0, strict=True, description="RNG seed of a random adapter's weights.")

    @model_validator(mode="after")
    def _check(self) -> AdapterSpec:
        if self.name == BASE:
            raise ValueError(f"adapter name '{BASE}' is reserved for the base model")
        if self.rank not in LORA_RANKS:
            raise ValueError(f"rank {self.rank} is not one vLLM accepts ({', '.join(map(str, LORA_RANKS))})")
        return self


class LoraConfig(BaseModel):
    """The adapters an engine serves (vLLM `--enable-lora --max-loras --max-lora-rank --lora-modules`)."""

    model_config = ConfigDict(extra="forbid")

    adapters: list[AdapterSpec] = Field(min_length=1, description="Adapters served beside the base model.")
    max_loras: int | None = Field(None, strict=True, ge=1, description="Adapters in one batch; None: all of them.")
    max_lora_rank: int | None = Field(None, strict=True, description="Largest rank served; None: the adapters' largest.")

    @model_validator(mode="after")
    def _check(self) -> LoraConfig:
        names = [a.name for a in self.adapters]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"adapter {', '.join(twice)} listed twice")
        if self.max_lora_rank is not None:
            if self.max_lora_rank not in LORA_RANKS:
                raise ValueError(f"max_lora_rank {self.max_lora_rank} is not one vLLM accepts "
                                 f"({', '.join(map(str, LORA_RANKS))})")
            over = [a.name for a in self.adapters if a.rank > self.max_lora_rank]
            if over:
                raise ValueError(f"adapter {', '.join(over)} has a rank above max_lora_rank {self.max_lora_rank}")
        return self

    def names(self) -> list[str]:
        return [a.name for a in self.adapters]

    def launch_args(self, paths: dict[str, str]) -> dict[str, Any]:
        """vLLM's engine arguments for these adapters, `paths` giving each adapter's folder."""
        return {"enable_lora": True, "max_loras": self.max_loras or len(self.adapters),
                "max_lora_rank": self.max_lora_rank or max(a.rank for a in self.adapters),
                "lora_modules": [f"{a.name}={paths[a.name]}" for a in self.adapters]}


def workload_problem(workload: Any, lora: LoraConfig | None, engine: str, endpoint: str) -> str | None:
    """Why a sweep cannot run `workload` (a bench.plan.points spec) with its `lora` block, engine
    and endpoint; None when it can: a LoRA mix names `base` or an adapter the engine serves, on
    vLLM; a structured workload goes through the chat endpoint."""
    from bench.plan.points import LoraWorkload, StructuredWorkload

    inner = workload.requests if isinstance(workload, LoraWorkload) else workload
    if isinstance(inner, StructuredWorkload) and endpoint != "chat":
        return f"workload {workload.tag()}: structured output needs `endpoint: chat`"
    if not isinstance(workload, LoraWorkload):
        return None
    if lora is None or engine != "vllm":
        return f"workload {workload.tag()}: a LoRA mix needs engine vllm and a `lora` block serving its adapters"
    unknown = [n for n in workload.mix if n != BASE and n not in lora.names()]
    if unknown:
        return (f"workload {workload.tag()}: mix names adapter {', '.join(unknown)} the `lora` block does not serve "
                f"(served: {', '.join([BASE, *lora.names()])})")
    return None
