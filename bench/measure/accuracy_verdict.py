"""The stored accuracy verdict of one engine configuration (docs/accuracy.md): a frozen,
typed AccuracyResult, and how a task score or an agreement becomes one. Pure.

    task_verdict("bench_arith", per_question, floor=0.9, floor_source="...")            # layer 1
    task_verdict(..., reference=ReferenceScore("cfgA", "bf16", ref_per_question), tolerance=0.02)
    agreement_verdict(Agreement(...), reference_config_id="cfgA", reference_precision="fp32")  # layer 2
    not_run("task", "gsm8k", "task data for 'gsm8k' cannot be fetched: huggingface.co unreachable")

run.json keeps one per engine configuration (`RunResult.accuracy`, keyed by its id); the
cost-model table carries it as columns (bench.store.accuracy_rows).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from bench.measure.accuracy import Agreement, paired_drop, wilson_lower

# A candidate precision may lose this share of questions against the reference before a
# significant drop fails the gate (2 points on GSM8K: about the run-to-run spread of a
# greedy 1,319-question score across engine versions).
DEFAULT_DROP_TOLERANCE = 0.02

AccuracyKind = Literal["task", "agreement"]


class ReferenceComparison(BaseModel):
    """This configuration against the model's reference precision on the same questions or positions."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    reference_config_id: str = Field(description="The engine configuration the reference ran on.")
    reference_precision: str | None = Field(default=None, description="Its precision label (e.g. bf16).")
    n: int = Field(description="Paired questions (task) or aligned token positions (agreement).")
    reference_score: float | None = Field(default=None, description="Task: the reference's share correct (0..1).")
    discordant_ref_only: int | None = Field(default=None, description="Task: right under the reference only (McNemar b).")
    discordant_cand_only: int | None = Field(default=None, description="Task: right under this configuration only (McNemar c).")
    drop: float | None = Field(default=None, description="Task: (b - c) / n, the share of questions lost (0..1).")
    p_one_sided: float | None = Field(default=None, description="Task: exact McNemar p of a drop this large by chance.")
    tolerance: float | None = Field(default=None, description="Task: the drop allowed before a significant one fails.")
    top1_agreement: float | None = Field(default=None, description="Agreement: share of positions with the same top token (0..1).")
    mean_kl_nats: float | None = Field(default=None, description="Agreement: mean KL(reference || this) over top-k + rest (nats).")


class AccuracyResult(BaseModel):
    """Accuracy of one engine configuration: one gate's figures and verdict.

    passed: True / False for a gate that ran; None when it did not run or has no limit to judge by
    (reason says which)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: AccuracyKind = Field(description="task (lm-eval) or agreement (top-k logprobs against the reference).")
    task: str | None = Field(default=None, description="The lm-eval task name (task), or the prompt set (agreement).")
    n: int | None = Field(default=None, description="Questions scored, or token positions compared.")
    score: float | None = Field(default=None, description="Share correct (task) or top-1 agreement (agreement), 0..1.")
    wilson_lower_95: float | None = Field(default=None, description="Task: one-sided 95% Wilson lower bound of score.")
    floor: float | None = Field(default=None, description="Task: the model's floor from models.yaml (0..1).")
    floor_source: str | None = Field(default=None, description="Where the floor comes from.")
    passed: bool | None = Field(default=None, description="The gate's verdict; None: not run or nothing to judge by.")
    reason: str = Field(description="One line: why it passed, failed or did not run.")
    reference: ReferenceComparison | None = Field(default=None, description="Against the reference precision.")
    seconds: float | None = Field(default=None, description="Wall time of the evaluation (s).")
    per_question: list[bool] | None = Field(default=None, description="Task: right or wrong per question, in order "
                                                                       "(the paired test of a later candidate reads it).")

    @property
    def status(self) -> str:
        """A person's word for the verdict: passed, failed, not run, or recorded (figures, no verdict)."""
        if self.passed is not None:
            return "passed" if self.passed else "failed"
        return "not run" if self.n is None else "recorded"


