"""Every input file of a plan, read and checked when the plan is built: before a run folder
exists and before any engine starts (issue 18, defect 7). A missing, empty, malformed or
backwards trace, sessions or prompt file is one ConfigError line naming the file (and line); a trace
replay longer than `max_replay_s` (24 h unless raised) is refused, so a timestamp of 1e300 ms
or `speedup: 0.001` cannot make a run wait silently for years.

What is learnt is kept in the plan: a trace point's real request count and replay time
(`bench plan` prints and estimates them), the conversations of a sessions file, the prompts
of a prompt file.
Only the file is read here, never a tokenizer: token ids are the load step's (bench.load).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from bench.errors import ConfigError
from bench.plan.points import (
    FileWorkload,
    SessionsWorkload,
    TraceWorkload,
    WorkloadSpec,
)
from bench.plan.tracefile import check_file, json_object, read_trace

MAX_REPLAY_S = 24 * 3600.0  # default bound on one trace point's replay (sweep key max_replay_s)
TRACE_MAX_REQUESTS = 1_000_000  # a trace point without a limit replays the whole file, up to this
HUMAN = ("human", "user")  # ShareGPT `from` values of the user's turns


def text_lines(path: Path, what: str) -> Iterable[tuple[int, str]]:
    """(line number, line) of every non-blank line of a UTF-8 file; one-line ConfigErrors for a
    missing file ("no such `what`") or bytes that are not UTF-8."""
    check_file(path, what)
    try:
        with path.open(encoding="utf-8") as f:
            return [(lineno, line) for lineno, line in enumerate(f, 1) if line.strip()]
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.start} of a line)") from None
    except OSError as e:
        raise ConfigError(f"cannot read {what} {path}: {e.strerror or e}") from None


def read_sessions(path: Path) -> list[tuple[str, ...]]:
    """The human turns of every conversation of a ShareGPT-style multi-turn JSONL file
    (`{"conversations": [{"from", "value"}, ...]}` a line); lines without one are skipped,
    a file without any is a ConfigError."""
    path = Path(path)
    out = [users for lineno, line in text_lines(path, "sessions file")
           if (users := _human_turns(line, f"{path}:{lineno}"))]
    if not out:
        raise ConfigError(f"{path}: no conversation with a human turn")
    return out


class _Conversation(msgspec.Struct):
    """A sessions-file line: its turns, each read on its own (`sharegpt_turns`)."""
    conversations: list[Any]


class _Turn(msgspec.Struct):
    """A well-formed ShareGPT turn: who speaks ("human", "gpt", ...) and the text."""
    speaker: str = msgspec.field(name="from")
    value: str


def _human_turns(line: str, where: str) -> tuple[str, ...]:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{where}: not valid JSON ({e.msg})") from None
    try:
        conversation = msgspec.convert(obj, _Conversation)
    except msgspec.ValidationError:
        raise ConfigError(f"{where}: expected a JSON object with a 'conversations' list") from None
    return tuple(text for speaker, text in sharegpt_turns(conversation.conversations)
                 if speaker in HUMAN and text.strip())


def sharegpt_turns(turns: Any) -> list[tuple[str, str]]:
    """(speaker, text) of each well-formed turn of a ShareGPT `conversations` list; others are skipped."""
    out = []
    for turn in turns if isinstance(turns, list) else ():
        try:
            typed = msgspec.convert(turn, _Turn)
        except msgspec.ValidationError:
            continue  # a turn of another shape: skipped, as ShareGPT dumps hold some
        out.append((typed.speaker, typed.value))
    return out


def read_prompts(path: Path, output_len: int | None = None,
                 encode: Callable[[str], list[int]] | None = None) -> list[tuple[str, int]]:
    """(prompt, output tokens) of every line of a prompt file (`{"prompt", "output_len"}` or a
    ShareGPT line, its first human turn the prompt); a line without `output_len` takes
    `output_len`, else (with `encode`, a tokenizer) the length of its first gpt reply."""
    path = Path(path)
    items = [_prompt_line(line, f"{path}:{lineno}", output_len, encode)
             for lineno, line in text_lines(path, "prompt file")]
    if not items:
        raise ConfigError(f"{path}: no prompts in file")
    return items


def _prompt_line(line: str, where: str, output_len: int | None, encode) -> tuple[str, int]:
    obj = json_object(line, where)
    reply = None
    if "conversations" in obj:
        turns = sharegpt_turns(obj["conversations"])
        prompt = next((text for speaker, text in turns if speaker in HUMAN), None)
        reply = next((text for speaker, text in turns if speaker == "gpt"), None)
    else:
        prompt = obj.get("prompt")
    if not isinstance(prompt, str) or not prompt:
        raise ConfigError(f"{where}: no prompt (expected 'prompt' or a human turn in 'conversations')")
    out = obj.get("output_len", output_len)
    if out is None and isinstance(reply, str) and encode is not None:
        out = len(encode(reply))
    if out is None:
        raise ConfigError(f"{where}: no output length (give 'output_len' in the line or the workload)")
    if isinstance(out, bool) or not isinstance(out, int) or out < 1:
        raise ConfigError(f"{where}: output_len must be an integer >= 1, got {json.dumps(out)[:40]}")
    return prompt, out


@dataclass(frozen=True)
class InputFacts:
    """What a workload's file holds, as the plan uses it."""

    n_requests: int | None = None  # a trace: requests replayed (rows with output 0 skipped)
    replay_s: float | None = None  # a trace: first to last scheduled send, after speedup (s)
    note: str | None = None  # one line for `bench plan`


