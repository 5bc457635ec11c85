"""Accuracy layer 1, task accuracy (docs/accuracy.md): lm-evaluation-harness against the engine
bench started, through its OpenAI endpoint; greedy. The score's verdict (Wilson bound against the
model's floor, McNemar against the reference precision) is bench.measure.accuracy's.

    score = task_score(engine.base_url, engine.served_model, TaskSpec("gsm8k"))   # -> TaskScore
    # raises AccuracyNotRun("task data for 'gsm8k' cannot be fetched: ...") without network

lm-eval (the `accuracy` extra) is imported here only, when a gate runs: `bench --help` and a
run without `--accuracy gsm8k` never import it.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import msgspec

from bench.errors import BenchError, one_line

# GSM8K: the 1,319 test questions, 5-shot, lm-eval's `gsm8k` task; its flexible-extract filter
# takes the last number of the answer (InferenceX's headline figure).
DEFAULT_TASK = "gsm8k"
DEFAULT_FILTER = {"gsm8k": "flexible-extract"}
HUB_PROBE_TIMEOUT_S = 3.0  # connecting to the dataset hub: no answer this fast and there is no network


class AccuracyNotRun(BenchError):
    """The task could not run (no lm-eval, data that cannot be fetched): recorded as not run."""


@dataclass(frozen=True)
class TaskSpec:
    """One lm-eval task as the gate runs it.

    name: an lm-eval task name; include_path: a folder of local task YAMLs (no download);
    num_fewshot: None keeps the task's own; limit: the first N questions only (None: all);
    chat: send through /v1/chat/completions with the chat template (instruct, reasoning models);
    metric, filter: the per-question figure (filter None: the task's first)."""

    name: str = DEFAULT_TASK
    include_path: Path | None = None
    num_fewshot: int | None = None
    limit: int | None = None
    chat: bool = False
    metric: str = "exact_match"
    filter: str | None = None
    max_gen_toks: int = 256
    num_concurrent: int = 8
    request_timeout_s: int = 300


@dataclass(frozen=True)
class TaskScore:
    """lm-eval's outcome: per question (in doc_id order) right or wrong; seconds it took."""

    task: str
    metric: str
    per_question: tuple[bool, ...]
    seconds: float

    @property
    def n(self) -> int:
        return len(self.per_question)

    @property
    def correct(self) -> int:
        return sum(self.per_question)

    @property
    def score(self) -> float:
        return self.correct / self.n if self.n else 0.0


def _hub_reachable(timeout_s: float = HUB_PROBE_TIMEOUT_S) -> str | None:
    """None when the dataset hub answers a TCP connect, else why not (one line)."""
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    host = urlparse(endpoint).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout_s).close()
        return None
    except OSError as e:
        return f"{host} unreachable ({e})"


def _check_data(spec: TaskSpec) -> None:
    """A task read from the hub needs the hub (or its offline cache, HF_DATASETS_OFFLINE=1)."""
    if spec.include_path is not None or os.environ.get("HF_DATASETS_OFFLINE") == "1":
        return
    why = _hub_reachable()
    if why is not None:
        raise AccuracyNotRun(f"task data for '{spec.name}' cannot be fetched: {why}")


def _model_args(base_url: str, model: str, spec: TaskSpec, tokenizer: str | None) -> dict:
    root = base_url.rstrip("/")
    root = root[:-3] if root.endswith("/v1") else root
    return {
        "model": model,
        "base_url": f"{root}/v1/{'chat/completions' if spec.chat else 'completions'}",
        # generate_until sends text: a tokenizer is needed only to truncate; the local model
        # folder works offline, none skips truncation
        "tokenizer_backend": "huggingface" if tokenizer else "none",
        **({"tokenizer": tokenizer} if tokenizer else {}),
        "tokenized_requests": False,
        "num_concurrent": spec.num_concurrent,
        "max_retries": 1,
        "timeout": spec.request_timeout_s,
        "max_gen_toks": spec.max_gen_toks,
    }


class _Sample(msgspec.Struct):
    """The keys the gate reads of one lm-eval logged sample (others are ignored): which question,
    which filter of the answer; its metric's value is read by the metric's name (`score`)."""
    doc_id: int = 0
    filter: str | None = None


class _Output(msgspec.Struct):
    """The part of lm-eval's `simple_evaluate` result the gate reads: {task: [logged sample]}."""
    samples: dict[str, list[dict[str, Any]]] = {}


def _per_question(samples: list[dict[str, Any]], metric: str, wanted: str | None) -> tuple[bool, ...]:
    """Per question (by doc_id) whether it scored, under the filter `wanted` (None: the first logged)."""
    try:
        typed = msgspec.convert(samples, list[_Sample])
    except msgspec.ValidationError as e:
        raise AccuracyNotRun(one_line(f"lm-eval logged malformed samples: {e}")) from None
    filters = [s.filter for s in typed]
    chosen = wanted if wanted is not None else (filters[0] if filters else None)
    rows = sorted((i for i, s in enumerate(typed) if s.filter == chosen), key=lambda i: typed[i].doc_id)
    if not rows or metric not in samples[rows[0]]:
        raise AccuracyNotRun(f"lm-eval gave no '{metric}' for filter '{chosen}' (filters: {sorted(set(map(str, filters)))})")
    return tuple(bool(samples[i][metric]) for i in rows)


def task_score(base_url: str, model: str, spec: TaskSpec = TaskSpec(), *, tokenizer: str | None = None) -> TaskScore:
    """Run `spec` with lm-eval against the OpenAI server at `base_url` serving `model`, greedy.
    `tokenizer`: a local model folder (offline). Raises AccuracyNotRun with a one-line reason."""
    _check_data(spec)
    try:
        from lm_eval import evaluator
        from lm_eval.tasks import TaskManager
    except ImportError as e:
        raise AccuracyNotRun(f"lm-evaluation-harness is not installed (pip install -e .[accuracy]): {e}") from e
    logging.getLogger("lm-eval").setLevel(logging.WARNING)
    t0 = time.perf_counter()
    try:
        # a local task alone: indexing lm-eval's thousands of task files takes a minute on 2 cores
        manager = (TaskManager(include_path=str(spec.include_path), include_defaults=False) if spec.include_path
                   else TaskManager())
        out = evaluator.simple_evaluate(
            model="local-chat-completions" if spec.chat else "local-completions",
            model_args=_model_args(base_url, model, spec, tokenizer),
            tasks=[spec.name], num_fewshot=spec.num_fewshot, limit=spec.limit, task_manager=manager,
            apply_chat_template=spec.chat, log_samples=True, bootstrap_iters=0,
            gen_kwargs={"temperature": 0, "do_sample": False},
            torch_random_seed=None,  # bench's seeds are its own; and torch stays unimported
        )
    except AccuracyNotRun:
        raise
    except Exception as e:
        raise AccuracyNotRun(one_line(f"lm-eval '{spec.name}' failed: {type(e).__name__}: {e}")) from e
    try:
        logged = msgspec.convert(out or {}, _Output).samples
    except msgspec.ValidationError as e:
        raise AccuracyNotRun(one_line(f"lm-eval returned a malformed result: {e}")) from None
    if spec.name not in logged:
        raise AccuracyNotRun(f"lm-eval returned no samples for '{spec.name}'")
    per_q = _per_question(logged[spec.name], spec.metric, spec.filter or DEFAULT_FILTER.get(spec.name))
    return TaskScore(task=spec.name, metric=spec.metric, per_question=per_q, seconds=time.perf_counter() - t0)
