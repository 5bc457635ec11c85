"""vLLM's offline mode (`LLM.generate` over a whole batch) in a child process.

The child (`python -m bench.engines.offline_worker`) loads the model once and answers
jobs over JSON lines (protocol in that module); its log goes to `log_path`, so a crash of
the engine cannot take the harness down. A point runs as static batches
(`bench.load.static`): each batch is one job, all its prompts submitted at once.

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
from typing import IO, Any, ClassVar, TypeVar

from pydantic import BaseModel, ValidationError

from bench.catalog.engines import installed_version
from bench.engines.base import (
    OOM_PATTERNS,
    BatchOutput,
    BatchRequest,
    EngineDied,
    EngineDoesNotFit,
    GeneratedSequence,
    device_env,
    last_error_line,
    quote_log,
    vllm_child_env,
)
from bench.engines.offline_worker import Job, JobAnswer, JobRequest, Quit, Ready
from bench.engines.process import ChildProcess, log_tail
from bench.engines.vllm_args import vllm_launch_args
from bench.errors import ConfigError, EngineError

WORKER_MODULE = "bench.engines.offline_worker"
M = TypeVar("M", bound=BaseModel)


class _PipedChild(ChildProcess):
    """A ChildProcess whose stdin/stdout are pipes (the job channel); stderr goes to the log."""

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = self._spawn(log, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log)

    def channel(self) -> tuple[subprocess.Popen, IO[bytes], IO[bytes]]:
        """The started worker and its job channel (stdin, stdout); EngineDied before start()."""
        proc = self.proc
        if proc is None or proc.stdin is None or proc.stdout is None:
            raise EngineDied("vLLM offline worker is not running (never started)")
        return proc, proc.stdin, proc.stdout


class VllmOffline:
    """Start/stop the offline worker and run load points as `LLM.generate` batches.

    Nothing happens in the constructor; `start()` spawns the worker and waits until the
    model is loaded, `stop()` asks it to quit, then ends its process group.
    """

    name: ClassVar[str] = "vllm-offline"
    kind: ClassVar[str] = "batch"

    def __init__(self, model_path: str, served_model: str, log_path: Path, engine_args: dict[str, Any] | None = None,
                 device: str = "cuda", n_gpus: int = 1, startup_timeout_s: float = 600.0,
                 job_timeout_s: float | None = None, env: dict[str, str] | None = None):
        self.model_path = model_path
        self.served_model = served_model
        self.log_path = Path(log_path)
        self.engine_args = dict(engine_args or {})
        self.device = device
        self.n_gpus = n_gpus
        self.startup_timeout_s = startup_timeout_s
        self.job_timeout_s = job_timeout_s
        self.env = dict(env or {})
        self.vllm_version: str | None = None
        self._ready = False  # the worker said ready: it reads its stdin
        self._child: _PipedChild | None = None
        self._buffer = b""
        self._job = 0

    @classmethod
    def launch_args(cls, cfg: Any, device: str) -> dict[str, Any]:
        return vllm_launch_args(cfg, device)

    @classmethod
    def from_config(cls, cfg: Any, *, model_path: str, model_spec: Any, log_path: Path, device: str,
                    devices: list[int] | None = None, vendor: str | None = None,
                    startup_timeout_s: float = 600.0) -> VllmOffline:
        """The worker for one EngineConfig, pinned to `devices` (None: every visible one)."""
        args = cls.launch_args(cfg, device)
        if cfg.data_parallel_size > 1:  # LLM() refuses it in one process
            raise ConfigError("vllm-offline runs one LLM process: data_parallel_size must be 1 "
                              "(use the vllm server engine for data parallelism)")
        return cls(model_path, cfg.model, log_path, engine_args=args, device=device, n_gpus=cfg.n_gpus,
                   startup_timeout_s=startup_timeout_s, env=device_env(devices, vendor))

    def version(self) -> str:
        """The version the worker's vLLM reported once started, else the installed one."""
        return self.vllm_version or installed_version(self.name)

    def argv(self) -> list[str]:
        kwargs = {"model": self.model_path, "served_model_name": self.served_model, **self.engine_args}
        return [sys.executable, "-m", WORKER_MODULE, json.dumps(kwargs)]

    def start(self) -> None:
        env = vllm_child_env(self.device, self.engine_args, self.env)
        self._buffer = b""
        self._child = _PipedChild(self.argv(), self.log_path, env)
        self._child.start()
        try:
            ready = self._read_line(Ready, self.startup_timeout_s, during="start")
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
        self.vllm_version = ready.vllm_version
        self._ready = True

    def stop(self) -> None:
        if self._child is None:
            return
        proc = self._child.proc
        if proc is not None and proc.poll() is None and self._ready:
            # a worker that said ready reads its stdin: ask it to quit before signalling
            try:
                _, stdin, _ = self._child.channel()
                stdin.write(Quit(quit=True).model_dump_json().encode() + b"\n")
                stdin.flush()
            except OSError:
                pass
            _wait(proc, 15.0)
        self._child.stop()
        for pipe in (proc.stdin, proc.stdout) if proc is not None else ():
            if pipe is None:
                continue
            try:
                pipe.close()
            except OSError:
                pass

    def alive(self) -> bool:
        return self._child is not None and self._child.alive()

    def log_tail(self, n: int = 20) -> str:
        return log_tail(self.log_path, n)

    def generate(self, requests: list[JobRequest], ignore_eos: bool = True) -> JobAnswer:
        """One job of `requests`: the worker's answer (t_send, t_done, results, or `error`). Raises EngineDied."""
        if not self.alive():
            raise self._died("is not running")
        self._job += 1
        line = Job(job=self._job, requests=requests, ignore_eos=ignore_eos).model_dump_json() + "\n"
        _, stdin, _ = self._running().channel()
        try:
            stdin.write(line.encode())
            stdin.flush()
        except OSError:
            raise self._died("closed its job channel") from None
        answer = self._read_line(JobAnswer, self.job_timeout_s, during=f"job {self._job}")
        if answer is None:  # a hung engine is ended, so that the runner can restart it
            self.stop()
            raise EngineDied(f"vLLM offline worker: job {self._job} took over {self.job_timeout_s:.0f} s "
                             f"and was stopped; log: {self.log_path}")
        if answer.job != self._job:
            raise EngineError(f"vLLM offline worker answered job {answer.job}, expected {self._job}")
        return answer

    def generate_batch(self, requests: list[BatchRequest]) -> BatchOutput:
        """One job of every request at once; engine-core token times (perf_counter seconds)."""
        return batch_output(self.generate([_request(r) for r in requests]))

    def note(self, line: str) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "a") as f:
            f.write(f"bench: {line}\n")

    def _read_line(self, message: type[M], timeout_s: float | None, during: str) -> M | None:
        """The worker's next line, as `message`; None on timeout; EngineDied if it exits first,
        EngineError for a line that is not that message."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        child = self._running()
        proc, _, stdout = child.channel()
        fd = stdout.fileno()
        while b"\n" not in self._buffer:
            if deadline is not None and time.monotonic() > deadline:
                return None
            ready, _, _ = select.select([fd], [], [], 0.5)
            chunk = os.read(fd, 1 << 20) if ready else b""
            if ready and not chunk:  # EOF: the worker closed its end
                _wait(proc, 10.0)
                raise self._died(f"exited during {during}")
            self._buffer += chunk
            if not ready and not child.alive():
                raise self._died(f"exited during {during}")
        line, self._buffer = self._buffer.split(b"\n", 1)
        try:
            return message.model_validate_json(line)
        except ValidationError as e:
            raise EngineError(f"vLLM offline worker: {during}: not a {message.__name__} line "
                              f"({e.errors()[0]['msg']}); log: {self.log_path}") from None

    def _running(self) -> _PipedChild:
        """The worker process (the caller checked it is alive, or has just started it)."""
        if self._child is None:
            raise self._died("is not running")
        return self._child

    def _died(self, what: str) -> EngineDied:
        code = None if self._child is None else self._child.returncode
        return EngineDied(f"vLLM offline worker {what} (exit code {code}); log: {self.log_path}"
                          + quote_log(last_error_line(self.log_tail(40))))


def _request(request: BatchRequest) -> JobRequest:
    if request.token_ids is not None:
        return JobRequest(max_tokens=request.max_tokens, prompt_token_ids=request.token_ids)
    return JobRequest(max_tokens=request.max_tokens, prompt=request.text)


def batch_output(answer: JobAnswer) -> BatchOutput:
    """A worker's answer as a BatchOutput. Offline vLLM gives no per-token times: a sequence
    is two chunks, the first token at `t_first`, the other n_out - 1 at `t_last` (the
    generate's end when vLLM gave no metrics)."""
    now = time.perf_counter()
    t_send = answer.t_send if answer.t_send is not None else now
    t_done = answer.t_done if answer.t_done is not None else now
    if answer.error is not None:
        return BatchOutput(t_send=t_send, t_done=t_done, error=answer.error)
    sequences = []
    for res in answer.results:
        t_first, t_last = res.t_first, res.t_last if res.t_last is not None else t_done
        seq = GeneratedSequence(n_in=res.n_in, n_out=res.n_out, t_first=t_first, t_last=t_last)
        if seq.n_out >= 2 and t_first is not None:
            seq.chunk_t, seq.chunk_tokens = [t_first, t_last], [1, seq.n_out - 1]
        elif seq.n_out >= 1:
            seq.chunk_t, seq.chunk_tokens = [t_last], [seq.n_out]
        sequences.append(seq)
    return BatchOutput(t_send=t_send, t_done=t_done, sequences=sequences)


def _wait(proc: subprocess.Popen, timeout_s: float) -> None:
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        pass