@dataclass(frozen=True)
class ReferenceScore:
    """The reference precision's per-question outcome on the same task and prompt."""

    config_id: str
    precision: str | None
    per_question: Sequence[bool]


def not_run(kind: AccuracyKind, task: str | None, reason: str) -> AccuracyResult:
    """A gate that could not run: `accuracy: not run` with its one-line reason."""
    return AccuracyResult(kind=kind, task=task, reason=reason)


def task_verdict(task: str, per_question: Sequence[bool], *, floor: float | None = None,
                 floor_source: str | None = None, reference: ReferenceScore | None = None,
                 tolerance: float = DEFAULT_DROP_TOLERANCE, seconds: float | None = None) -> AccuracyResult:
    """Layer 1's verdict: passes when the Wilson lower bound clears `floor` and, with a
    `reference`, the paired McNemar test finds no significant drop beyond `tolerance`."""
    n, correct = len(per_question), sum(map(bool, per_question))
    score = correct / n if n else 0.0
    lower = wilson_lower(correct, n)
    why: list[str] = []
    verdicts: list[bool] = []
    if floor is not None:
        ok = lower >= floor
        verdicts.append(ok)
        why.append(f"{task} {correct}/{n} = {score:.3f}, 95% lower bound {lower:.3f} "
                   f"{'clears' if ok else 'below'} the floor {floor:.3f}")
    comparison = None
    if reference is not None and len(reference.per_question) == n:
        d = paired_drop(reference.per_question, per_question)
        significant = d.significant_beyond(tolerance)
        verdicts.append(not significant)
        ref_score = sum(map(bool, reference.per_question)) / n if n else 0.0
        why.append(f"against {reference.precision or reference.config_id} ({ref_score:.3f}): drop {d.drop:+.3f}, "
                   f"McNemar p {d.p_one_sided:.3g}{' (significant beyond ' + format(tolerance, '.3f') + ')' if significant else ''}")
        comparison = ReferenceComparison(
            reference_config_id=reference.config_id, reference_precision=reference.precision, n=n,
            reference_score=ref_score, discordant_ref_only=d.b, discordant_cand_only=d.c, drop=d.drop,
            p_one_sided=d.p_one_sided, tolerance=tolerance)
    elif reference is not None:
        why.append(f"reference {reference.config_id} scored {len(reference.per_question)} questions, "
                   f"this one {n}: no paired test")
    if not verdicts:
        why.append(f"{task} {correct}/{n} = {score:.3f}; no floor for '{task}' in models.yaml and no reference: no verdict")
    passed = all(verdicts) if verdicts else None
    return AccuracyResult(kind="task", task=task, n=n, score=score, wilson_lower_95=lower, floor=floor,
                          floor_source=floor_source, passed=passed, reason="; ".join(why), reference=comparison,
                          seconds=seconds, per_question=[bool(x) for x in per_question])


def agreement_verdict(a: Agreement, *, prompt_set: str, reference_config_id: str,
                      reference_precision: str | None, seconds: float | None = None) -> AccuracyResult:
    """Layer 2's record: top-1 agreement and mean KL against the reference. Not a gate (no
    published limit to judge random or real weights by): `passed` stays None."""
    return AccuracyResult(
        kind="agreement", task=prompt_set, n=a.n_positions, score=a.top1, passed=None, seconds=seconds,
        reason=(f"against {reference_precision or reference_config_id}: top-1 agreement {a.top1:.3f}, "
                f"mean KL {a.mean_kl_nats:.4g} nats over {a.n_positions} positions"),
        reference=ReferenceComparison(reference_config_id=reference_config_id, reference_precision=reference_precision,
                                      n=a.n_positions, top1_agreement=a.top1, mean_kl_nats=a.mean_kl_nats))
