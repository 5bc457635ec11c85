"""Speculative decoding of one point: acceptance from the server's counter deltas, and whether
the workload gives the acceptance a meaning.

    spec = spec_decode_figures(window_deltas, point_deltas)   # SpecDecode | None
    spec.acceptance_rate, spec.mean_acceptance_length, spec.per_position_acceptance
    spec_workload_problem(point.workload)                      # a validity reason, or None

The definitions are vLLM's (vllm/v1/spec_decode/metrics.py, SpecDecodingProm; the same in
vllm/benchmarks/serve.py): acceptance rate = accepted / draft tokens; mean acceptance length =
1 + accepted / drafts (tokens per target-model step, the bonus token included); per-position
acceptance[k] = accepted at draft position k / drafts.
"""

from __future__ import annotations

from typing import Any, Literal

from bench.engines.vllm_metrics import SPEC_POS_PREFIX
from bench.measure.groups import Group, _f

# Workload kinds whose prompts are real text a model (and an n-gram drafter) can continue.
# random and shared_prefix prompts are random token ids; trace files carry lengths (and hash
# ids) only, so bench fills them with random tokens; synthetic sessions are random words.
TEXT_WORKLOADS = ("file",)


class SpecDecode(Group):
    """Speculative decoding over the point (vLLM's spec_decode counters)."""

    interval: Literal["window", "point"] | None = _f(
        "What the counter deltas cover: window (the /metrics samples bracketing the measurement window, up to "
        "one scrape interval wider) or point (before and after the point, warm-up included: no samples bracketed it).")
    drafts: float | None = _f("Drafts proposed: target-model steps that verified a draft (drafts).")
    draft_tokens: float | None = _f("Tokens drafted (tokens).")
    accepted_tokens: float | None = _f("Drafted tokens the target model accepted (tokens).")
    acceptance_rate: float | None = _f("accepted_tokens / draft_tokens (fraction); None: nothing drafted.",
                                       label="draft acceptance rate", short="accept")
    mean_acceptance_length: float | None = _f(
        "1 + accepted_tokens / drafts: tokens produced per target-model step, the bonus token included (tokens); "
        "None: no draft.", label="mean acceptance length (tokens/step)", short="accept len")
    per_position_acceptance: list[float] | None = _f(
        "Per draft position k (0-based): accepted at k / drafts (fraction); falls with k.")


def spec_decode_figures(window: dict[str, float] | None, point: dict[str, float] | None) -> SpecDecode | None:
    """The figures from the window's spec_* counter deltas (bench.telemetry.server_metrics), else
    the point's (`counter_delta`); None when neither holds a draft counter (no speculation)."""
    for interval, deltas in (("window", window), ("point", point)):
        if deltas and deltas.get("spec_drafts") is not None:
            return _figures(interval, deltas)
    return None


def _figures(interval: Any, d: dict[str, float]) -> SpecDecode:
    drafts, drafted, accepted = d.get("spec_drafts"), d.get("spec_draft_tokens"), d.get("spec_accepted_tokens")
    positions = sorted(int(k[len(SPEC_POS_PREFIX):]) for k in d if k.startswith(SPEC_POS_PREFIX))
    per_pos = ([d[f"{SPEC_POS_PREFIX}{k}"] / drafts for k in range(positions[-1] + 1) if f"{SPEC_POS_PREFIX}{k}" in d]
               if positions and drafts else None)
    return SpecDecode(
        interval=interval, drafts=drafts, draft_tokens=drafted, accepted_tokens=accepted,
        acceptance_rate=accepted / drafted if accepted is not None and drafted else None,
        mean_acceptance_length=1.0 + accepted / drafts if accepted is not None and drafts else None,
        per_position_acceptance=per_pos,
    )


def spec_workload_problem(workload: Any) -> str | None:
    """Why a speculative-decoding point's acceptance (and so its speed-up) says nothing of real
    traffic on `workload` (a plan workload spec); None for real-text prompts. A sessions
    workload read from a file counts as text; synthetic sessions do not."""
    kind = getattr(workload, "kind", None)
    if kind in TEXT_WORKLOADS or (kind == "sessions" and getattr(workload, "path", None)):
        return None
    return (f"speculative decoding measured on a {kind or 'random'}-token workload: draft acceptance (and the "
            "speed-up) on random tokens says nothing of real text; use a prompt file (kind: file)")
