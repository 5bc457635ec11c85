"""The accuracy gate in a run (docs/accuracy.md): while each configuration's engine is up, its
raw outcomes go to files beside run.json; once every configuration has run, the verdicts.

    probe_config(plan, cfg, engine, run_dir)     # accuracy/<config>.task.json, .topk.json
    finish_accuracy(plan, run_dir)               # {config_id: [AccuracyResult, ...]} -> RunResult.accuracy

Verdicts wait for the end because the paired test and the agreement need the model's reference
precision (bf16), which may run after the candidate. A gate that cannot run is data: its
reason is recorded (`accuracy: not run`), never an exception that ends the run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from bench.atomicio import atomic_write_text
from bench.errors import one_line
from bench.measure.accuracy import agreement
from bench.measure.accuracy_verdict import (
    AccuracyResult,
    ReferenceScore,
    agreement_verdict,
    not_run,
    task_verdict,
)
from bench.plan import EngineConfig, Plan
from bench.plan.accuracy import REFERENCE_PRECISION
from bench.run.accuracy_task import AccuracyNotRun, TaskSpec, task_score
from bench.run.agreement import PROMPT_SET, prompt_topk

ACCURACY_DIR = "accuracy"
MAX_FILE_BYTES = 64 << 20  # an outcome file larger than this is not one bench wrote
_O = TypeVar("_O", bound=BaseModel)


def _file(run_dir: Path, cid: str, kind: str) -> Path:
    return run_dir / ACCURACY_DIR / f"{cid}.{kind}.json"


class TaskOutcome(BaseModel):
    """accuracy/<config>.task.json: the task's per-question outcome, or why it did not run."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    task: str
    per_question: list[bool] | None = None  # in the task's document order
    seconds: float | None = None
    not_run: str | None = None


class TopkOutcome(BaseModel):
    """accuracy/<config>.topk.json: the top-k log-probabilities per prompt position, or why not."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    prompt_set: str
    positions: list[dict[str, float]] | None = None  # token -> logprob, per position
    not_run: str | None = None


def _write(path: Path, outcome: BaseModel) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, outcome.model_dump_json(exclude_none=True))


def _read(path: Path, kind: type[_O]) -> _O | str | None:
    """The outcome file: the typed outcome, a one-line reason it cannot be read, or None (none written)."""
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            return f"{path.name} larger than {MAX_FILE_BYTES} bytes"
        return kind.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValidationError) as e:
        return one_line(f"{path.name} unreadable: {e}")


def reference_config(plan: Plan, cfg: EngineConfig) -> EngineConfig | None:
    """The configuration of the same model, weights and engine at the reference precision, or None."""
    for other in plan.engine_configs:
        if (other.model, other.weights, other.engine) == (cfg.model, cfg.weights, cfg.engine) \
                and other.precision() == REFERENCE_PRECISION:
            return other
    return None


def _task_spec(plan: Plan) -> TaskSpec:
    s = plan.accuracy
    return TaskSpec(name=s.task, include_path=Path(s.include_path) if s.include_path else None,
                    num_fewshot=s.num_fewshot, limit=s.limit, chat=s.chat, num_concurrent=s.num_concurrent)


def probe_config(plan: Plan, cfg: EngineConfig, engine: Any, run_dir: Path) -> None:
    """While `cfg`'s server is up: the task's per-question outcome (task mode) and, where the
    model's reference precision is in the plan, the top-k probe. Outcomes and reasons to files."""
    settings = plan.accuracy
    if settings.mode == "off":
        return
    cid = cfg.config_id()
    server = getattr(engine, "kind", None) == "server"
    if settings.runs_task:
        try:
            if not server:
                raise AccuracyNotRun("the task gate needs a server engine (an OpenAI endpoint)")
            score = task_score(engine.base_url, engine.served_model, _task_spec(plan))
            _write(_file(run_dir, cid, "task"), TaskOutcome(task=score.task, per_question=list(score.per_question),
                                                            seconds=score.seconds))
        except AccuracyNotRun as e:
            _write(_file(run_dir, cid, "task"), TaskOutcome(task=settings.task, not_run=str(e)))
    if settings.runs_agreement and reference_config(plan, cfg) is not None:
        try:
            if not server:
                raise AccuracyNotRun("agreement needs a server engine (an OpenAI endpoint)")
            _write(_file(run_dir, cid, "topk"), TopkOutcome(
                prompt_set=PROMPT_SET, positions=prompt_topk(engine.base_url, engine.served_model)))
        except AccuracyNotRun as e:
            _write(_file(run_dir, cid, "topk"), TopkOutcome(prompt_set=PROMPT_SET, not_run=str(e)))