def check_inputs(workload: WorkloadSpec, n_requests: int | None, max_replay_s: float) -> InputFacts:
    """Read and check the file of a trace, sessions or file workload (others: nothing to read).
    `n_requests`: the sweep's fixed count per point (None: a trace replays its `limit`, else
    the whole file up to TRACE_MAX_REQUESTS). ConfigError, one line, on any problem."""
    if isinstance(workload, TraceWorkload):
        return _check_trace(workload, n_requests, max_replay_s)
    if isinstance(workload, SessionsWorkload) and workload.path is not None:
        n = len(read_sessions(Path(workload.path)))
        return InputFacts(note=f"sessions file {workload.path}: {n} conversations")
    if isinstance(workload, FileWorkload):
        n = len(read_prompts(Path(workload.path), workload.output_len))
        return InputFacts(note=f"prompt file {workload.path}: {n} prompts")
    return InputFacts()


def _check_trace(workload: TraceWorkload, n_requests: int | None, max_replay_s: float) -> InputFacts:
    path = Path(workload.path)
    wanted = min(x for x in (n_requests, workload.limit, TRACE_MAX_REQUESTS) if x is not None)
    trace = read_trace(path, workload.format, wanted, workload.block_size)
    n = len(trace.t_s)
    span_s = trace.t_s[-1] - trace.t_s[0]
    replay_s = span_s / workload.speedup
    speed = f" at speedup {workload.speedup:g}" if workload.speedup != 1.0 else ""
    if replay_s > max_replay_s:
        span = f" (trace span {_duration(span_s)})" if speed else ""
        raise ConfigError(
            f"{path}: replaying {n} requests takes {_duration(replay_s)}{speed}{span}, "
            f"over the {_duration(max_replay_s)} limit; raise max_replay_s (--max-replay-s S) to allow it, "
            "or set limit or speedup")
    skipped = (f", {trace.n_skipped_zero_output} rows with output length 0 skipped"
               if trace.n_skipped_zero_output else "")
    note = f"trace {workload.path}: {n} requests replayed over {replay_s:.1f} s{speed}{skipped}"
    return InputFacts(n_requests=n, replay_s=replay_s, note=note)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.3g} s"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.3g} h"
    return f"{seconds / 86400:.3g} days"
