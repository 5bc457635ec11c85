"""The accuracy setting of a sweep or run (docs/accuracy.md): which gates run beside the
performance points. Sweep key `accuracy:`, CLI `--accuracy gsm8k|agreement|off|TASK`.

    AccuracySettings.model_validate("gsm8k")      # mode task, task gsm8k
    AccuracySettings.model_validate({"task": "bench_arith", "include_path": "tasks/", "limit": 50})

Integrity (layer 3) is not a setting: every perf point gets it (bench.measure.integrity).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# The model's reference precision: agreement and the paired task test compare against it.
REFERENCE_PRECISION = "bf16"
# Questions per lm-eval task, for `bench plan`'s estimate (GSM8K: the 1,319 test questions).
TASK_QUESTIONS = {"gsm8k": 1319}
# The estimate's assumptions, stated: output tokens per GSM8K answer (greedy, 5-shot, an 8B
# instruct model), lm-eval's concurrent requests, and one stream's decode rate on a data-centre GPU.
EST_OUTPUT_TOKENS_PER_QUESTION = 150
EST_STREAM_TOK_S = 60.0


class AccuracySettings(BaseModel):
    """mode: task (lm-eval `task`, with the agreement too), agreement (default), or off.

    include_path: a folder of local lm-eval task YAMLs (no download); limit: the first N
    questions; num_fewshot: None keeps the task's; chat: the chat endpoint and template;
    drop_tolerance: the share of questions a precision may lose against the reference
    before a significant drop fails the gate; num_concurrent: lm-eval's parallel requests."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    mode: Literal["task", "agreement", "off"] = "agreement"
    task: str = "gsm8k"
    include_path: str | None = None
    limit: int | None = Field(default=None, gt=0)
    num_fewshot: int | None = Field(default=None, ge=0)
    chat: bool = False
    drop_tolerance: float = Field(default=0.02, ge=0, le=1)
    num_concurrent: int = Field(default=8, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _from_word(cls, data: Any) -> Any:
        """A word: off, agreement, or a task name (gsm8k, or any lm-eval task)."""
        if isinstance(data, str):
            word = data.strip()
            if not word:
                raise ValueError("accuracy: give gsm8k, agreement, off or an lm-eval task name")
            return {"mode": word} if word in ("off", "agreement") else {"mode": "task", "task": word}
        if isinstance(data, dict) and "task" in data and "mode" not in data:
            return {**data, "mode": "task"}
        return data

    @property
    def runs_task(self) -> bool:
        return self.mode == "task"

    @property
    def runs_agreement(self) -> bool:
        return self.mode in ("task", "agreement")

    def describe(self) -> str:
        """One line for `bench plan`."""
        if self.mode == "off":
            return "accuracy: off (integrity checks on every point still run)"
        if self.mode == "agreement":
            return (f"accuracy: agreement with the {REFERENCE_PRECISION} configuration of each model "
                    "(8 fixed prompts, seconds); integrity on every point")
        return f"accuracy: {self.task} + agreement; integrity on every point"

    def estimate_s(self) -> float | None:
        """Rough seconds of the task gate per configuration on a data-centre GPU (None: unknown
        question count). Assumptions in the module constants; CPU runs take far longer."""
        if not self.runs_task:
            return 0.0
        n = self.limit or TASK_QUESTIONS.get(self.task)
        if n is None:
            return None
        return n * EST_OUTPUT_TOKENS_PER_QUESTION / (self.num_concurrent * EST_STREAM_TOK_S)