def _floor(model: str, task: str) -> tuple[float | None, str | None]:
    from bench.catalog import get_model

    found = get_model(model).accuracy.get(task)
    return (found.floor, found.source) if found is not None else (None, None)


def _task_result(plan: Plan, cfg: EngineConfig, run_dir: Path) -> AccuracyResult | None:
    raw = _read(_file(run_dir, cfg.config_id(), "task"), TaskOutcome)
    if raw is None:
        return None
    if isinstance(raw, str) or raw.not_run is not None or raw.per_question is None:
        reason = raw if isinstance(raw, str) else raw.not_run or "no per-question outcome"
        return not_run("task", raw.task if isinstance(raw, TaskOutcome) else plan.accuracy.task, reason)
    ref_cfg = reference_config(plan, cfg)
    reference = None
    if ref_cfg is not None and ref_cfg.config_id() != cfg.config_id():
        ref_raw = _read(_file(run_dir, ref_cfg.config_id(), "task"), TaskOutcome)
        if isinstance(ref_raw, TaskOutcome) and ref_raw.per_question is not None:
            reference = ReferenceScore(ref_cfg.config_id(), ref_cfg.precision(), ref_raw.per_question)
    floor, source = _floor(cfg.model, raw.task)
    return task_verdict(raw.task, raw.per_question, floor=floor, floor_source=source, reference=reference,
                        tolerance=plan.accuracy.drop_tolerance, seconds=raw.seconds)


def _positions(raw: TopkOutcome | str) -> list[dict[str, float]]:
    if isinstance(raw, str):
        raise AccuracyNotRun(raw)
    if raw.positions is None:
        raise AccuracyNotRun(raw.not_run or "no top-k positions recorded")
    return raw.positions


def _agreement_result(plan: Plan, cfg: EngineConfig, run_dir: Path) -> AccuracyResult | None:
    ref_cfg = reference_config(plan, cfg)
    if ref_cfg is None or ref_cfg.config_id() == cfg.config_id():
        return None  # the reference itself, or no reference: nothing to agree with
    raw = _read(_file(run_dir, cfg.config_id(), "topk"), TopkOutcome)
    if raw is None:
        return None
    try:
        ref_raw = _read(_file(run_dir, ref_cfg.config_id(), "topk"), TopkOutcome)
        if ref_raw is None:
            raise AccuracyNotRun(f"the reference {ref_cfg.config_id()} has no top-k probe")
        a = agreement(_positions(ref_raw), _positions(raw))
    except AccuracyNotRun as e:
        return not_run("agreement", PROMPT_SET, str(e))
    except ValueError as e:  # positions that do not align: another tokenizer
        return not_run("agreement", PROMPT_SET, one_line(str(e)))
    return agreement_verdict(a, prompt_set=PROMPT_SET, reference_config_id=ref_cfg.config_id(),
                             reference_precision=ref_cfg.precision())


def finish_accuracy(plan: Plan, run_dir: Path) -> dict[str, list[AccuracyResult]]:
    """Every configuration's verdicts from the outcome files (configurations with none left out)."""
    out: dict[str, list[AccuracyResult]] = {}
    if plan.accuracy.mode == "off":
        return out
    for cfg in plan.engine_configs:
        found = [r for r in (_task_result(plan, cfg, run_dir), _agreement_result(plan, cfg, run_dir)) if r is not None]
        if found:
            out[cfg.config_id()] = found
    return out
