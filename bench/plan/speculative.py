"""The `speculative` block of an engine configuration: speculative decoding, typed.

    speculative: {method: ngram, num_speculative_tokens: 3, prompt_lookup_max: 3}
    speculative: {method: eagle3, num_speculative_tokens: 3, model: yuhuili/EAGLE3-LLaMA3.1-Instruct-8B}

`SpeculativeSpec.vllm_config()` is the JSON vLLM's `--speculative-config` takes; the keys are
the field names of vLLM 0.32's `vllm.config.SpeculativeConfig` (`method`,
`num_speculative_tokens`, `model`, `prompt_lookup_max`, `prompt_lookup_min`,
`draft_tensor_parallel_size`). bench's method names are the issue's: `mtp` is vLLM's generic
multi-token-prediction method (DeepSeek's MTP layers; vLLM maps a model's own MTP type from it).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, model_validator

SpecMethod = Literal["ngram", "eagle", "eagle3", "mtp", "draft_model"]
SPEC_METHODS: tuple[str, ...] = ("ngram", "eagle", "eagle3", "mtp", "draft_model")
NEEDS_DRAFT_MODEL = ("eagle", "eagle3", "draft_model")  # methods that read a second checkpoint


class SpeculativeSpec(BaseModel):
    """Speculative decoding of one engine configuration (frozen; unknown keys refused)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: SpecMethod
    num_speculative_tokens: PositiveInt = Field(description="Draft tokens proposed per step (tokens).")
    model: str | None = Field(None, description="Draft model or EAGLE head: HF repo id or local path "
                              "(eagle, eagle3, draft_model); None for ngram and mtp.")
    prompt_lookup_max: PositiveInt | None = Field(None, description="ngram: longest n-gram matched in the prompt (tokens).")
    prompt_lookup_min: PositiveInt | None = Field(None, description="ngram: shortest n-gram matched (tokens).")
    draft_tensor_parallel_size: PositiveInt | None = Field(None, description="TP of the draft model; None: the engine's.")

    @model_validator(mode="after")
    def _consistent(self) -> SpeculativeSpec:
        if self.method in NEEDS_DRAFT_MODEL and not self.model:
            raise ValueError(f"speculative method '{self.method}' needs `model` (the draft model or EAGLE head)")
        if self.method not in NEEDS_DRAFT_MODEL and self.model:
            raise ValueError(f"speculative method '{self.method}' takes no `model`")
        if self.method != "ngram" and (self.prompt_lookup_max or self.prompt_lookup_min):
            raise ValueError("prompt_lookup_max/min are for method 'ngram'")
        lo, hi = self.prompt_lookup_min, self.prompt_lookup_max
        if lo is not None and hi is not None and lo > hi:
            raise ValueError(f"prompt_lookup_min {lo} > prompt_lookup_max {hi}")
        return self

    def vllm_config(self) -> dict[str, Any]:
        """vLLM's `--speculative-config` (a dict; the server's argv carries it as JSON)."""
        return self.model_dump(exclude_none=True)

    def label(self) -> str:
        """e.g. "ngram-3" (method and draft tokens per step): the table's `spec_method` column."""
        return f"{self.method}-{self.num_speculative_tokens}"
