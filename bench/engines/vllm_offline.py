"""vLLM's offline mode (`LLM.generate` over a whole batch) in a child process.

The child (`python -m bench.engines.offline_worker`) loads the model once and answers
jobs over JSON lines (protocol in that module); its log goes to `log_path`, so a crash of
the engine cannot take the harness down. A point runs as static batches (see
`bench.engines.hf_engine.static_batches`): each batch is one job, all its prompts
submitted at once.

Timing per request (perf_counter seconds): `t_send` = the batch's submit; `t_first`,
`t_last` = vLLM's engine-core stamps of the first and last token
(`RequestOutput.metrics.first_token_ts` / `last_token_ts`, CLOCK_MONOTONIC, the clock of
perf_counter). Offline vLLM gives no per-token times, so a record has two chunks: the
first token at `t_first`, the other n_out - 1 at `t_last` (its one ITL value is the mean
gap, equal to its TPOT). Window and span = the first measured batch's submit to the end
of the last measured `generate`.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.engines.base import (
    OOM_PATTERNS,
    EngineDied,
    EngineDoesNotFit,
    last_error_line,
    quote_log,
    vllm_child_env,
)
from bench.engines.hf_engine import batch_facts, point_seed, static_batches
from bench.engines.process import ChildProcess, log_tail
from bench.errors import EngineError
from bench.load.records import RequestRecord

WORKER_MODULE = "bench.engines.offline_worker"


class _PipedChild(ChildProcess):
    """A ChildProcess whose stdin/stdout are pipes (the job channel); stderr goes to the log."""

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            try:
                self.proc = subprocess.Popen(
                    self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                    env={**os.environ, **(self.env or {})}, start_new_session=True,
                )
            except OSError as e:
                raise EngineError(f"could not start {self.argv[0]}: {e}") from None


class VllmOffline:
    """Start/stop the offline worker and run load points as `LLM.generate` batches.

    Nothing happens in the constructor; `start()` spawns the worker and waits until the
    model is loaded, `stop()` asks it to quit, then ends its process group.
    """

    def __init__(self, model_path: str, served_model: str, log_path: Path, engine_args: dict[str, Any] | None = None,
                 device: str = "cuda", n_gpus: int = 1, startup_timeout_s: float = 600.0,
                 job_timeout_s: float | None = None, env: dict[str, str] | None = None, vocab_size: int | None = None):
        self.model_path = model_path
        self.served_model = served_model
        self.log_path = Path(log_path)
        self.engine_args = dict(engine_args or {})
        self.device = device
        self.n_gpus = n_gpus
        self.startup_timeout_s = startup_timeout_s
        self.job_timeout_s = job_timeout_s
        self.env = dict(env or {})
        self.vocab_size = vocab_size
        self.vllm_version: str | None = None
        self._child: _PipedChild | None = None
        self._buffer = b""
        self._job = 0

    def argv(self) -> list[str]:
        kwargs = {"model": self.model_path, "served_model_name": self.served_model, **self.engine_args}
        return [sys.executable, "-m", WORKER_MODULE, json.dumps(kwargs)]

    def start(self) -> None:
        env = vllm_child_env(self.device, self.engine_args, self.env)
        self._buffer = b""
        self._child = _PipedChild(self.argv(), self.log_path, env)
        self._child.start()
        try:
            ready = self._read_line(self.startup_timeout_s, during="start")
        except EngineDied as e:
            tail = self.log_tail(40)
            if OOM_PATTERNS.search(tail):
                raise EngineDoesNotFit(f"vLLM offline worker ran out of memory while loading (does not fit); "
                                       f"log: {self.log_path}" + quote_log(last_error_line(tail))) from None
            raise e from None
        if ready is None:
            self.stop()
            raise EngineError(f"vLLM offline worker not ready after {self.startup_timeout_s:.0f} s; "
                              f"log: {self.log_path}" + quote_log(self.log_tail(5)))
        self.vllm_version = ready.get("vllm_version")

    def stop(self) -> None:
        if self._child is None:
            return
        proc = self._child.proc
        if proc is not None and proc.poll() is None:
            try:
                proc.stdin.write(b'{"quit": true}\n')
                proc.stdin.flush()
            except OSError:
                pass
            _wait(proc, 15.0)
        self._child.stop()
        for pipe in (proc.stdin, proc.stdout) if proc is not None else ():
            try:
                pipe.close()
            except OSError:
                pass

    def alive(self) -> bool:
        return self._child is not None and self._child.alive()

    def log_tail(self, n: int = 20) -> str:
        return log_tail(self.log_path, n)

    def server_counters(self) -> None:
        return None

    def generate(self, requests: list[dict[str, Any]], ignore_eos: bool = True) -> dict[str, Any]:
        """One job: `requests` = [{"prompt_token_ids": [..] or "prompt": text, "max_tokens": n}];
        the worker's answer (t_send, t_done, results) or {"error": ...}. Raises EngineDied."""
        if not self.alive():
            raise self._died("is not running")
        self._job += 1
        line = json.dumps({"job": self._job, "requests": requests, "ignore_eos": ignore_eos}) + "\n"
        try:
            self._child.proc.stdin.write(line.encode())
            self._child.proc.stdin.flush()
        except OSError:
            raise self._died("closed its job channel") from None
        answer = self._read_line(self.job_timeout_s, during=f"job {self._job}")
        if answer is None:  # a hung engine is ended, so that the runner can restart it
            self.stop()
            raise EngineDied(f"vLLM offline worker: job {self._job} took over {self.job_timeout_s:.0f} s "
                             f"and was stopped; log: {self.log_path}")
        if answer.get("job") != self._job:
            raise EngineError(f"vLLM offline worker answered job {answer.get('job')}, expected {self._job}")
        return answer

    def run_point(self, point, model_spec=None, seed: int | None = None) -> tuple[list[RequestRecord], dict[str, Any]]:
        """Records (warm-up + measured) and facts of one point; times are perf_counter seconds."""
        from bench.measure.point import make_workload

        batch, n_warm, n_batches = static_batches(point)
        vocab = self.vocab_size or _vocab(model_spec)
        workload = make_workload(point.workload, vocab_size=vocab, seed=point_seed(point, seed))
        prompts = workload.prompts((n_warm + n_batches) * batch)
        records: list[RequestRecord] = []
        window_t0_s = window_t1_s = None
        for b in range(n_warm + n_batches):
            phase = "warmup" if b < n_warm else "measured"
            chunk = prompts[b * batch:(b + 1) * batch]
            answer = self.generate([_request(p) for p in chunk])
            records += _records(chunk, answer, len(records), phase)
            if phase == "measured":
                window_t0_s = answer.get("t_send", time.perf_counter()) if window_t0_s is None else window_t0_s
                window_t1_s = answer.get("t_done", time.perf_counter())
        facts = batch_facts(records, batch, window_t0_s, window_t1_s)
        failed = sum(1 for r in records if not r.ok)
        with open(self.log_path, "a") as f:
            f.write(f"bench: point {point.point_id}: {n_warm} warm-up + {n_batches} batches of {batch}, "
                    f"window {window_t1_s - window_t0_s:.3f} s, {failed} failed\n")
        return records, facts

    def _read_line(self, timeout_s: float | None, during: str) -> dict[str, Any] | None:
        """The next JSON line from the worker; None on timeout; EngineDied if it exits first."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        fd = self._child.proc.stdout.fileno()
        while b"\n" not in self._buffer:
            if deadline is not None and time.monotonic() > deadline:
                return None
            ready, _, _ = select.select([fd], [], [], 0.5)
            chunk = os.read(fd, 1 << 20) if ready else b""
            if ready and not chunk:  # EOF: the worker closed its end
                _wait(self._child.proc, 10.0)
                raise self._died(f"exited during {during}")
            self._buffer += chunk
            if not ready and not self._child.alive():
                raise self._died(f"exited during {during}")
        line, self._buffer = self._buffer.split(b"\n", 1)
        return json.loads(line)

    def _died(self, what: str) -> EngineDied:
        code = None if self._child is None else self._child.returncode
        return EngineDied(f"vLLM offline worker {what} (exit code {code}); log: {self.log_path}"
                          + quote_log(last_error_line(self.log_tail(40))))


def _vocab(model_spec) -> int:
    vocab = model_spec.config_json().get("vocab_size") if model_spec is not None else None
    return int(vocab or 32000)


def _request(prompt) -> dict[str, Any]:
    req: dict[str, Any] = {"max_tokens": prompt.n_out_expected}
    if prompt.token_ids is not None:
        req["prompt_token_ids"] = prompt.token_ids
    else:
        req["prompt"] = prompt.text
    return req


def _records(prompts, answer: dict[str, Any], id0: int, phase: str) -> list[RequestRecord]:
    """One RequestRecord per prompt of a finished job (a failed job fails each request)."""
    t_send = answer.get("t_send", time.perf_counter())
    records = []
    for i, p in enumerate(prompts):
        r = RequestRecord(request_id=id0 + i, phase=phase, n_in_expected=p.n_in_expected,
                          n_out_expected=p.n_out_expected, t_send=t_send, token_source="token_ids")
        records.append(r)
        if "error" in answer:
            r.error = answer["error"]
            continue
        res = answer["results"][i]
        r.n_in, r.n_out = res["n_in"], res["n_out"]
        r.t_first, r.t_last = res["t_first"], res["t_last"]
        if r.t_last is None:  # no engine metrics: the generate's end is all we know
            r.t_last = answer["t_done"]
        if r.n_out >= 1:
            r.chunk_t = [r.t_first, r.t_last] if r.t_first is not None and r.n_out >= 2 else [r.t_last]
            r.chunk_tokens = [1, r.n_out - 1] if len(r.chunk_t) == 2 else [r.n_out]
        if r.n_out < p.n_out_expected:
            r.error = f"returned {r.n_out} tokens, asked for {p.n_out_expected}"
    return records


def _wait(proc: subprocess.Popen, timeout_s: float) -> None:
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        pass
