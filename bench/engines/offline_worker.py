"""The child process of the `vllm-offline` engine: one `vllm.LLM`, jobs over JSON lines.

    python -m bench.engines.offline_worker '{"model": PATH, "dtype": "auto", ...}'

argv[1] holds the `LLM(...)` keyword arguments. The protocol runs over the process's
original stdin/stdout; everything vLLM prints (fd 1 and fd 2) goes to stderr, which the
parent points at the engine log.

    worker -> parent  {"ready": true, "vllm_version": "0.32.0"}           once loaded
    parent -> worker  {"job": 3, "requests": [{"prompt_token_ids": [..], "max_tokens": 16}, ..],
                       "ignore_eos": true}                             ("prompt": text instead of ids works too)
    worker -> parent  {"job": 3, "t_send": s, "t_done": s,
                       "results": [{"n_in": 16, "n_out": 16, "t_first": s, "t_last": s}, ..]}
                      or {"job": 3, "error": "one line"}
    parent -> worker  {"quit": true}

Each line is one of the typed messages below (Ready, Job, Quit, JobAnswer); both sides parse
what they read into them, so neither reads a dict. Times are `time.perf_counter()` seconds. On Linux that is CLOCK_MONOTONIC, the clock vLLM's
engine core stamps `RequestOutput.metrics.first_token_ts` / `last_token_ts` with
(`time.monotonic()`) and the clock of the parent's perf_counter: every process reads the
same clock, so no conversion is needed. `t_first`/`t_last` are None when vLLM gave no
metrics.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Literal, TextIO

from pydantic import BaseModel, ConfigDict, TypeAdapter


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid")


class JobRequest(_Message):
    """One sequence of a job: prompt token ids (or text) and exact output tokens."""

    max_tokens: int
    prompt_token_ids: list[int] | None = None
    prompt: str | None = None


class Job(_Message):
    job: int
    requests: list[JobRequest]
    ignore_eos: bool = True


class Quit(_Message):
    quit: Literal[True]


class Ready(_Message):
    ready: Literal[True]
    vllm_version: str


class SequenceResult(_Message):
    """One sequence's token counts and engine-core token times (perf_counter s; None: no metrics)."""

    n_in: int
    n_out: int
    t_first: float | None
    t_last: float | None


class JobAnswer(_Message):
    """A job's outcome: its results in request order, or `error` (one line) for the whole job."""

    job: int
    t_send: float | None = None
    t_done: float | None = None
    results: list[SequenceResult] = []
    error: str | None = None


Command: TypeAdapter[Job | Quit] = TypeAdapter(Job | Quit)  # what the parent sends, a line at a time


def _sampling(request: JobRequest, ignore_eos: bool):
    from vllm import SamplingParams

    return SamplingParams(max_tokens=request.max_tokens, ignore_eos=ignore_eos, temperature=0.0)


def _prompt(request: JobRequest) -> dict:
    if request.prompt_token_ids is not None:
        return {"prompt_token_ids": request.prompt_token_ids}
    return {"prompt": str(request.prompt)}


def _result(output) -> SequenceResult:
    """n_in, n_out and engine-core token times (perf_counter seconds) of one RequestOutput."""
    metrics = getattr(output, "metrics", None)
    return SequenceResult(
        n_in=len(output.prompt_token_ids or []),
        n_out=len(output.outputs[0].token_ids) if output.outputs else 0,
        t_first=getattr(metrics, "first_token_ts", 0.0) or None,
        t_last=getattr(metrics, "last_token_ts", 0.0) or None,
    )


def run_job(llm, job: Job) -> JobAnswer:
    """One `LLM.generate` over every request of `job`."""
    prompts = [_prompt(r) for r in job.requests]
    params = [_sampling(r, job.ignore_eos) for r in job.requests]
    t_send = time.perf_counter()
    try:
        outputs = llm.generate(prompts, params, use_tqdm=False)
    except (ValueError, RuntimeError) as e:  # a rejected prompt, an OOM: the job fails, the engine may live
        return JobAnswer(job=job.job, error=f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
    t_done = time.perf_counter()
    return JobAnswer(job=job.job, t_send=t_send, t_done=t_done, results=[_result(o) for o in outputs])


def serve(llm, jobs: TextIO, answers: TextIO, version: str) -> None:
    """Answer each job line on `jobs` with one line on `answers` until quit or EOF."""
    _send(answers, Ready(ready=True, vllm_version=version))
    for line in jobs:
        if not line.strip():
            continue
        command = Command.validate_json(line)
        if isinstance(command, Quit):
            return
        _send(answers, run_job(llm, command))


def _send(answers: TextIO, message: _Message) -> None:
    answers.write(message.model_dump_json() + "\n")
    answers.flush()


def main(argv: list[str]) -> int:
    # Keep the protocol channel to ourselves: vLLM logs to stdout, so fd 1 becomes stderr (the log).
    answers = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    llm_kwargs = json.loads(argv[1]) if len(argv) > 1 else {}
    llm_kwargs.setdefault("disable_log_stats", False)  # without stats RequestOutput.metrics is None
    import vllm
    from vllm import LLM

    llm = LLM(**llm_kwargs)
    print(f"bench offline worker: loaded {llm_kwargs.get('model')} with vLLM {vllm.__version__}", file=sys.stderr, flush=True)
    serve(llm, sys.stdin, answers, vllm.__version__)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
