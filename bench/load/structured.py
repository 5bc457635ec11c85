"""Structured-output requests: chat prompts whose answer a JSON schema constrains, sent as
`response_format: {type: json_schema}` or as a named tool call (`tools` + `tool_choice`).

vLLM 0.32 serves both through its structured-output backend (xgrammar by default, guidance
as the fallback); a named `tool_choice` still needs the server started with a
`--tool-call-parser` (HTTP 400 without one, seen on vLLM CPU). The answer ends
when its JSON does (`ignore_eos` off for these requests: with it the server would keep
sampling past the closed grammar), so `max_tokens` is a bound, not the length asked.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bench.load.tokens import words
from bench.load.types import Prompt
from bench.plan.points import StructuredWorkload


def request_fields(spec: StructuredWorkload) -> dict[str, Any]:
    """The body fields that ask for `spec`'s constraint (merged into each chat request)."""
    if spec.mode == "json_schema":
        return {"response_format": {"type": "json_schema",
                                    "json_schema": {"name": spec.tool_name, "schema": spec.json_schema, "strict": True}},
                "ignore_eos": False}
    tool = {"type": "function", "function": {"name": spec.tool_name, "description": "Record the answer.",
                                             "parameters": spec.json_schema}}
    return {"tools": [tool], "tool_choice": {"type": "function", "function": {"name": spec.tool_name}},
            "ignore_eos": False}


class StructuredPrompts:
    """`prompt_len` random words per request (seeded), each asking for `spec`'s structured answer."""

    def __init__(self, spec: StructuredWorkload, seed: int = 0):
        self.spec, self.seed = spec, seed
        self.fields = request_fields(spec)

    def prompts(self, n: int) -> list[Prompt]:
        rng = np.random.default_rng(self.seed)
        ask = "Answer with a tool call." if self.spec.mode == "tool_call" else "Answer in JSON."
        return [Prompt(self.spec.prompt_len, self.spec.output_len, text=f"{words(rng, self.spec.prompt_len)} {ask}",
                       extra=self.fields) for _ in range(n)]

    def describe(self) -> dict[str, Any]:
        return {"kind": "structured", "mode": self.spec.mode, "json_schema": self.spec.json_schema,
                "tool_name": self.spec.tool_name, "prompt_len": self.spec.prompt_len,
                "output_len": self.spec.output_len, "seed": self.seed}
