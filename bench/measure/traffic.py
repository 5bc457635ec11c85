"""Figures of a point's traffic mix, beside its totals: per LoRA adapter (a `lora` workload) and
the share of structured answers that follow their schema (a `structured` workload). Pure
functions over the request records; no I/O.

- Per adapter: the point's metrics (bench.measure.metrics.summarize) over the measured
  requests sent to that adapter, on the point's own window: tokens are counted where they
  were produced inside it, latencies over its successful requests. `base` is the base model.
- Structured output: every successful measured request's answer (its content, or its tool
  call's arguments) parsed as JSON and checked against the workload's schema with the
  `jsonschema` package; a tool call must also name the asked tool. `valid_share` = valid /
  checked. A failed request is an error (in the error rate), not an invalid answer.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from pydantic import Field

from bench.errors import one_line
from bench.load.records import RequestRecord
from bench.measure.groups import Group
from bench.measure.metrics import summarize
from bench.plan.lora import BASE
from bench.plan.points import LoraWorkload, StructuredWorkload


class AdapterFigures(Group):
    """One adapter's share of a LoRA point (`base`: the base model), over the point's window."""

    adapter: str = Field(description="The adapter's served name, or base (the base model).")
    share: float = Field(description="Its share of the measured requests (0-1).")
    n_requests: int = Field(description="Measured requests sent to it.")
    n_failed: int = Field(description="Of those, failed.")
    window_output_tokens: int = Field(description="Its output tokens produced inside the window (tokens).")
    output_tok_s: float | None = Field(None, description="Its output tokens per second over the window (tokens/s).")
    output_tokens_total: int = Field(description="Its measured requests' output tokens (tokens).")
    input_tokens_total: int = Field(description="Its measured requests' prompt tokens (tokens).")
    ttft_s_p50: float | None = Field(None, description="Median time to first token (s).")
    ttft_s_p99: float | None = Field(None, description="p99 time to first token (s).")
    tpot_s_p50: float | None = Field(None, description="Median time per output token (s).")
    tpot_s_p99: float | None = Field(None, description="p99 time per output token (s).")
    e2e_s_p50: float | None = Field(None, description="Median end-to-end latency (s).")
    e2e_s_p99: float | None = Field(None, description="p99 end-to-end latency (s).")


class StructuredFigures(Group):
    """How many structured answers of a point parse and follow their JSON schema."""

    mode: str = Field(description="json_schema (response_format) or tool_call (a named tool).")
    n_checked: int = Field(description="Successful measured requests whose answer was checked.")
    n_valid: int = Field(description="Answers that parse as JSON and follow the schema (and name the tool).")
    valid_share: float | None = Field(None, description="n_valid / n_checked (0-1); None: nothing checked.")
    first_invalid: str | None = Field(None, description="Why the first invalid answer is invalid (one line).")


def adapter_figures(records: Sequence[RequestRecord], window: tuple[float, float] | None,
                    names: Sequence[str]) -> list[AdapterFigures]:
    """Per name of `names` (adapters and base, the mix's order), its measured requests' figures."""
    meas = [r for r in records if r.phase == "measured"]
    out = []
    for name in names:
        mine = [r for r in meas if (r.model or BASE) == name]
        m = summarize(mine, window, 1)
        out.append(AdapterFigures(
            adapter=name, share=len(mine) / len(meas) if meas else 0.0, n_requests=len(mine),
            n_failed=m.n_failed, window_output_tokens=m.window_output_tokens, output_tok_s=m.output_tok_s,
            output_tokens_total=m.output_tokens_total, input_tokens_total=m.input_tokens_total,
            ttft_s_p50=m.ttft_s_p50, ttft_s_p99=m.ttft_s_p99, tpot_s_p50=m.tpot_s_p50, tpot_s_p99=m.tpot_s_p99,
            e2e_s_p50=m.e2e_s_p50, e2e_s_p99=m.e2e_s_p99))
    return out


def answer_problem(answer: str | None, tool_name: str | None, spec: StructuredWorkload, validator: Any) -> str | None:
    """Why one answer does not meet `spec` (not JSON, against the schema, another tool); None when it does."""
    if spec.mode == "tool_call" and tool_name != spec.tool_name:
        return f"tool call names {tool_name!r}, not {spec.tool_name!r}"
    try:
        value = json.loads(answer or "")
    except ValueError as e:
        return f"not JSON ({e}): {(answer or '')[:80]!r}"
    error = next(iter(validator.iter_errors(value)), None)
    return None if error is None else f"against the schema: {error.message}"


def structured_figures(records: Sequence[RequestRecord], spec: StructuredWorkload) -> StructuredFigures:
    """The parse share of the successful measured requests' answers."""
    from jsonschema.validators import validator_for

    validator = validator_for(spec.json_schema)(spec.json_schema)
    checked = [r for r in records if r.phase == "measured" and r.ok]
    problems = [answer_problem(r.answer, r.tool_name, spec, validator) for r in checked]
    bad = [p for p in problems if p is not None]
    return StructuredFigures(mode=spec.mode, n_checked=len(checked), n_valid=len(checked) - len(bad),
                             valid_share=(len(checked) - len(bad)) / len(checked) if checked else None,
                             first_invalid=one_line(bad[0]) if bad else None)


def traffic_figures(workload: Any, records: Sequence[RequestRecord], window: tuple[float, float] | None
                    ) -> tuple[list[AdapterFigures] | None, StructuredFigures | None]:
    """(per-adapter figures, structured-output figures) of a point's workload spec; None where
    the workload has no such traffic."""
    adapters = adapter_figures(records, window, list(workload.mix)) if isinstance(workload, LoraWorkload) else None
    inner = workload.requests if isinstance(workload, LoraWorkload) else workload
    structured = structured_figures(records, inner) if isinstance(inner, StructuredWorkload) else None
    return adapters, structured


def wants_answers(workload: Any) -> bool:
    """Does a point of `workload` need each answer's text kept (structured output)?"""
    inner = workload.requests if isinstance(workload, LoraWorkload) else workload
    return isinstance(inner, StructuredWorkload)
